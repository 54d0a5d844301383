"""add: copy a sub-entity next to itself, onto its parent (an extra finger, a second ear)."""

from __future__ import annotations

import numpy as np

from tools.grid import Grid
from tools.mapping import ArtifactMapping, drop_identity_and_out_of_bounds


def add_mapping(part: np.ndarray, parent: np.ndarray, same_class: list[np.ndarray], grid: Grid, config,
                seed: int, entity: str = "", subentity: str | None = None) -> ArtifactMapping | None:
    """Best shift of the part's cells (cell masks in, ``config``: AddConfig).

    Score of a shift = (3 − share of the copy on the reference part − share on another instance of
    the same class − share off the parent) / (1 + shift_penalty · |shift|). Shifts that keep less
    than ``min_in_bounds`` of the copy inside the image, or put none of it on the parent, are skipped.
    """
    rows, cols = np.nonzero(part)
    if rows.size == 0:
        return None
    others = np.zeros_like(part)
    for mask in same_class:
        others |= mask & ~part
    height, width = int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1
    reach_r, reach_c = height + config.max_ring, width + config.max_ring
    rng = np.random.default_rng(seed)
    best: tuple[float, float, int, int] | None = None
    for dy in range(-reach_r, reach_r + 1):
        for dx in range(-reach_c, reach_c + 1):
            if dy == 0 and dx == 0:
                continue
            r, c = rows + dy, cols + dx
            inside = grid.in_bounds(r, c)
            if inside.mean() < config.min_in_bounds:
                continue
            r, c = r[inside], c[inside]
            on_parent = parent[r, c].mean()
            if on_parent == 0:
                continue
            on_reference, on_other = part[r, c].mean(), others[r, c].mean()
            if on_reference >= 1.0:
                continue
            score = (3 - on_reference - on_other - (1 - on_parent)) / (1 + config.shift_penalty * np.hypot(dy, dx))
            key = (score, rng.random(), dy, dx)  # the seed breaks ties
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None:
        return None
    dy, dx = best[2], best[3]
    targets, references = drop_identity_and_out_of_bounds(grid, rows + dy, cols + dx, rows, cols)
    keep = ~part.reshape(-1)[targets]  # the copy never overwrites its own reference
    if not keep.any():
        return None
    return ArtifactMapping("add", targets[keep], references[keep], grid, entity=entity, subentity=subentity,
                           meta={"offset": [int(dy), int(dx)], "score": round(float(best[0]), 4)})
