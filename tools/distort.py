"""distort: scramble the cells of an intermediate part (a warped arm, a twisted leg).

Kernels, all seeded and all reachable: ``permute`` (random permutation of the part's cells),
``jitter`` (each cell takes a Gaussian-offset cell, σ in cells, constrained to the entity) and
``strips`` (bands across the long axis, each shifted perpendicular by a shuffled 10–60 px).
"""

from __future__ import annotations

import numpy as np

from tools.grid import CELL, Grid
from tools.mapping import ArtifactMapping, drop_identity_and_out_of_bounds

KERNELS = ("permute", "jitter", "strips")
RETRIES = 8


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
            offsets = np.rint(rng.normal(0.0, config.jitter_sigma_cells, size=(rows.size, 2))).astype(int)
            rr, rc = rows + offsets[:, 0], cols + offsets[:, 1]
            inside = grid.in_bounds(rr, rc)
            inside[inside] = allowed[rr[inside], rc[inside]]
            rr, rc = np.where(inside, rr, rows), np.where(inside, rc, cols)
        else:
            rr, rc = _strips(rows, cols, config, rng)
            inside = grid.in_bounds(rr, rc)
            inside[inside] = allowed[rr[inside], rc[inside]]
            rr, rc = np.where(inside, rr, rows), np.where(inside, rc, cols)
        targets, references = drop_identity_and_out_of_bounds(grid, rows, cols, rr, rc)
        if targets.size:
            return ArtifactMapping("distort", targets, references, grid, kernel=kernel, entity=entity,
                                   subentity=subentity, meta={"moved": int(targets.size)})
    return None


def _strips(rows: np.ndarray, cols: np.ndarray, config, rng: np.random.Generator):
    """Cut the part into bands across its long axis; shift each band perpendicular to it."""
    horizontal = np.ptp(cols) >= np.ptp(rows)  # long axis along x: bands are column ranges
    along, across = (cols, rows) if horizontal else (rows, cols)
    edges = np.linspace(along.min(), along.max() + 1, config.strips + 1)
    band = np.clip(np.searchsorted(edges, along, side="right") - 1, 0, config.strips - 1)
    lo, hi = config.strip_shift_px
    shifts = np.maximum(1, np.rint(np.linspace(lo, hi, config.strips) / CELL)).astype(int)
    shifts = rng.permutation(shifts) * rng.choice([-1, 1], size=config.strips)
    moved_across = across - shifts[band]
    return (moved_across, cols) if horizontal else (rows, moved_across)
