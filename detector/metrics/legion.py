"""LEGION / SynthScars localisation metrics, as LEGION's ``evaluate_ours.py`` (opendatalab/LEGION) computes them.

Per image, on binary masks (1 = artifact) at the image's own size:

* ``miou`` — mean over the classes background (0) and artifact (1) of ``inter / (union + 1e-6)``: a class
  absent from both masks scores 0, so an image with no artifact and none predicted scores ~0.5;
* ``miou_without_background`` — the artifact class alone, same epsilon;
* ``f1_score`` — pixel F1 of the artifact class; 1.0 when TP = FP = FN = 0, 0.0 when P + R = 0;
* ``iou`` — artifact IoU ``inter / union``, 0.0 when the union is empty.

Each is summed over images and divided by the number of images evaluated (every image, positive or
not). Ground truth: SynthScars polygons (flat ``[x1, y1, x2, y2, ...]``) go through float32 → int32
truncation and ``cv2.fillPoly``; RichHF-18K heatmaps count any pixel > 0 as artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import cv2
import numpy as np

EPS = 1e-6
KEYS = ("miou", "miou_without_background", "f1_score", "iou")


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The four per-image scores from one image's confusion counts (TN = background agreed on)."""
    background = tn / (tn + fp + fn + EPS)
    artifact = tp / (tp + fp + fn + EPS)
    precision = tp / (tp + fp) if tp + fp > 0 else 0
    recall = tp / (tp + fn) if tp + fn > 0 else 0
    if tp == fp == fn == 0:
        f1 = 1.0
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * (precision * recall) / (precision + recall)
    union = tp + fp + fn
    return {"miou": (background + artifact) / 2, "miou_without_background": artifact, "f1_score": float(f1),
            "iou": tp / union if union else 0.0}


def counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN of two same-shaped binary masks (any non-zero = artifact)."""
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    return int((p & g).sum()), int((p & ~g).sum()), int((~p & g).sum()), int((~p & ~g).sum())


def image_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """LEGION's per-image scores of a predicted and a ground-truth binary mask."""
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"mask shapes differ: prediction {np.shape(pred)}, ground truth {np.shape(gt)}")
    return scores_from_counts(*counts(pred, gt))


@dataclass
class LegionTotals:
    """Running sums of the per-image scores; ``report`` divides by the number of images."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(KEYS, 0.0))
    images: int = 0

    def add(self, scores: dict[str, float]) -> None:
        for key in KEYS:
            self.sums[key] += scores[key]
        self.images += 1

    def report(self) -> dict[str, float | int]:
        return {**{k: v / self.images if self.images else 0.0 for k, v in self.sums.items()}, "images": self.images}


def legion_scores(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]) -> dict[str, float | int]:
    """LEGION's averages over every (prediction, ground truth) pair."""
    totals = LegionTotals()
    for pred, gt in zip(preds, gts):
        totals.add(image_scores(pred, gt))
    return totals.report()


def synthscars_mask(segmentations: Iterable[list[float]], height: int, width: int) -> np.ndarray:
    """SynthScars ground truth: every flat polygon filled with 1, coordinates truncated via float32 → int32.

    Raises ``ValueError`` on a polygon whose coordinates are not an even count of numbers."""
    mask = np.zeros((height, width), np.uint8)
    for seg in segmentations:
        try:
            points = np.array(seg, dtype=np.float32).reshape((-1, 2)).astype(np.int32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed polygon {str(seg)[:80]}: {err}") from err
        cv2.fillPoly(mask, [points], 1)
    return mask


def heatmap_mask(heatmap: np.ndarray) -> np.ndarray:
    """RichHF-18K ground truth as LEGION reads it: a grey heatmap, every pixel > 0 is artifact."""
    return (np.asarray(heatmap) > 0).astype(np.uint8)
