"""remove: fill a sub-entity with the nearest background around it (a missing ear, a lost wheel)."""

from __future__ import annotations

import numpy as np

from tools.grid import Grid, dilate
from tools.mapping import ArtifactMapping

MAX_RING = 4


def remove_mapping(part: np.ndarray, same_class: list[np.ndarray], grid: Grid, seed: int,
                   entity: str = "", subentity: str | None = None) -> ArtifactMapping | None:
    """Each target cell (the part) takes the nearest cell of the background ring around it.

    The ring is the 8-neighbourhood of the part minus other instances of the same class (so a
    removed finger is not replaced by its neighbour finger); it grows until it is not empty.
    """
    if not part.any():
        return None
    blocked = part.copy()
    for mask in same_class:
        blocked |= mask
    pool = np.zeros_like(part)
    for radius in range(1, MAX_RING + 1):
        pool = dilate(part, radius) & ~blocked
        if pool.any():
            break
    if not pool.any():
        return None
    targets = grid.cells_of(part)
    pool_cells = grid.cells_of(pool)
    pool_cells = pool_cells[np.random.default_rng(seed).permutation(pool_cells.size)]  # seeded ties
    tr, tc = grid.rowcol(targets)
    pr, pc = grid.rowcol(pool_cells)
    distance = (tr[:, None] - pr[None]) ** 2 + (tc[:, None] - pc[None]) ** 2
    references = pool_cells[np.argmin(distance, axis=1)]
    return ArtifactMapping("remove", targets, references, grid, entity=entity, subentity=subentity,
                           meta={"ring_cells": int(pool_cells.size)})
