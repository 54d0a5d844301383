"""The metric families artifact-detection papers report, each with its source and edge cases.

Masks are (H, W) arrays: prediction bool, ground truth with 0 = clean, > 0 = artifact, and 255 =
ignore (excluded from every pixel count). Boxes are [x0, y0, x1, y1] with exclusive ends.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
from scipy import ndimage

from shards.record import MASK_IGNORE as IGNORE


def _safe(num: float, den: float, empty: float = 0.0) -> float:
    return float(num / den) if den else empty


def image_level(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """X-AIGD image level: balanced accuracy = mean of real (0) and fake (1) accuracy; P, R, F1 of fake."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp, fp = int((y_true & y_pred).sum()), int((~y_true & y_pred).sum())
    fn, tn = int((y_true & ~y_pred).sum()), int((~y_true & ~y_pred).sum())
    accs = [a for a, n in ((_safe(tp, tp + fn), tp + fn), (_safe(tn, tn + fp), tn + fp)) if n]
    precision, recall = _safe(tp, tp + fp), _safe(tp, tp + fn)
    return {"balanced_accuracy": float(np.mean(accs)) if accs else 0.0, "precision": precision, "recall": recall,
            "f1": _safe(2 * precision * recall, precision + recall)}


PixelCounts = tuple[int, int, int, int]  # TP, FP, FN, TN over one image's non-ignored pixels


def pixel_counts(pred: np.ndarray, gt: np.ndarray) -> PixelCounts:
    """One image's confusion counts, ignore pixels excluded."""
    valid = gt != IGNORE
    truth, guess = (gt > 0) & valid, pred.astype(bool) & valid
    return (int((truth & guess).sum()), int((~truth & guess & valid).sum()), int((truth & ~guess).sum()),
            int((~truth & ~guess & valid).sum()))


def pooled_from_counts(counts: Iterable[PixelCounts]) -> dict[str, float]:
    """X-AIGD pixel level: TP/FP/FN pooled over all images, then IoU, PixP, PixR, PixF1."""
    tp = fp = fn = 0
    for a, b, c, _ in counts:
        tp, fp, fn = tp + a, fp + b, fn + c
    p, r = _safe(tp, tp + fp), _safe(tp, tp + fn)
    return {"iou": _safe(tp, tp + fp + fn), "pix_precision": p, "pix_recall": r, "pix_f1": _safe(2 * p * r, p + r)}


def per_image_from_counts(counts: Iterable[PixelCounts]) -> dict[str, float]:
    """LEGION / SynthScars: per image mIoU = mean(foreground IoU, background IoU) and pixel F1
    (1.0 when the image has no positives and none are predicted), averaged over images."""
    mious, f1s = [], []
    for tp, fp, fn, tn in counts:
        fg, bg = _safe(tp, tp + fp + fn, 1.0), _safe(tn, tn + fp + fn, 1.0)
        mious.append((fg + bg) / 2)
        f1s.append(1.0 if tp + fp + fn == 0 else _safe(2 * tp, 2 * tp + fp + fn))
    return {"miou": float(np.mean(mious)) if mious else 0.0, "pixel_f1": float(np.mean(f1s)) if f1s else 0.0}


def pixel_pooled(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """``pooled_from_counts`` of predicted and ground-truth masks."""
    return pooled_from_counts(pixel_counts(p, g) for p, g in zip(preds, gts))


def pixel_per_image(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """``per_image_from_counts`` of predicted and ground-truth masks."""
    return per_image_from_counts(pixel_counts(p, g) for p, g in zip(preds, gts))


def mask_to_boxes(mask: np.ndarray) -> list[list[int]]:
    """Connected components (8-connectivity) of a binary mask → their boxes."""
    labels, _ = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3)))
    return [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels) if s is not None]


def box_iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return _safe(inter, union)


def greedy_match(pred: list[list[int]], gt: list[list[int]], threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one matching, highest IoU first, pairs with IoU ≥ threshold."""
    pairs = sorted(((box_iou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(gt)), reverse=True)
    used_p, used_g, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < threshold:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i), used_g.add(j)
            out.append((i, j, iou))
    return out


def box_prf(pred: list[list[int]], gt: list[list[int]], threshold: float = 0.5) -> tuple[float, float, float]:
    """One image's box precision, recall and F1 after greedy matching (both empty → all 1)."""
    if not pred and not gt:
        return 1.0, 1.0, 1.0
    matched = len(greedy_match(pred, gt, threshold))
    p, r = _safe(matched, len(pred)), _safe(matched, len(gt))
    return p, r, _safe(2 * p * r, p + r)


def box_f1(preds: list[list[list[int]]], gts: list[list[list[int]]], threshold: float = 0.5) -> dict[str, float]:
    """ArtiAgent's ArtifactBench: greedy one-to-one matching at IoU ≥ 0.5 → P, R, F1 per image,
    averaged over images with ground-truth boxes; mean best IoU over all ground-truth boxes."""
    scores = [box_prf(pred, gt, threshold) for pred, gt in zip(preds, gts) if gt]
    best = [max((box_iou(p, g) for p in pred), default=0.0) for pred, gt in zip(preds, gts) for g in gt]
    ps, rs, fs = zip(*scores) if scores else ((), (), ())
    mean = lambda v: float(np.mean(v)) if len(v) else 0.0  # noqa: E731
    return {"box_precision": mean(ps), "box_recall": mean(rs), "box_f1": mean(fs), "mean_best_iou": mean(best)}


def tokens(text: str) -> list[str]:
    """Lowercase alphanumeric runs: punctuation is dropped, nothing is stemmed."""
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin 2004, β = 1) from the longest common subsequence of ``tokens``.

    ArtiAgent reports ROUGE-L with Porter stemming (``rouge-score``, ``use_stemmer=True``); this
    version does not stem, so inflected forms ("legs" / "leg") do not match and scores can be lower."""
    a, b = tokens(candidate), tokens(reference)
    if not a or not b:
        return 0.0
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    p, r = lcs / len(a), lcs / len(b)
    return _safe(2 * p * r, p + r)
