"""Plan: from the grounded, segmented detections, the entities and parts artifacts can go on, and up
to ``perception.max_artifacts`` non-overlapping, type-balanced artifacts (``tools.plan``).

Entities are detections of entity phrases covering at least ``min_entity_fraction`` of the photo;
parts are part detections of a plausible size, each linked to the entity that contains most of it
(``tools.grid.containment`` ≥ ``perception.containment``). The plan (entities, parts, mappings) and
one ``Artifact`` per pick go on the sample; a photo with nothing usable is rejected with the reason.
"""

from __future__ import annotations

import numpy as np

from agents.settings import PerceptionConfig
from agents.step import Pixels
from shards.images import decode_rle
from shards.record import Artifact, Sample
from shards.taxonomy import xaigd_category
from tools.grid import CELL, Grid, containment
from tools.plan import Entity, Part, ToolsConfig, plan_artifacts


def link_parts(part_masks: list[np.ndarray], entity_masks: list[np.ndarray], threshold: float) -> list[int | None]:
    """For each part, the entity containing the largest share of it, if that share ≥ threshold."""
    links: list[int | None] = []
    for part in part_masks:
        shares = [containment(part, entity) for entity in entity_masks]
        best = int(np.argmax(shares)) if shares else -1
        links.append(best if best >= 0 and shares[best] >= threshold and shares[best] > 0 else None)
    return links


class PlanArtifacts:
    name = "plan"

    def __init__(self, config: PerceptionConfig, tools: ToolsConfig):
        self.config, self.tools = config, tools

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        for sample in samples:
            height, width = pixels.array(sample).shape[:2]
            self.plan(sample, height, width)

    def plan(self, sample: Sample, height: int, width: int) -> None:
        cfg = self.config
        found = sample.plan.pop("found", None) or []  # the detections are summarised, not stored
        masks = [decode_rle(d["mask"]) for d in found]
        area = width * height
        entities = [(d, m) for d, m in zip(found, masks)
                    if d["kind"] == "entity" and m.any() and m.sum() >= cfg.min_entity_fraction * area]
        candidates = [(d, m) for d, m in zip(found, masks)
                      if d["kind"] in ("peripheral", "intermediate") and self._part_size_ok(m, area)]
        links = link_parts([m for _, m in candidates], [m for _, m in entities], cfg.containment)
        parts = [(d, m, parent) for (d, m), parent in zip(candidates, links) if parent is not None]
        grid = Grid.from_image(height, width)
        mappings = plan_artifacts([Entity(d["label"], grid.cell_mask(m)) for d, m in entities],
                                  [Part(d["label"], d["kind"], grid.cell_mask(m), parent) for d, m, parent in parts],
                                  grid, self.tools, cfg.tool_shares, cfg.max_artifacts, sample.seed)
        sample.plan.update({
            "entities": [{k: d[k] for k in ("label", "score", "box", "mask")} for d, _ in entities],
            "parts": [{**{k: d[k] for k in ("label", "kind", "score", "box", "mask")}, "parent": parent}
                      for d, _, parent in parts],
            "artifacts": [m.to_dict() for m in mappings],
        })
        sample.artifacts = [Artifact(tool=m.tool, kernel=m.kernel, entity=m.entity, subentity=m.subentity,
                                     bbox=m.bbox(), target_bbox=m.bbox(), cells=m.target_cells.tolist(),
                                     reference_cells=m.reference_cells.tolist(),
                                     xaigd_category=xaigd_category(m.tool, m.kernel, m.entity, m.subentity))
                            for m in mappings]
        if not entities:
            sample.reject("no_entities: nothing grounded and segmented passed the entity filters")
        elif not mappings:
            sample.reject("no_artifact_planned: no tool found a valid mapping")

    def _part_size_ok(self, mask: np.ndarray, image_area: int) -> bool:
        cfg = self.config
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return False
        wider_than_a_cell = (xs.max() - xs.min() + 1) > CELL and (ys.max() - ys.min() + 1) > CELL
        return wider_than_a_cell and cfg.min_part_pixels < ys.size <= cfg.max_part_fraction * image_area
