"""X-AIGD's category-specific metrics, as X-AIGD's ``metrics/pixel.py`` and ``metrics/instance.py``
(Coxy7/X-AIGD) define them, over its 7 categories (``CATEGORIES``).

* **Fine-grained pixel** (category-specific PAD): for each category, the prediction submitted *for that
  category* against the ground truth of that category's polygons alone (every other category is
  background); TP / FP / FN pooled over every image, a missing prediction counting as all zero, then IoU,
  PixP, PixR, PixF1 per category (``XaigdPixelCounts``). Category agnostic: ``detector.metrics.xaigd``.
* **Instance** (P@t / R@t / F1@t, per category): the category's mask is dilated once by a 5 × 5 square;
  each 8-connected component of the dilated mask, intersected with the undilated one, is a ground-truth
  instance. A predicted box [x0, y0, x1, y1) of that category matches an instance when
  |box ∩ instance| / |box| > t (strictly greater; not IoU). Matching sets flags, it is no one-to-one
  assignment: TP = instances matched by any box, FP = boxes that match none, FN = instances matched by
  none. Counts are summed over images, then P@t = TP / (TP + FP), R@t = TP / (TP + FN), F1@t from
  them (0 where a denominator is 0). A box is invalid unless 0 ≤ x0 < x1 ≤ W and 0 ≤ y0 < y1 ≤ H both
  before and after ``int()`` truncation; it matches nothing (an FP) and is counted as
  ``invalid_prediction_boxes`` only in an image that has an instance of the category, as X-AIGD's loop does.

Masks use X-AIGD's encoding (255 artifact, 0 background); any other value (our ignore, see
``detector.metrics.xaigd.from_flawforge``) is neither: out of every instance and out of a box's area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import cv2
import numpy as np

from detector.metrics.xaigd import ARTIFACT, CATEGORIES, Polygon, XaigdPixelCounts, _div, polygon_mask

DILATION = np.ones((5, 5), np.uint8)
Box = Sequence[float]


@dataclass
class Instances:
    """One category's ground-truth instances in one image: ``labels`` j on instance j's pixels (1..n), else 0."""

    labels: np.ndarray
    count: int
    neither: np.ndarray | None = None  # pixels that are neither artifact nor background (None: there are none)


def category_masks(labels: Iterable[tuple[str, Polygon]], height: int, width: int) -> dict[str, np.ndarray]:
    """X-AIGD's ground truth per category: each category's polygons through ``polygon_mask`` (all 7 keys)."""
    polygons: dict[str, list[Polygon]] = {c: [] for c in CATEGORIES}
    for category, polygon in labels:
        if category not in polygons:
            raise ValueError(f"unknown X-AIGD category {category!r}; choose one of {CATEGORIES}")
        polygons[category].append(polygon)
    return {c: polygon_mask(p, height, width) for c, p in polygons.items()}


def gt_instances(mask: np.ndarray) -> Instances:
    """X-AIGD's instances of one category's mask: 8-connected components of the mask dilated once by a
    5 × 5 square, each intersected with the undilated mask."""
    mask = np.asarray(mask)
    artifact = (mask == ARTIFACT).astype(np.uint8)
    n, labels = cv2.connectedComponents(cv2.dilate(artifact, DILATION, iterations=1), connectivity=8)
    labels[artifact == 0] = 0
    neither = (mask != ARTIFACT) & (mask != 0)
    return Instances(labels, n - 1, neither if neither.any() else None)


def valid_box(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    """The box truncated to ints, or None when X-AIGD calls it invalid (outside the image or empty)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        return None
    x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def threshold_label(threshold: float) -> str:
    """X-AIGD's spelling of a threshold in column names: ``f"{t:g}"`` (0.5 → "0.5", P@0.5)."""
    return f"{threshold:g}"


@dataclass
class XaigdInstanceCounts:
    """Instance counts of one category at one threshold, plus X-AIGD's bookkeeping."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    evaluated_images: int = 0
    zero_prediction_images: int = 0
    invalid_prediction_boxes: int = 0

    def add(self, other: XaigdInstanceCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def report(self, threshold: float) -> dict[str, float | int]:
        """X-AIGD's row: P@t, R@t, F1@t, TP, FP, FN, evaluated_images, zero_prediction_images,
        invalid_prediction_boxes."""
        tp, fp, fn, t = self.true_positive, self.false_positive, self.false_negative, threshold_label(threshold)
        precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
        return {f"P@{t}": precision, f"R@{t}": recall, f"F1@{t}": _div(2 * precision * recall, precision + recall),
                "TP": tp, "FP": fp, "FN": fn, "evaluated_images": self.evaluated_images,
                "zero_prediction_images": self.zero_prediction_images,
                "invalid_prediction_boxes": self.invalid_prediction_boxes}


def instance_counts(instances: Instances, boxes: Sequence[Box], thresholds: Sequence[float]
                    ) -> list[XaigdInstanceCounts]:
    """One image and category: the counts at each threshold of ``boxes`` against ``instances``. A box whose
    every pixel is neither artifact nor background (our ignore) is not counted at all."""
    height, width = instances.labels.shape
    n = instances.count
    matched_gt = [np.zeros(n, bool) for _ in thresholds]
    unmatched_boxes, invalid = [0] * len(thresholds), 0
    for box in boxes:
        valid = valid_box(box, width, height)
        if valid is None:
            invalid += int(n > 0)
            unmatched_boxes = [u + 1 for u in unmatched_boxes]
            continue
        x0, y0, x1, y1 = valid
        area = (y1 - y0) * (x1 - x0)
        if instances.neither is not None:
            area -= int(instances.neither[y0:y1, x0:x1].sum())
            if area == 0:
                continue
        hits = np.bincount(instances.labels[y0:y1, x0:x1].ravel(), minlength=n + 1)[1:]
        for i, t in enumerate(thresholds):
            match = hits / area > t
            matched_gt[i] |= match
            unmatched_boxes[i] += int(not match.any())
    return [XaigdInstanceCounts(int(m.sum()), u, int(n - m.sum()), 1, int(not len(boxes)), invalid)
            for m, u in zip(matched_gt, unmatched_boxes)]


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
    """Overlap thresholds as X-AIGD accepts them: at least one, each in [0, 1]."""
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or not all(0 <= t <= 1 for t in thresholds):
        raise ValueError(f"overlap thresholds must be between 0 and 1, got {thresholds}")
    return thresholds


@dataclass
class XaigdCategoryTally:
    """Fine-grained pixel counts and instance counts (per overlap threshold) of every category, pooled over images."""

    thresholds: tuple[float, ...] = (0.5,)
    pixels: dict[str, XaigdPixelCounts] = field(default_factory=lambda: {c: XaigdPixelCounts() for c in CATEGORIES})
    instances: dict[float, dict[str, XaigdInstanceCounts]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.thresholds = check_thresholds(self.thresholds)
        self.instances = {t: {c: XaigdInstanceCounts() for c in CATEGORIES} for t in self.thresholds}

    def add_pixels(self, preds: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray]) -> None:
        """One image: the mask submitted for each category (a category without one: all zero) against
        each category's ground truth, both X-AIGD-encoded and of one shape."""
        for category in CATEGORIES:
            gt = gts[category]
            pred = preds.get(category)
            self.pixels[category].add(np.zeros(gt.shape, np.uint8) if pred is None else pred, gt)

    def add_instances(self, instances: Mapping[str, Instances], boxes: Mapping[str, Sequence[Box]]) -> None:
        """One image: the boxes submitted for each category against that category's instances."""
        for category in CATEGORIES:
            counts = instance_counts(instances[category], boxes.get(category, ()), self.thresholds)
            for t, c in zip(self.thresholds, counts):
                self.instances[t][category].add(c)

    def report(self) -> dict[str, dict]:
        """``fine_grained``: {category: X-AIGD pixel row}; ``instance``: {"0.5": {category: X-AIGD instance row}}."""
        return {"fine_grained": {c: counts.report() for c, counts in self.pixels.items()},
                "instance": {threshold_label(t): {c: counts.report(t) for c, counts in by_category.items()}
                             for t, by_category in self.instances.items()}}


def category_scores(scores: Mapping[str, float] | None) -> dict[str, float]:
    """The X-AIGD categories among a type head's scores (none for a category-agnostic detector)."""
    return {c: float(scores[c]) for c in CATEGORIES if scores and c in scores}


def submitted_categories(scores: Mapping[str, float] | None, threshold: float) -> tuple[str, ...]:
    """The categories one image's prediction is submitted under. A detector whose type head scores X-AIGD
    categories: those above ``threshold`` (the most probable one when none is). A category-agnostic detector
    (no category among ``scores``' keys): every category, so its one mask is scored against each category."""
    named = category_scores(scores)
    if not named:
        return CATEGORIES
    return tuple(c for c in CATEGORIES if named.get(c, -1.0) > threshold) or (max(named, key=named.__getitem__),)
