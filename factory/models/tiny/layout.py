"""Seeded, photo-dependent outputs for the tiny Grounding DINO and SAM (``kind: tiny`` only).

Random tiny detectors give arbitrary boxes and blob masks, which rarely have the geometry the
artifact tools need. ``factory.models.perception`` installs these forward hooks on its tiny models
only; they rewrite the models' outputs in the models' own output space, so the agents' thresholds,
NMS, mask post-processing, linking and size filters run unchanged:

* Grounding DINO (``logits``, ``pred_boxes``): each phrase of the caption is decoded from its token
  span and classified by the scripted VLM's lexicon. The first two entity phrases (or one phrase
  twice) get two boxes whose ellipses overlap a little (enough to fuse on some photos); each part
  gets one small box inside its entity — peripheral parts (add, remove), intermediate parts a
  little larger (distort) — covering one anchor point, in the first entity next to the second. So
  every two candidate artifacts share a token cell and the plan takes one artifact per image (which
  one varies by sample seed): artifacts stay local, a few cells each, even at the tiny preset's
  128-192 px sides (a part is then 2-3 cells wide, and its change mask that plus a one-cell
  dilation). Sizes and positions are drawn from a generator seeded by the model seed and a hash
  of the photo's pixels (``pixel_values`` inside ``pixel_mask``), so layouts vary by photo and
  never by batch.
* SAM (``pred_masks``, ``iou_scores``): every prompt box gets the ellipse inscribed in it, as
  low-resolution mask logits; the first multimask output scores best.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import torch
from torchvision.ops import box_convert

from agents.ground import phrase_spans
from agents.vlm.scripted_backend import ROLES

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame units (the short image side is 1)

ENTITY_SPAN = (0.53, 0.57)  # entity box side, as a share of the image side
ENTITY_MARGIN = (0.02, 0.06)  # gap between an entity box and the image border, as a share of the side
# part box side, in long sides: ~28-33 px at the tiny preset's 192, just above min_part_pixels once SAM's coarse
# ellipse is clipped to its box
PART_SIDE = {"peripheral": (0.145, 0.16), "intermediate": (0.15, 0.17)}
PART_ASPECT = {"peripheral": (0.85, 1.15), "intermediate": (0.8, 1.25)}  # width / height
PART_INSIDE = 0.95  # a part's ellipse lies within this scaled copy of its parent's ellipse
ANCHOR_INSIDE = 0.95  # the anchor lies within this scaled copy of every part's ellipse
ANCHOR_DEPTH = 0.65  # the anchor lies on this scaled copy of the first entity's ellipse
PART_MAX_IOU = 0.45  # most IoU between two part boxes (grounding's NMS removes boxes above 0.5)
PART_TRIES = 64  # positions drawn per part; the best valid one is kept
SCORE = {"entity": (0.6, 0.9), "peripheral": (0.45, 0.85), "intermediate": (0.45, 0.85)}  # query confidence
LOW_LOGIT = -12.0  # every other (query, token) pair: far below any threshold
MASK_GAIN = 12.0  # mask logit = gain * (1 - normalised squared distance to the ellipse centre)
IOU_SCORES = (0.95, 0.8, 0.7)  # SAM's predicted IoU of the multimask outputs: the first is best


def photo_seed(pixels: torch.Tensor) -> int:
    """A stable 64-bit hash of a (C, H, W) image tensor, quantised so float noise cannot change it."""
    quantised = torch.round(pixels.detach().float().cpu() * 64).to(torch.int32).numpy()
    digest = hashlib.sha256(repr(quantised.shape).encode() + quantised.tobytes()).digest()
    return int.from_bytes(digest[:8], "little")


def _in_ellipse(xs: np.ndarray, ys: np.ndarray, box: Box, scale: float = 1.0) -> np.ndarray:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    a, b = scale * (box[2] - box[0]) / 2, scale * (box[3] - box[1]) / 2
    return ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0


def _ellipse_outline(box: Box, points: int = 24) -> tuple[np.ndarray, np.ndarray]:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return cx + (box[2] - box[0]) / 2 * np.cos(angles), cy + (box[3] - box[1]) / 2 * np.sin(angles)


def _iou(box: Box, other: Box) -> float:
    w = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
    h = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
    union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - w * h
    return w * h / union


def _anchor(boxes: tuple[Box, Box]) -> tuple[float, float]:
    """Where every part goes: the point of the first entity's ``ANCHOR_DEPTH`` ellipse nearest the
    second entity's centre along the line between the centres (in the overlap when it is wide)."""
    (ax, ay), (bx, by) = (((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes)
    ts = np.linspace(0.0, 1.0, 201)
    xs, ys = ax + ts * (bx - ax), ay + ts * (by - ay)
    inside = np.flatnonzero(_in_ellipse(xs, ys, boxes[0], ANCHOR_DEPTH))
    return float(xs[inside[-1]]), float(ys[inside[-1]])


def _entity_boxes(width: float, height: float, rng: np.random.Generator) -> tuple[Box, Box]:
    """Two boxes in opposite corners whose inscribed ellipses overlap a little around the centre."""
    boxes = []
    for corner in (0, 1):
        w, h = rng.uniform(*ENTITY_SPAN) * width, rng.uniform(*ENTITY_SPAN) * height
        mx, my = rng.uniform(*ENTITY_MARGIN) * width, rng.uniform(*ENTITY_MARGIN) * height
        x0, y0 = (mx, my) if corner == 0 else (width - mx - w, height - my - h)
        boxes.append((x0, y0, x0 + w, y0 + h))
    if rng.random() < 0.5:  # the other diagonal
        boxes = [(width - b[2], b[1], width - b[0], b[3]) for b in boxes]
    return boxes[0], boxes[1]


def _place_part(kind: str, parent: Box, anchor: tuple[float, float], placed: list[Box], long_side: float,
                rng: np.random.Generator) -> Box | None:
    """Of ``PART_TRIES`` drawn boxes inside ``parent``'s ellipse whose ellipse covers ``anchor``, the one
    overlapping the boxes placed so far least (at most ``PART_MAX_IOU`` each)."""
    best: tuple[float, Box] | None = None
    for _ in range(PART_TRIES):
        side, aspect = rng.uniform(*PART_SIDE[kind]) * long_side, rng.uniform(*PART_ASPECT[kind])
        w, h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        # the centre is drawn where the anchor lies within ANCHOR_INSIDE of the part's ellipse
        radius, angle = ANCHOR_INSIDE * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        cx, cy = anchor[0] + radius * w / 2 * np.cos(angle), anchor[1] + radius * h / 2 * np.sin(angle)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if not _in_ellipse(*_ellipse_outline(box), parent, PART_INSIDE).all():
            continue
        overlap = max((_iou(box, p) for p in placed), default=0.0)
        if overlap <= PART_MAX_IOU and (best is None or overlap < best[0]):
            best = (overlap, box)
    return None if best is None else best[1]


def layout(phrases: list[str], width: float, height: float, rng: np.random.Generator
           ) -> list[tuple[int, Box, float]]:
    """(phrase index, box in frame units, confidence) for every phrase that gets a box.

    A part belongs to the entity whose phrase came last before it when the two boxes are two
    different entities, otherwise to the box with fewer parts so far. Peripheral and intermediate
    parts are placed in turn around the anchor (``_anchor``); a part that finds no room there (all
    of the second entity's parts, unless the anchor lies in it too) is left out.
    """
    roles = [ROLES.get(" ".join(p.lower().split())) for p in phrases]
    entities = [i for i, role in enumerate(roles) if role == "entity"]
    if not entities:
        return []
    owners = entities[:2] if len(entities) > 1 else entities * 2
    boxes = _entity_boxes(width, height, rng)
    out = [(owners[k], boxes[k], float(rng.uniform(*SCORE["entity"]))) for k in (0, 1)]
    parent: dict[int, int] = {}  # part phrase -> entity box 0 or 1
    last_entity = owners[0]
    for i, role in enumerate(roles):
        if role == "entity":
            last_entity = i
        elif role in ("peripheral", "intermediate"):
            if owners[0] != owners[1] and last_entity in owners:
                parent[i] = owners.index(last_entity)
            else:
                counts = Counter(parent.values())
                parent[i] = 0 if counts[0] <= counts[1] else 1
    anchor = _anchor(boxes)
    placed: list[Box] = []
    rank = {i: sum(roles[j] == roles[i] for j in parent if j < i) for i in parent}
    for i in sorted(parent, key=lambda i: (rank[i], roles[i] != "peripheral")):
        box = _place_part(roles[i], boxes[parent[i]], anchor, placed, max(width, height), rng)
        if box is not None:
            placed.append(box)
            out.append((i, box, float(rng.uniform(*SCORE[roles[i]]))))
    return out


def install_grounding_layout(model, tokenizer, seed: int) -> None:
    """Rewrite the tiny Grounding DINO's ``logits`` and ``pred_boxes`` with ``layout`` per image."""
    separators = {tokenizer.convert_tokens_to_ids("."), tokenizer.sep_token_id}

    def hook(module, args, kwargs, output):
        input_ids, pixel_values = kwargs["input_ids"], kwargs["pixel_values"]
        pixel_mask = kwargs.get("pixel_mask")
        logits = torch.full_like(output.logits, LOW_LOGIT)
        boxes = torch.full_like(output.pred_boxes, 0.5)
        boxes[..., 2:] = 0.01
        queries = logits.shape[1]
        for b in range(input_ids.shape[0]):
            ids = input_ids[b].tolist()
            spans = phrase_spans(ids, separators)
            phrases = [tokenizer.decode(ids[s:e]) for s, e in spans]
            pixels = pixel_values[b]
            if pixel_mask is not None:
                rows, cols = int(pixel_mask[b].any(dim=1).sum()), int(pixel_mask[b].any(dim=0).sum())
                pixels = pixels[:, :rows, :cols]
            height, width = pixels.shape[-2:]
            frame_w, frame_h = width / min(width, height), height / min(width, height)
            rng = np.random.default_rng([seed, photo_seed(pixels)])
            for q, (phrase, box, score) in enumerate(layout(phrases, frame_w, frame_h, rng)[:queries]):
                start, end = spans[phrase]
                logits[b, q, start:end] = float(np.log(score / (1 - score)))
                xyxy = torch.tensor(box, dtype=torch.float64) / torch.tensor([frame_w, frame_h, frame_w, frame_h],
                                                                              dtype=torch.float64)
                boxes[b, q] = box_convert(xyxy, "xyxy", "cxcywh").to(boxes.dtype)
        output.logits, output.pred_boxes = logits, boxes
        return output

    model.register_forward_hook(hook, with_kwargs=True)


def install_segmentation_layout(model) -> None:
    """Rewrite the tiny SAM's ``pred_masks`` (low-res logits) and ``iou_scores``: an ellipse per box."""
    side = model.config.vision_config.image_size  # the padded input's side, the frame of ``input_boxes``

    def hook(module, args, kwargs, output):
        boxes = kwargs["input_boxes"].detach().float().cpu()  # (batch, boxes, 4) in input pixels
        masks = output.pred_masks  # (batch, boxes, outputs, h, w)
        h, w = masks.shape[-2:]
        ys = ((torch.arange(h) + 0.5) * side / h)[:, None]
        xs = ((torch.arange(w) + 0.5) * side / w)[None, :]
        x0, y0, x1, y1 = (boxes[..., k, None, None] for k in range(4))
        a, b = ((x1 - x0) / 2).clamp(min=1e-3), ((y1 - y0) / 2).clamp(min=1e-3)
        field = 1 - ((xs - (x0 + x1) / 2) / a) ** 2 - ((ys - (y0 + y1) / 2) / b) ** 2
        logits = (MASK_GAIN * field).clamp(-MASK_GAIN, MASK_GAIN)
        output.pred_masks = logits[:, :, None].expand(masks.shape).to(masks.device, masks.dtype).contiguous()
        scores = torch.tensor(IOU_SCORES[: masks.shape[2]], dtype=output.iou_scores.dtype)
        output.iou_scores = scores.expand(output.iou_scores.shape).to(output.iou_scores.device).contiguous()
        return output

    model.register_forward_hook(hook, with_kwargs=True)
