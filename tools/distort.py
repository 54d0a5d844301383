"""distort: scramble the cells of an intermediate part (a warped arm, a twisted leg), as the method's
authors do.

Kernels, all seeded and all reachable:

* ``permute``: a random permutation of the part's cells (references inside the part);
* ``jitter``: each cell takes a Gaussian-offset cell (σ ``jitter_sigma_cells``), constrained to the
  entity; a draw outside the grid or the entity is redrawn up to ``jitter_redraws`` times, after
  which the cell keeps itself;
* ``strips``: the part is cut into ``len(strip_shifts)`` bands across its long axis; each band's
  cells are rolled circularly across it (every line of the band perpendicular to the long axis
  rotates by the band's shift, from ``strip_shifts`` in shuffled order), so every reference is a
  cell of the part.

``targets: part`` (default, the authors'): every cell of the part is a target and the part is the
label, unmoved cells included (identity pairs); ``targets: moved`` keeps only the cells that move.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from tools.grid import Grid
from tools.mapping import ArtifactMapping
from tools.settings import Strict


class DistortConfig(Strict):
    kernels: list[Literal["permute", "jitter", "strips"]] = ["permute", "jitter", "strips"]
    jitter_sigma_cells: float = Field(1.0, gt=0)
    jitter_redraws: int = Field(10, ge=0, description="redraws of a jitter offset that leaves the grid or entity")
    strip_shifts: list[int] = Field([0, 1, 3, -2, -3, -4], min_length=2,
                                    description="cells each strip is rolled by, shuffled per part (the authors')")
    targets: Literal["part", "moved"] = Field(
        "part", description="'part': the whole part is the target and the label (the authors'); 'moved': only "
                            "the cells that move")

KERNELS = ("permute", "jitter", "strips")
RETRIES = 8  # whole-kernel redraws while nothing moves


def distort_mapping(part: np.ndarray, entity_mask: np.ndarray, grid: Grid, config, seed: int,
                    kernel: str | None = None, entity: str = "", subentity: str | None = None
                    ) -> ArtifactMapping | None:
    rng = np.random.default_rng(seed)
    kernel = kernel or str(rng.choice(list(config.kernels)))
    if kernel not in KERNELS:
        raise ValueError(f"unknown distort kernel {kernel!r}; choose one of {KERNELS}")
    rows, cols = np.nonzero(part)
    if rows.size < 2:
        return None
    allowed = entity_mask | part
    for _ in range(RETRIES):
        if kernel == "permute":
            order = rng.permutation(rows.size)
            rr, rc = rows[order], cols[order]
        elif kernel == "jitter":
            rr, rc = jitter(rows, cols, allowed, grid, config.jitter_sigma_cells, config.jitter_redraws, rng)
        else:
            rr, rc = strips(rows, cols, config.strip_shifts, rng)
        targets, references = grid.index(rows, cols), grid.index(rr, rc)
        moved = targets != references
        if not moved.any():
            continue
        if config.targets == "moved":
            targets, references = targets[moved], references[moved]
        return ArtifactMapping("distort", targets, references, grid, kernel=kernel, entity=entity,
                               subentity=subentity, meta={"moved": int(moved.sum()), "targets": config.targets})
    return None


def jitter(rows: np.ndarray, cols: np.ndarray, allowed: np.ndarray, grid: Grid, sigma: float, redraws: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's reference: its position plus a rounded Gaussian offset; a draw that leaves the grid
    or ``allowed`` is drawn again (up to ``redraws`` more times), then the cell keeps itself."""
    rr, rc = rows.copy(), cols.copy()
    pending = np.ones(rows.size, dtype=bool)
    for _ in range(1 + redraws):
        idx = np.flatnonzero(pending)
        if not idx.size:
            break
        offsets = np.rint(rng.normal(0.0, sigma, size=(idx.size, 2))).astype(int)
        cr, cc = rows[idx] + offsets[:, 0], cols[idx] + offsets[:, 1]
        ok = grid.in_bounds(cr, cc)
        ok[ok] = allowed[cr[ok], cc[ok]]
        rr[idx[ok]], rc[idx[ok]] = cr[ok], cc[ok]
        pending[idx[ok]] = False
    return rr, rc


def strips(rows: np.ndarray, cols: np.ndarray, shifts, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bands across the part's long axis; inside each band, every line perpendicular to the long axis
    is rolled circularly by the band's shift (``shifts`` in shuffled order): references stay in the part."""
    count = len(shifts)
    horizontal = np.ptp(cols) >= np.ptp(rows)  # long axis along x: bands are column ranges
    along, across = (cols, rows) if horizontal else (rows, cols)
    edges = np.linspace(along.min(), along.max() + 1, count + 1)
    band = np.clip(np.searchsorted(edges, along, side="right") - 1, 0, count - 1)
    band_shift = rng.permutation(np.asarray(shifts, dtype=int))
    new_across = across.copy()
    for line in np.unique(along):  # one line: the part's cells at one position along the long axis
        idx = np.flatnonzero(along == line)
        idx = idx[np.argsort(across[idx], kind="stable")]
        shift = int(band_shift[band[idx[0]]])  # a line lies in one band
        new_across[idx] = np.roll(across[idx], shift)  # cell k takes cell k - shift of its line
    return (new_across, cols) if horizontal else (rows, new_across)
