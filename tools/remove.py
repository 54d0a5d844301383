"""remove: fill a sub-entity with the nearest background around it (a missing ear, a lost wheel)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from tools.grid import Grid, dilate
from tools.mapping import ArtifactMapping
from tools.settings import Strict


class RemoveConfig(Strict):
    ring_radius: int = Field(1, ge=1, description="Chebyshev radius of the reference ring (1: 8-neighbours)")
    max_ring_radius: int = Field(1, ge=1, description="grow the ring up to this radius while it is all blocked")
    min_background_share: float = Field(
        0.5, ge=0, lt=1, description="use only ring cells outside every entity when they are more than this share")


def reference_ring(part: np.ndarray, foreground: np.ndarray, same_class: list[np.ndarray], config) -> np.ndarray:
    """The cells a removed part is filled from (``config``: RemoveConfig).

    The ring is the Chebyshev ``ring_radius`` neighbourhood of the part (1: its 8-neighbours) minus
    the part and every other instance of the same class (a removed finger is not replaced by its
    neighbour finger); while that leaves nothing it grows, up to ``max_ring_radius``. When the ring
    cells outside every entity (``foreground``) are more than ``min_background_share`` of the ring,
    only those are kept, so the hole is filled with background rather than with the parent.
    """
    blocked = part.copy()
    for mask in same_class:
        blocked |= mask
    ring = np.zeros_like(part)
    for radius in range(config.ring_radius, max(config.ring_radius, config.max_ring_radius) + 1):
        ring = dilate(part, radius) & ~blocked
        if ring.any():
            break
    background = ring & ~foreground
    if background.sum() > config.min_background_share * ring.sum():
        return background
    return ring


def remove_mapping(part: np.ndarray, foreground: np.ndarray, same_class: list[np.ndarray], grid: Grid, config,
                   seed: int, entity: str = "", subentity: str | None = None) -> ArtifactMapping | None:
    """Each target cell (the part) takes the L1-nearest cell of ``reference_ring``; the seed breaks ties.

    ``foreground`` is the union of the entity masks, ``config`` a RemoveConfig.
    """
    if not part.any():
        return None
    pool = reference_ring(part, foreground, same_class, config)
    if not pool.any():
        return None
    targets = grid.cells_of(part)
    pool_cells = grid.cells_of(pool)
    pool_cells = pool_cells[np.random.default_rng(seed).permutation(pool_cells.size)]  # seeded ties
    tr, tc = grid.rowcol(targets)
    pr, pc = grid.rowcol(pool_cells)
    distance = np.abs(tr[:, None] - pr[None]) + np.abs(tc[:, None] - pc[None])
    references = pool_cells[np.argmin(distance, axis=1)]
    return ArtifactMapping("remove", targets, references, grid, entity=entity, subentity=subentity,
                           meta={"ring_cells": int(pool_cells.size),
                                 "background_only": bool(not (pool & foreground).any())})
