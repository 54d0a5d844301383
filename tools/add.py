"""add: copy a sub-entity next to itself, onto its parent (an extra finger, a second ear)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from tools.grid import Grid, dilate
from tools.mapping import ArtifactMapping, drop_identity_and_out_of_bounds
from tools.settings import Strict


class AddConfig(Strict):
    """Anchors lie on a ring just outside the part: a cell whose L1 distance to the part's box centre
    exceeds that of its nearest outermost part cell by at most ``ring_width``."""

    min_in_bounds: float = Field(0.5, ge=0, le=1, description="skip shifts that keep less of the part")
    shift_penalty: float = Field(0.05, ge=0, description="score / (1 + penalty * L1 shift length)")
    ring_width: int = Field(2, ge=1, description="width (cells) of the anchor ring outside the part")


def box_centre(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
    """The cell holding the centre of the cells' bounding box (the lower/right one for an even side)."""
    return int(rows.min() + rows.max() + 1) // 2, int(cols.min() + cols.max() + 1) // 2


def anchor_ring(part: np.ndarray, width: int) -> np.ndarray:
    """Cells just outside the part where the copy's box centre may go.

    A cell p outside the part is on the ring when, for a part cell q on the part's outline that is
    nearest to p (L1), d(q, centre) < d(p, centre) ≤ d(q, centre) + ``width``, with d the L1 distance
    to the part's box centre. The outline is every part cell with an in-grid 8-neighbour outside the
    part (the whole part when there is none).
    """
    rows, cols = np.nonzero(part)
    cy, cx = box_centre(rows, cols)
    outline = part & dilate(~part, 1)
    if not outline.any():
        outline = part
    qr, qc = np.nonzero(outline)
    q_centre = np.abs(qr - cy) + np.abs(qc - cx)
    grid_r, grid_c = np.indices(part.shape)
    p_centre = np.abs(grid_r - cy) + np.abs(grid_c - cx)
    # only cells no farther from the centre than the outline's farthest cell + width can qualify
    candidates = ~part & (p_centre <= q_centre.max() + width) & (p_centre > q_centre.min())
    pr, pc = np.nonzero(candidates)
    ring = np.zeros_like(part)
    for start in range(0, pr.size, 2048):  # bounded memory on large grids
        r, c = pr[start:start + 2048], pc[start:start + 2048]
        to_outline = np.abs(r[:, None] - qr[None]) + np.abs(c[:, None] - qc[None])
        nearest = to_outline == to_outline.min(axis=1, keepdims=True)
        d = p_centre[r, c][:, None]
        inside = nearest & (q_centre[None] < d) & (d <= q_centre[None] + width)
        ring[r, c] = inside.any(axis=1)  # any equally near outline cell qualifies (no arbitrary pick)
    return ring


def add_mapping(part: np.ndarray, parent: np.ndarray, same_class: list[np.ndarray], grid: Grid, config,
                seed: int, entity: str = "", subentity: str | None = None) -> ArtifactMapping | None:
    """Copy the part, rigidly shifted so its box centre lands on the best cell of ``anchor_ring``.

    ``config`` is an AddConfig. A shift is skipped when less than ``min_in_bounds`` of the copy stays
    in the image, or when the copy covers none of the parent outside the part. Score of a shift =
    (3 − share of the copy on the part − largest share on one other instance of the same class −
    share of the parent (outside the part) the copy covers) / (1 + ``shift_penalty`` · L1 shift).
    The seed breaks ties. Copy cells that fall on the part itself are dropped, so the copy never
    overwrites its own reference.
    """
    rows, cols = np.nonzero(part)
    if rows.size == 0:
        return None
    cy, cx = box_centre(rows, cols)
    host = parent & ~part
    host_area = int(host.sum())
    if host_area == 0:
        return None
    ring_r, ring_c = np.nonzero(anchor_ring(part, config.ring_width))
    order = np.random.default_rng(seed).permutation(ring_r.size)  # the seed breaks ties
    best: tuple[float, int, int] | None = None
    for k in order:
        dy, dx = int(ring_r[k]) - cy, int(ring_c[k]) - cx
        r, c = rows + dy, cols + dx
        inside = grid.in_bounds(r, c)
        if inside.mean() < config.min_in_bounds:
            continue
        r, c = r[inside], c[inside]
        on_host = int(host[r, c].sum())
        on_part = float(part[r, c].mean())
        if on_host == 0 or on_part >= 1.0:
            continue
        on_same_class = max((float(m[r, c].mean()) for m in same_class), default=0.0)
        score = (3 - on_part - on_same_class - on_host / host_area) / (1 + config.shift_penalty * (abs(dy) + abs(dx)))
        if best is None or score > best[0]:
            best = (score, dy, dx)
    if best is None:
        return None
    score, dy, dx = best
    targets, references = drop_identity_and_out_of_bounds(grid, rows + dy, cols + dx, rows, cols)
    keep = ~part.reshape(-1)[targets]
    if not keep.any():
        return None
    return ArtifactMapping("add", targets[keep], references[keep], grid, entity=entity, subentity=subentity,
                           meta={"offset": [dy, dx], "anchor": int(grid.index(cy + dy, cx + dx)),
                                 "score": round(float(score), 4)})
