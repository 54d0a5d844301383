"""fuse: melt two overlapping instances together along their shared boundary."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from tools.grid import Grid, containment, l1_distance
from tools.mapping import ArtifactMapping
from tools.settings import Strict


class FuseConfig(Strict):
    min_overlap_cells: int = Field(5, ge=1)
    max_containment: float = Field(0.7, ge=0, le=1)
    band_radius: int = Field(2, ge=1, description="L1 radius (cells) of the band around the overlap")
    seeds: int = Field(5, ge=1, description="farthest-point seeds splitting the band")
    max_offset: int = Field(4, ge=1, description="largest L1 offset (cells) tried to fit a region in the other entity")


def fusable(a: np.ndarray, b: np.ndarray, config) -> bool:
    return bool((a & b).sum() > config.min_overlap_cells and containment(a, b) < config.max_containment
                and containment(b, a) < config.max_containment)


def best_fuse_partner(instances: list[np.ndarray], i: int, config) -> int | None:
    """The instance that overlaps instance ``i`` most among those it may fuse with."""
    overlaps = [((instances[i] & m).sum(), j) for j, m in enumerate(instances)
                if j != i and fusable(instances[i], m, config)]
    return max(overlaps)[1] if overlaps else None


def _offsets(max_offset: int) -> list[tuple[int, int]]:
    """Every non-zero offset up to L1 length ``max_offset``, shortest first, row-major within a length."""
    return [(dy, dx) for r in range(1, max_offset + 1) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if abs(dy) + abs(dx) == r]


def _seeds(rows: np.ndarray, cols: np.ndarray, k: int) -> list[int]:
    """Farthest-point seeds (L1) among the points; the first is the point nearest their centroid.

    Ties go to the earliest point, so the caller's order of the points decides them.
    """
    if k >= rows.size:
        return list(range(rows.size))
    first = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    seeds = [first]
    distance = np.abs(rows - rows[first]) + np.abs(cols - cols[first])
    while len(seeds) < k:
        seeds.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.abs(rows - rows[seeds[-1]]) + np.abs(cols - cols[seeds[-1]]))
    return seeds


def _nearest(rows: np.ndarray, cols: np.ndarray, pool: np.ndarray, exclude: np.ndarray, grid: Grid,
             order: np.random.Generator) -> np.ndarray:
    """For each (row, col), the L1-nearest pool cell, preferring cells outside ``exclude``; seeded ties."""
    preferred = pool & ~exclude
    cells = grid.cells_of(preferred if preferred.any() else pool)
    cells = cells[order.permutation(cells.size)]
    pr, pc = grid.rowcol(cells)
    distance = np.abs(rows[:, None] - pr[None]) + np.abs(cols[:, None] - pc[None])
    distance[grid.index(rows, cols)[:, None] == cells[None]] = np.iinfo(distance.dtype).max  # never itself
    return cells[np.argmin(distance, axis=1)]


def fuse_mapping(a: np.ndarray, b: np.ndarray, grid: Grid, config, seed: int, entity: str = "",
                 subentity: str | None = None) -> ArtifactMapping | None:
    """Melt A and B along their overlap (cell masks in, ``config``: FuseConfig).

    Band (the targets) = cells of A ∪ B within L1 ``band_radius`` of A ∩ B. It is split into Voronoi
    regions around ``seeds`` farthest-point seeds, the first nearest the band's centroid. A region is
    labelled by the entity whose exclusive cells (A \\ B or B \\ A) are nearer its seed ("neutral" on
    a tie) and copies from the *other* entity's exclusive cells (either's for a neutral region),
    never from a band cell: at the shortest offset (L1 ≤ ``max_offset``) that puts the whole region
    there, or else at the offset that puts most of it there, with the cells left over taking the
    nearest such cell. No region is dropped. The seed breaks ties (order of the band cells).
    Targets are grouped region by region, in the order of ``meta["regions"]``.
    """
    if not fusable(a, b, config):
        return None
    band = (a | b) & (l1_distance(a & b) <= config.band_radius)
    rng = np.random.default_rng(seed)
    band_cells = grid.cells_of(band)
    band_cells = band_cells[rng.permutation(band_cells.size)]
    br, bc = grid.rowcol(band_cells)
    seeds = _seeds(br, bc, config.seeds)
    region = np.argmin(np.stack([np.abs(br - br[s]) + np.abs(bc - bc[s]) for s in seeds]), axis=0)
    exclusive = {"A": a & ~b, "B": b & ~a}
    to_a, to_b = l1_distance(exclusive["A"]), l1_distance(exclusive["B"])
    sources = {"A": exclusive["B"], "B": exclusive["A"], "neutral": exclusive["A"] | exclusive["B"]}
    offsets = _offsets(config.max_offset)
    targets, references, regions = [], [], []
    for k, s in enumerate(seeds):
        members = np.sort(band_cells[region == k])
        if members.size == 0:
            continue
        sy, sx = br[s], bc[s]
        label = "A" if to_a[sy, sx] < to_b[sy, sx] else "B" if to_b[sy, sx] < to_a[sy, sx] else "neutral"
        source = sources[label]
        usable = source & ~band
        rr, rc = grid.rowcol(members)
        best: tuple[int, tuple[int, int], np.ndarray] | None = None
        for dy, dx in offsets:
            r2, c2 = rr + dy, rc + dx
            fits = grid.in_bounds(r2, c2)
            fits[fits] = usable[r2[fits], c2[fits]]
            if best is None or fits.sum() > best[0]:
                best = (int(fits.sum()), (dy, dx), fits)
            if fits.all():
                break
        count, (dy, dx), fits = best
        refs = grid.index(rr + dy, rc + dx)
        if count < members.size:
            refs = np.where(fits, refs, 0)
            refs[~fits] = _nearest(rr[~fits], rc[~fits], source, band, grid, rng)
        fitted = count == members.size
        moved = refs != members  # all of them, unless the other entity has no cell but the target itself
        members, refs = members[moved], refs[moved]
        targets.append(members)
        references.append(refs)
        regions.append({"seed": int(band_cells[s]), "label": label, "cells": int(members.size), "fitted": fitted,
                        **({"offset": [dy, dx]} if count else {})})  # no offset: all cells took the nearest
    return ArtifactMapping("fuse", np.concatenate(targets), np.concatenate(references), grid, entity=entity,
                           subentity=subentity, meta={"regions": regions})
