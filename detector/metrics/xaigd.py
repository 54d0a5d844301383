"""X-AIGD metrics, as X-AIGD's ``metrics/pixel.py`` (Coxy7/X-AIGD) and its paper define them.

Masks use X-AIGD's encoding: 255 = artifact, 0 = background; any other value is neither (our shards'
255 = ignore must be converted first: ``from_flawforge``). Pixel level (category agnostic):
TP / FP / FN are pooled over all images, then IoU = TP / (TP + FP + FN), PixP, PixR, PixF1
(0 where a denominator is 0). Ground truth is rasterised from polygons as X-AIGD does (int32
truncation, points clipped to the image, ``cv2.fillPoly`` with 255; fewer than 3 points is an
error). Predictions are binarised with ``> 127``. ``TRANSFORMS`` are X-AIGD's mask transforms
(nearest-neighbour resize, then centre crop). Image level: balanced accuracy (mean of real and fake
accuracy) and P / R / F1 of the fake class (scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_score, recall_score

from shards.record import MASK_IGNORE

ARTIFACT = 255
CATEGORIES = ("low-level-edge_shape", "low-level-texture", "low-level-color", "low-level-symbol",
              "high-level-semantics", "cognitive-level-commonsense", "cognitive-level-physics")
# name → (resize to (h, w) | resize the short side to n, centre crop (h, w))
TRANSFORMS: dict[str, tuple[tuple[int, int] | int | None, tuple[int, int] | None]] = {
    "keep-original-size": (None, None),
    "resize256-crop224": ((256, 256), (224, 224)),
    "resize518-crop518": (518, (518, 518)),
}
Polygon = Sequence[Sequence[float]]


def polygon_mask(polygons: Iterable[Polygon], height: int, width: int) -> np.ndarray:
    """X-AIGD ground truth: each polygon's points truncated to int32, clipped to the image, filled with 255."""
    mask = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        if len(polygon) < 3:
            raise ValueError(f"malformed polygon: expected at least 3 points, got {len(polygon)}")
        points = np.array(polygon, dtype=np.int32)
        points[:, 0] = np.clip(points[:, 0], 0, width - 1)
        points[:, 1] = np.clip(points[:, 1], 0, height - 1)
        cv2.fillPoly(mask, [points], ARTIFACT)
    return mask


def binarize(mask: np.ndarray, threshold: int = 127) -> np.ndarray:
    """A grey prediction mask as X-AIGD reads it: > ``threshold`` → 255, else 0."""
    return np.where(np.asarray(mask) > threshold, ARTIFACT, 0).astype(np.uint8)


def from_flawforge(mask: np.ndarray) -> np.ndarray:
    """Our label mask (0 clean, k artifact, 255 ignore) in X-AIGD's encoding; ignore becomes 128 (uncounted)."""
    mask = np.asarray(mask)
    return np.where(mask == MASK_IGNORE, 128, np.where(mask > 0, ARTIFACT, 0)).astype(np.uint8)


def to_flawforge(mask: np.ndarray) -> np.ndarray:
    """An X-AIGD mask (255 artifact) in our encoding: 1 artifact, 0 clean."""
    return (np.asarray(mask) == ARTIFACT).astype(np.uint8)


def _resized(shape: tuple[int, int], resize: tuple[int, int] | int | None) -> tuple[int, int]:
    if resize is None:
        return shape
    if isinstance(resize, tuple):
        return resize
    h, w = shape
    return (resize, int(w * resize / h)) if h < w else (int(h * resize / w), resize)


def transformed_shape(height: int, width: int, transform: str) -> tuple[int, int]:
    """The (height, width) a mask of this size has after ``transform``."""
    resize, crop = TRANSFORMS[transform]
    return crop if crop is not None else _resized((height, width), resize)


def transform_mask(mask: np.ndarray, transform: str) -> np.ndarray:
    """X-AIGD's mask transform: nearest-neighbour resize, then a centre crop."""
    resize, crop = TRANSFORMS[transform]
    if resize is not None:
        h, w = _resized(mask.shape[:2], resize)
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    if crop is not None:
        (ch, cw), (h, w) = crop, mask.shape[:2]
        if ch > h or cw > w:
            raise ValueError(f"centre crop {crop} exceeds the resized mask {(h, w)}")
        top, left = (h - ch) // 2, (w - cw) // 2
        mask = mask[top:top + ch, left:left + cw]
    return mask


def _div(num: float, den: float) -> float:
    return num / den if den else 0.0


@dataclass
class XaigdPixelCounts:
    """Pooled pixel counts of the artifact class, plus X-AIGD's image bookkeeping."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    evaluated_images: int = 0
    zero_prediction_images: int = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """One image: both masks in X-AIGD's encoding (255 artifact, 0 background), same shape."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction mask has shape {pred.shape}, expected {gt.shape}")
        self.true_positive += int(np.sum((pred == ARTIFACT) & (gt == ARTIFACT)))
        self.false_positive += int(np.sum((pred == ARTIFACT) & (gt == 0)))
        self.false_negative += int(np.sum((pred == 0) & (gt == ARTIFACT)))
        self.evaluated_images += 1
        self.zero_prediction_images += int(not np.any(pred))

    def report(self) -> dict[str, float | int]:
        """X-AIGD's row: IoU, PixP, PixR, PixF1, evaluated_images, zero_prediction_images."""
        tp, fp, fn = self.true_positive, self.false_positive, self.false_negative
        precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
        return {"IoU": _div(tp, tp + fp + fn), "PixP": precision, "PixR": recall,
                "PixF1": _div(2 * precision * recall, precision + recall),
                "evaluated_images": self.evaluated_images, "zero_prediction_images": self.zero_prediction_images}


def xaigd_pixel(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]) -> dict[str, float | int]:
    """Category-agnostic pixel metrics of X-AIGD-encoded prediction and ground-truth masks."""
    counts = XaigdPixelCounts()
    for pred, gt in zip(preds, gts):
        counts.add(np.asarray(pred), np.asarray(gt))
    return counts.report()


def xaigd_image_level(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float | int]:
    """Balanced accuracy (mean accuracy over the classes present) and P / R / F1 of the fake class (1)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    if not len(y_true):
        return {"balanced_accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "real": 0, "fake": 0}
    with warnings.catch_warnings():  # one class only: scikit-learn warns and averages the present class
        warnings.simplefilter("ignore")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    scores = {name: float(fn(y_true, y_pred, zero_division=0)) for name, fn in
              (("precision", precision_score), ("recall", recall_score), ("f1", f1_score))}
    return {"balanced_accuracy": balanced, **scores, "real": int((y_true == 0).sum()), "fake": int((y_true == 1).sum())}
