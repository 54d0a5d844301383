"""fuse: melt two overlapping instances together along their shared boundary."""

from __future__ import annotations

import numpy as np

from tools.grid import Grid, l1_distance
from tools.mapping import ArtifactMapping


def containment(inner: np.ndarray, outer: np.ndarray) -> float:
    """|inner ∩ outer| / |inner| (0 for an empty inner mask)."""
    area = inner.sum()
    return float((inner & outer).sum() / area) if area else 0.0


def fusable(a: np.ndarray, b: np.ndarray, config) -> bool:
    return bool((a & b).sum() > config.min_overlap_cells and containment(a, b) < config.max_containment
                and containment(b, a) < config.max_containment)


def best_fuse_partner(instances: list[np.ndarray], i: int, config) -> int | None:
    """The instance that overlaps instance ``i`` most among those it may fuse with."""
    overlaps = [((instances[i] & m).sum(), j) for j, m in enumerate(instances)
                if j != i and fusable(instances[i], m, config)]
    return max(overlaps)[1] if overlaps else None


def _offsets(max_offset: int) -> list[tuple[int, int]]:
    return [(dy, dx) for r in range(1, max_offset + 1) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if abs(dy) + abs(dx) == r]


def fuse_mapping(a: np.ndarray, b: np.ndarray, grid: Grid, config, seed: int, entity: str = "",
                 subentity: str | None = None) -> ArtifactMapping | None:
    """Band = cells of A ∪ B within L1 ``band_radius`` of their overlap, split by farthest-point
    seeds into regions labelled A or B; a region labelled A takes its references from B's
    exclusive cells (and vice versa) at the first small offset that fits it there entirely."""
    if not fusable(a, b, config):
        return None
    overlap = a & b
    band = (a | b) & (l1_distance(overlap) <= config.band_radius)
    band_cells = grid.cells_of(band)
    br, bc = grid.rowcol(band_cells)
    rng = np.random.default_rng(seed)
    seeds = [int(rng.integers(band_cells.size))]
    distance = np.abs(br - br[seeds[0]]) + np.abs(bc - bc[seeds[0]])
    while len(seeds) < min(config.seeds, band_cells.size):
        seeds.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.abs(br - br[seeds[-1]]) + np.abs(bc - bc[seeds[-1]]))
    region = np.argmin(np.stack([np.abs(br - br[s]) + np.abs(bc - bc[s]) for s in seeds]), axis=0)
    exclusive = {"A": a & ~b, "B": b & ~a}
    targets, references, labels = [], [], []
    for k in range(len(seeds)):
        label = "A" if k % 2 == 0 else "B"
        other = exclusive["B" if label == "A" else "A"]
        rr, rc = br[region == k], bc[region == k]
        for dy, dx in _offsets(config.max_offset):
            r2, c2 = rr + dy, rc + dx
            if grid.in_bounds(r2, c2).all() and other[r2, c2].all():
                targets.append(grid.index(rr, rc))
                references.append(grid.index(r2, c2))
                labels.append(label)
                break
    if not targets:
        return None
    return ArtifactMapping("fuse", np.concatenate(targets), np.concatenate(references), grid, entity=entity,
                           subentity=subentity, meta={"regions": labels})
