"""The detector's metrics on our shards: each benchmark family's definition applied to the shards' masks.

Masks are (H, W) arrays: prediction bool, ground truth with 0 = clean, > 0 = artifact and 255 =
ignore, excluded from every pixel count (the benchmarks have no ignore label; with none, the numbers
equal theirs). Boxes are [x0, y0, x1, y1] with exclusive ends. Which images each number averages
over is part of its name or of ``IMAGE_SETS``:

* image level — X-AIGD (``detector.metrics.xaigd``): balanced accuracy, P / R / F1 of the artifact class;
* pooled pixel — X-AIGD: TP / FP / FN summed over every image, then IoU, PixP, PixR, PixF1;
* per-image pixel — LEGION (``detector.metrics.legion``): mIoU of background and artifact with its
  1e-6 rule and pixel F1, averaged over **images with artifact pixels**; ``*_all_images`` over every image;
* pixel ranking — ``pixel_auroc``: the chance that a random artifact pixel scores above a random clean
  pixel (pooled over every image, ties half), from probability histograms (``PixelRanks``), so it
  needs no threshold and streams; a constant or random predictor scores 0.5;
* boxes — ArtifactBench (``detector.metrics.artifactbench``): per image mean best IoU and greedy
  ground-truth-order P / R / F1 at IoU ≥ 0.5, averaged over **images with ground-truth boxes**.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

from detector.metrics.artifactbench import localize
from detector.metrics.legion import scores_from_counts
from detector.metrics.xaigd import xaigd_image_level
from shards.record import MASK_IGNORE as IGNORE

IMAGE_SETS = {
    "image_*": "every image (X-AIGD image level)",
    "iou, pix_*, pixel_auroc": "pixels pooled over every image (X-AIGD; AUROC: the model only)",
    "miou, pixel_f1": "mean over images with artifact pixels (LEGION's per-image rules)",
    "miou_all_images, pixel_f1_all_images": "mean over every image (LEGION's per-image rules)",
    "box_*": "mean over images with ground-truth boxes (ArtifactBench localisation)",
}


def _safe(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def image_level(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """X-AIGD image level (scikit-learn): balanced accuracy; precision, recall, F1 of the artifact class (1)."""
    scores = xaigd_image_level(y_true, y_pred)
    return {k: scores[k] for k in ("balanced_accuracy", "precision", "recall", "f1")}


PixelCounts = tuple[int, int, int, int]  # TP, FP, FN, TN over one image's non-ignored pixels


def pixel_counts(pred: np.ndarray, gt: np.ndarray) -> PixelCounts:
    """One image's confusion counts, ignore pixels excluded."""
    valid = gt != IGNORE
    truth, guess = (gt > 0) & valid, pred.astype(bool) & valid
    return (int((truth & guess).sum()), int((~truth & guess & valid).sum()), int((truth & ~guess).sum()),
            int((~truth & ~guess & valid).sum()))


def pooled_from_counts(counts: Iterable[PixelCounts]) -> dict[str, float]:
    """X-AIGD pixel level: TP / FP / FN pooled over all images, then IoU, PixP, PixR, PixF1."""
    tp = fp = fn = 0
    for a, b, c, _ in counts:
        tp, fp, fn = tp + a, fp + b, fn + c
    p, r = _safe(tp, tp + fp), _safe(tp, tp + fn)
    return {"iou": _safe(tp, tp + fp + fn), "pix_precision": p, "pix_recall": r, "pix_f1": _safe(2 * p * r, p + r)}


def per_image_from_counts(counts: Iterable[PixelCounts], positives_only: bool = True) -> dict[str, float | int]:
    """LEGION per image (mIoU with its 1e-6 rule, pixel F1), averaged over images with artifact pixels —
    or, with ``positives_only=False``, over every image (keys suffixed ``_all_images``)."""
    scores = [scores_from_counts(*c) for c in counts if not positives_only or c[0] + c[2] > 0]
    mean = lambda key: float(np.mean([s[key] for s in scores])) if scores else 0.0  # noqa: E731
    if positives_only:
        return {"miou": mean("miou"), "pixel_f1": mean("f1_score"), "positive_images": len(scores)}
    return {"miou_all_images": mean("miou"), "pixel_f1_all_images": mean("f1_score"), "all_images": len(scores)}


class PixelRanks:
    """Histograms of the predicted probability over artifact and clean pixels (ignore excluded),
    accumulated image by image; ``auroc()`` is the pooled pixel AUROC with each bin's pairs as ties."""

    def __init__(self, bins: int = 1000):
        self.bins = bins
        self.artifact = np.zeros(bins, np.int64)
        self.clean = np.zeros(bins, np.int64)

    def add(self, probability: np.ndarray, gt: np.ndarray) -> None:
        valid = gt != IGNORE
        index = np.clip((np.asarray(probability, np.float64) * self.bins).astype(np.int64), 0, self.bins - 1)
        self.artifact += np.bincount(index[valid & (gt > 0)], minlength=self.bins)
        self.clean += np.bincount(index[valid & (gt == 0)], minlength=self.bins)

    def auroc(self) -> float:
        pairs = int(self.artifact.sum()) * int(self.clean.sum())
        if not pairs:
            return 0.5
        clean_below = np.cumsum(self.clean) - self.clean  # clean pixels in lower bins
        wins = (self.artifact * clean_below).sum() + 0.5 * (self.artifact * self.clean).sum()
        return float(wins / pairs)


def pixel_pooled(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """``pooled_from_counts`` of predicted and ground-truth masks."""
    return pooled_from_counts(pixel_counts(p, g) for p, g in zip(preds, gts))


def pixel_per_image(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float | int]:
    """``per_image_from_counts`` (images with artifact pixels) of predicted and ground-truth masks."""
    return per_image_from_counts(pixel_counts(p, g) for p, g in zip(preds, gts))


def mask_to_boxes(mask: np.ndarray) -> list[list[int]]:
    """Connected components (8-connectivity) of a binary mask → their boxes."""
    labels, _ = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3)))
    return [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels) if s is not None]


def box_f1(preds: list[list[list[int]]], gts: list[list[list[int]]], threshold: float = 0.5) -> dict[str, float | int]:
    """ArtifactBench localisation on every image with ground-truth boxes, averaged over those images:
    ``box_iou`` (mean best IoU of the boxes that overlap a prediction) and greedy-match P / R / F1."""
    scores = [localize(gt, pred, threshold) for pred, gt in zip(preds, gts) if gt]
    mean = lambda values: float(np.mean(values)) if values else 0.0  # noqa: E731
    return {"box_precision": mean([s.precision for s in scores]), "box_recall": mean([s.recall for s in scores]),
            "box_f1": mean([s.f1 for s in scores]), "box_iou": mean([s.iou for s in scores]), "box_images": len(scores)}
