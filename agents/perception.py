"""Perception agent: where can artifacts go in this photo?

Per batch of samples: (1) one VLM call per image gives the caption (the FLUX prompt) and an
entity vocabulary with peripheral and intermediate parts; (2) Grounding DINO boxes every phrase,
batched, scored per phrase from its token span; (3) class-agnostic NMS; (4) SAM segments each box
(multimask, best predicted IoU); (5) each part is linked to the entity that contains it,
``tools.grid.containment`` (|part ∩ entity| / |part|) ≥ ``perception.containment``; (6) size
filters; (7) ``tools.plan`` picks up to N non-overlapping, type-balanced artifacts. The plan and
one ``Artifact`` per pick go on the sample; an image where nothing usable is found is rejected with
the reason. Design: docs/ARCHITECTURE.md, "Perception".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_convert, clip_boxes_to_image, nms

from agents import prompts
from agents.synthesis import encode_rle
from agents.tensors import model_inputs
from agents.vlm.base import VLMRequest
from shards.images import decode_image
from shards.record import Artifact, Sample
from shards.taxonomy import xaigd_category
from tools.grid import CELL, Grid, containment
from tools.plan import Entity, Part, plan_artifacts

VARIABLE_COUNT_PARTS = {"hair", "hairs", "leaf", "leaves", "petal", "petals", "feather", "feathers", "grass"}


@dataclass
class Detection:
    phrase: str
    box: list[float]  # x0, y0, x1, y1 in pixels
    score: float
    mask: np.ndarray | None = None  # (H, W) bool


def link_parts(part_masks: list[np.ndarray], entity_masks: list[np.ndarray], threshold: float) -> list[int | None]:
    """For each part, the entity containing the largest share of it, if that share ≥ threshold."""
    links: list[int | None] = []
    for part in part_masks:
        shares = [containment(part, entity) for entity in entity_masks]
        best = int(np.argmax(shares)) if shares else -1
        links.append(best if best >= 0 and shares[best] >= threshold and shares[best] > 0 else None)
    return links


def phrase_spans(input_ids: list[int], separator_ids: set[int]) -> list[tuple[int, int]]:
    """Token spans of the phrases in a Grounding DINO caption "a. b. c." ([CLS] ... [SEP])."""
    spans, start = [], 1
    for i, token in enumerate(input_ids[1:], start=1):
        if token in separator_ids:
            if i > start:
                spans.append((start, i))
            start = i + 1
    return spans


def vocabulary(answer: dict) -> tuple[list[str], dict[str, str]]:
    """The VLM's answer → phrases and each phrase's role (entity / peripheral / intermediate)."""
    roles: dict[str, str] = {}
    for entity in answer.get("entities", []):
        name = " ".join(entity["name"].lower().split())
        if name:
            roles.setdefault(name, "entity")
        for kind in ("peripheral", "intermediate"):
            for part in entity.get(kind, []):
                part = " ".join(part.lower().split())
                if part and part not in VARIABLE_COUNT_PARTS:
                    roles.setdefault(part, kind)
    return list(roles), roles


class PerceptionAgent:
    def __init__(self, vlm, grounding, segmentation, config):
        self.vlm, self.grounding, self.segmentation = vlm, grounding, segmentation
        self.config = config
        self.provenance = {"vlm": vlm.model_id, "grounding": grounding.model_id, "segmentation": segmentation.model_id}

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        pending = [s for s in samples if s.is_pending]
        images = {s.sample_id: decode_image(s.real_image) for s in pending}
        answers = self.vlm.generate_json([VLMRequest(*prompts.caption_vocabulary(), images=[images[s.sample_id]],
                                                     name="caption_vocabulary") for s in pending])
        work = []
        for sample, answer in zip(pending, answers):
            if not answer.ok:  # the model's answer is unusable (a transport failure raises instead)
                sample.reject(f"vlm_invalid_answer:{answer.error}"[:300])
                continue
            phrases, roles = vocabulary(answer.value)
            sample.caption = answer.value["caption"].strip()
            if not any(r == "entity" for r in roles.values()):
                sample.reject("no_entities: the VLM named no object")
                continue
            work.append((sample, phrases[: self.config.perception.max_phrases], roles))
        if work:
            detections = self._detect([images[s.sample_id] for s, _, _ in work], [p for _, p, _ in work])
            for (sample, _, roles), found in zip(work, detections):
                self._plan(sample, images[sample.sample_id], found, roles)
        return samples

    # --------------------------------------------------------------------------- grounding
    @torch.no_grad()
    def _detect(self, images: list[Image.Image], phrases: list[list[str]]) -> list[list[Detection]]:
        cfg = self.config.perception
        model, processor = self.grounding.model, self.grounding.processor
        captions = [". ".join(p) + "." for p in phrases]
        inputs = model_inputs(processor(images=images, text=captions, return_tensors="pt", padding="longest"), model)
        outputs = model(**inputs)
        tokenizer = processor.tokenizer
        separators = {tokenizer.convert_tokens_to_ids("."), tokenizer.sep_token_id}
        results = []
        for b, (image, names) in enumerate(zip(images, phrases)):
            ids = inputs["input_ids"][b].tolist()
            spans = phrase_spans(ids, separators)[: len(names)]
            probs = outputs.logits[b].sigmoid()  # (queries, text tokens)
            per_phrase = torch.stack([probs[:, s:e].max(dim=1).values for s, e in spans], dim=1)
            score, which = per_phrase.max(dim=1)
            width, height = image.size  # boxes: normalised (cx, cy, w, h); bf16 would be ~4 px coarse
            boxes = box_convert(outputs.pred_boxes[b].float(), "cxcywh", "xyxy")
            boxes = clip_boxes_to_image(boxes * boxes.new_tensor([width, height, width, height]), (height, width))
            keep = (score >= cfg.box_threshold) & (score >= cfg.text_threshold)
            keep &= (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
            idx = torch.nonzero(keep).flatten()
            idx = idx[nms(boxes[idx].float(), score[idx].float(), cfg.nms_iou)] if idx.numel() else idx
            found = [Detection(names[int(which[i])], [round(float(v), 2) for v in boxes[i]], float(score[i]))
                     for i in idx]
            self._segment(image, found)
            results.append(found)
        return results

    @torch.no_grad()
    def _segment(self, image: Image.Image, detections: list[Detection]) -> None:
        """SAM per image (every image in a SAM batch needs the same box count): best-IoU mask per box."""
        if not detections:
            return
        model, processor = self.segmentation.model, self.segmentation.processor
        inputs = processor(images=[image], input_boxes=[[d.box for d in detections]], return_tensors="pt")
        inputs = model_inputs(inputs, model)
        outputs = model(**inputs, multimask_output=self.config.perception.sam_multimask)
        sizes = [inputs["original_sizes"].cpu()]
        if self.segmentation.family == "sam":  # SAM pads to a square; SAM 2 resizes to one
            sizes.append(inputs["reshaped_input_sizes"].cpu())
        masks = processor.post_process_masks(outputs.pred_masks.float().cpu(), *sizes)[0]  # (boxes, k, H, W)
        best = outputs.iou_scores[0].argmax(dim=-1).cpu()
        for i, detection in enumerate(detections):
            mask = masks[i, best[i]].numpy().astype(bool)
            if self.config.perception.clip_masks_to_box:
                x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
                clipped = np.zeros_like(mask)
                clipped[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
                mask = clipped
            detection.mask = mask

    # -------------------------------------------------------------------------------- plan
    def _plan(self, sample: Sample, image: Image.Image, found: list[Detection], roles: dict[str, str]) -> None:
        cfg = self.config.perception
        width, height = image.size
        grid = Grid.from_image(height, width)
        image_area = width * height
        entities = [d for d in found if roles.get(d.phrase) == "entity" and d.mask is not None
                    and d.mask.sum() >= cfg.min_entity_fraction * image_area and d.mask.any()]
        candidates = [d for d in found if roles.get(d.phrase) in ("peripheral", "intermediate") and d.mask is not None]
        candidates = [d for d in candidates if self._part_size_ok(d.mask, image_area)]
        links = link_parts([d.mask for d in candidates], [e.mask for e in entities], cfg.containment)
        parts = [(d, parent) for d, parent in zip(candidates, links) if parent is not None]
        plan_entities = [Entity(e.phrase, grid.cell_mask(e.mask)) for e in entities]
        plan_parts = [Part(d.phrase, roles[d.phrase], grid.cell_mask(d.mask), parent) for d, parent in parts]
        mappings = plan_artifacts(plan_entities, plan_parts, grid, self.config.tools, cfg, sample.seed)
        sample.plan = {
            "entities": [{"label": e.phrase, "score": round(e.score, 4), "box": e.box, "mask": encode_rle(e.mask)}
                         for e in entities],
            "parts": [{"label": d.phrase, "kind": roles[d.phrase], "parent": parent, "score": round(d.score, 4),
                       "box": d.box, "mask": encode_rle(d.mask)} for d, parent in parts],
            "artifacts": [m.to_dict() for m in mappings],
            "detections": len(found),
        }
        sample.provenance.setdefault("models", {}).update(self.provenance)
        sample.artifacts = [Artifact(tool=m.tool, kernel=m.kernel, entity=m.entity, subentity=m.subentity,
                                     bbox=m.bbox(), cells=m.target_cells.tolist(),
                                     reference_cells=m.reference_cells.tolist(),
                                     xaigd_category=xaigd_category(m.tool, m.kernel, m.entity, m.subentity))
                            for m in mappings]
        if not entities:
            sample.reject("no_entities: nothing grounded and segmented passed the entity filters")
        elif not mappings:
            sample.reject("no_artifact_planned: no tool found a valid mapping")

    def _part_size_ok(self, mask: np.ndarray, image_area: int) -> bool:
        cfg = self.config.perception
        ys, xs = np.nonzero(mask)
        if ys.size == 0:
            return False
        wider_than_a_cell = (xs.max() - xs.min() + 1) > CELL and (ys.max() - ys.min() + 1) > CELL
        return wider_than_a_cell and cfg.min_part_pixels < ys.size <= cfg.max_part_fraction * image_area
