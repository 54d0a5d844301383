"""Ground + segment: Grounding DINO boxes every vocabulary phrase of a batch of photos (scored per
phrase from its token span), class-agnostic NMS keeps the best boxes, and SAM segments each box
(multimask, the mask with the best predicted IoU, clipped to its box). The detections, with their
role and mask, go on ``plan["found"]`` for planning; their count on ``plan["detections"]``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_convert, clip_boxes_to_image, nms

from agents.settings import PerceptionConfig
from agents.step import Pixels
from agents.tensors import model_inputs
from shards.images import encode_rle
from shards.record import Sample


@dataclass
class Detection:
    phrase: str
    box: list[float]  # x0, y0, x1, y1 in pixels
    score: float
    mask: np.ndarray | None = None  # (H, W) bool


def phrase_spans(input_ids: list[int], separator_ids: set[int]) -> list[tuple[int, int]]:
    """Token spans of the phrases in a Grounding DINO caption "a. b. c." ([CLS] ... [SEP])."""
    spans, start = [], 1
    for i, token in enumerate(input_ids[1:], start=1):
        if token in separator_ids:
            if i > start:
                spans.append((start, i))
            start = i + 1
    return spans


class GroundAndSegment:
    name = "ground_segment"
    per_photo = True  # the same answer for every seed of a photo

    def __init__(self, grounding, segmentation, config: PerceptionConfig):
        self.grounding, self.segmentation, self.config = grounding, segmentation, config

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        images = [pixels.image(s) for s in samples]
        phrases = [[w["phrase"] for w in s.plan["vocabulary"]] for s in samples]
        for sample, image, found in zip(samples, images, self.detect(images, phrases)):
            self.segment(image, found)
            roles = {w["phrase"]: w["role"] for w in sample.plan["vocabulary"]}
            sample.plan["found"] = [{"label": d.phrase, "kind": roles[d.phrase], "score": round(d.score, 4),
                                     "box": d.box, "mask": encode_rle(d.mask)} for d in found if d.mask is not None]
            sample.plan["detections"] = len(found)
            sample.provenance.setdefault("models", {}).update(
                grounding=self.grounding.model_id, segmentation=self.segmentation.model_id)

    @torch.no_grad()
    def detect(self, images: list[Image.Image], phrases: list[list[str]]) -> list[list[Detection]]:
        """Grounding DINO on the batch: per image, the boxes above both thresholds after NMS."""
        cfg = self.config
        model, processor = self.grounding.model, self.grounding.processor
        captions = [". ".join(p) + "." for p in phrases]
        inputs = model_inputs(processor(images=images, text=captions, return_tensors="pt", padding="longest"), model)
        outputs = model(**inputs)
        tokenizer = processor.tokenizer
        separators = {tokenizer.convert_tokens_to_ids("."), tokenizer.sep_token_id}
        results = []
        for b, (image, names) in enumerate(zip(images, phrases)):
            spans = phrase_spans(inputs["input_ids"][b].tolist(), separators)[: len(names)]
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
            results.append([Detection(names[int(which[i])], [round(float(v), 2) for v in boxes[i]], float(score[i]))
                            for i in idx])
        return results

    @torch.no_grad()
    def segment(self, image: Image.Image, detections: list[Detection]) -> None:
        """SAM per image (every image in a SAM batch needs the same box count): best-IoU mask per box."""
        if not detections:
            return
        model, processor = self.segmentation.model, self.segmentation.processor
        inputs = processor(images=[image], input_boxes=[[d.box for d in detections]], return_tensors="pt")
        inputs = model_inputs(inputs, model)
        outputs = model(**inputs, multimask_output=self.config.sam_multimask)
        sizes = [inputs["original_sizes"].cpu()]
        if self.segmentation.family == "sam":  # SAM pads to a square; SAM 2 resizes to one
            sizes.append(inputs["reshaped_input_sizes"].cpu())
        masks = processor.post_process_masks(outputs.pred_masks.float().cpu(), *sizes)[0]  # (boxes, k, H, W)
        best = outputs.iou_scores[0].argmax(dim=-1).cpu()
        for i, detection in enumerate(detections):
            mask = masks[i, best[i]].numpy().astype(bool)
            if self.config.clip_masks_to_box:
                x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
                clipped = np.zeros_like(mask)
                clipped[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
                mask = clipped
            detection.mask = mask
