"""The artifact plan: up to N non-overlapping artifacts per image, balanced across tools.

Candidates: add and remove for peripheral parts (countable identity), distort for intermediate
parts, fuse for pairs of overlapping entity instances. Greedy choice: at each step the tool whose
running share lags its target share most (weight = target share ÷ running share) goes first; a
candidate is taken only if its target and reference cells are disjoint from every earlier pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from tools.add import AddConfig, add_mapping
from tools.distort import DistortConfig, distort_mapping
from tools.fuse import FuseConfig, best_fuse_partner, fuse_mapping
from tools.grid import Grid
from tools.mapping import ArtifactMapping
from tools.remove import RemoveConfig, remove_mapping
from tools.settings import Strict


class ToolsConfig(Strict):
    add: AddConfig = AddConfig()
    remove: RemoveConfig = RemoveConfig()
    distort: DistortConfig = DistortConfig()
    fuse: FuseConfig = FuseConfig()


@dataclass
class Entity:
    label: str
    cells: np.ndarray  # (rows, cols) bool


@dataclass
class Part:
    label: str
    kind: Literal["peripheral", "intermediate"]
    cells: np.ndarray  # (rows, cols) bool
    parent: int  # index into the entities


def _candidates(entities: list[Entity], parts: list[Part], tools_config: ToolsConfig, rng) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for i, part in enumerate(parts):
        out += [("add", i), ("remove", i)] if part.kind == "peripheral" else [("distort", i)]
    for i in range(len(entities)):
        if best_fuse_partner([e.cells for e in entities], i, tools_config.fuse) is not None:
            out.append(("fuse", i))
    return [out[k] for k in rng.permutation(len(out))]


def _realise(tool: str, index: int, entities: list[Entity], parts: list[Part], grid: Grid, tools_config: ToolsConfig,
             seed: int) -> ArtifactMapping | None:
    if tool == "fuse":
        masks = [e.cells for e in entities]
        j = best_fuse_partner(masks, index, tools_config.fuse)
        return fuse_mapping(masks[index], masks[j], grid, tools_config.fuse, seed,
                            entity=f"{entities[index].label}+{entities[j].label}")
    part = parts[index]
    parent = entities[part.parent]
    same_class = [p.cells for k, p in enumerate(parts) if k != index and p.label == part.label]
    if tool == "add":
        return add_mapping(part.cells, parent.cells, same_class, grid, tools_config.add, seed,
                           entity=parent.label, subentity=part.label)
    if tool == "remove":
        foreground = np.logical_or.reduce([e.cells for e in entities])
        return remove_mapping(part.cells, foreground, same_class, grid, tools_config.remove, seed,
                              entity=parent.label, subentity=part.label)
    return distort_mapping(part.cells, parent.cells, grid, tools_config.distort, seed,
                           entity=parent.label, subentity=part.label)


def plan_artifacts(entities: list[Entity], parts: list[Part], grid: Grid, tools_config: ToolsConfig,
                   shares: dict[str, float], max_artifacts: int, seed: int) -> list[ArtifactMapping]:
    """Up to ``max_artifacts`` disjoint artifacts; ``shares`` is each tool's target share of the plan."""
    rng = np.random.default_rng(seed)
    pool = _candidates(entities, parts, tools_config, rng)
    counts = {tool: 0 for tool in shares}
    used: set[int] = set()
    chosen: list[ArtifactMapping] = []
    while pool and len(chosen) < max_artifacts:
        total = len(chosen)

        def weight(candidate: tuple[str, int]) -> float:
            running = (counts[candidate[0]] + 1) / (total + 1)
            return shares.get(candidate[0], 0.0) / running

        pool.sort(key=weight, reverse=True)  # stable: the seeded order breaks ties
        tool, index = pool.pop(0)
        mapping = _realise(tool, index, entities, parts, grid, tools_config, seed + 7919 * len(chosen))
        if mapping is None or mapping.empty or mapping.cells_used() & used:
            continue
        mapping.validate()
        chosen.append(mapping)
        counts[tool] += 1
        used |= mapping.cells_used()
    return chosen
