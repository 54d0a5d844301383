"""Each detector metric against an independent implementation (scikit-learn, torchmetrics,
scikit-image) or a hand count, edge cases included (empty masks, no predictions)."""

import numpy as np
import pytest
import torch
from skimage.measure import label as sk_label
from skimage.measure import regionprops
from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score, precision_score, recall_score
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex

from detector.metrics import (box_f1, box_prf, image_level, mask_to_boxes, pixel_per_image, pixel_pooled, rouge_l,
                              tokens)

RNG = np.random.default_rng(0)


def _masks(n: int, size: int = 16) -> tuple[list[np.ndarray], list[np.ndarray]]:
    gts = [RNG.choice([0, 1, 2, 255], size=(size, size), p=[0.55, 0.2, 0.15, 0.1]).astype(np.uint8) for _ in range(n)]
    preds = [RNG.random((size, size)) > 0.5 for _ in range(n)]
    return preds, gts


def test_image_level_matches_sklearn():
    y_true, y_pred = RNG.integers(0, 2, 200), RNG.integers(0, 2, 200)
    m = image_level(y_true, y_pred)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-6)
    assert m["precision"] == pytest.approx(precision_score(y_true, y_pred), abs=1e-6)
    assert m["recall"] == pytest.approx(recall_score(y_true, y_pred), abs=1e-6)
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-6)


def test_image_level_with_no_positive_predictions():
    y_true, y_pred = np.array([0, 0, 1, 1]), np.zeros(4, int)
    m = image_level(y_true, y_pred)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-6)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_pooled_pixel_metrics_match_sklearn_and_torchmetrics_with_ignore():
    preds, gts = _masks(4)
    valid = np.concatenate([(g != 255).ravel() for g in gts])
    truth = np.concatenate([(g > 0).ravel() for g in gts])[valid]
    guess = np.concatenate([p.ravel() for p in preds])[valid]
    m = pixel_pooled(preds, gts)
    assert m["iou"] == pytest.approx(jaccard_score(truth, guess), abs=1e-6)
    assert m["pix_precision"] == pytest.approx(precision_score(truth, guess), abs=1e-6)
    assert m["pix_recall"] == pytest.approx(recall_score(truth, guess), abs=1e-6)
    assert m["pix_f1"] == pytest.approx(f1_score(truth, guess), abs=1e-6)
    # torchmetrics with its own ignore_index on the stacked (N, H, W) masks
    target = torch.tensor(np.stack([np.where(g == 255, -1, g > 0) for g in gts]))
    stacked = torch.tensor(np.stack(preds)).long()
    assert m["iou"] == pytest.approx(float(BinaryJaccardIndex(ignore_index=-1)(stacked, target)), abs=1e-6)
    assert m["pix_f1"] == pytest.approx(float(BinaryF1Score(ignore_index=-1)(stacked, target)), abs=1e-6)


def test_pooled_pixel_metrics_without_positives_or_predictions():
    empty, gt = np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8)
    assert pixel_pooled([empty], [gt]) == {"iou": 0.0, "pix_precision": 0.0, "pix_recall": 0.0, "pix_f1": 0.0}
    gt[1, 1] = 1  # a positive, nothing predicted: same as sklearn's zero_division=0
    m = pixel_pooled([empty], [gt])
    assert m["pix_recall"] == recall_score(gt.ravel() > 0, empty.ravel(), zero_division=0) == 0.0
    assert m["pix_precision"] == precision_score(gt.ravel() > 0, empty.ravel(), zero_division=0) == 0.0


def test_per_image_metrics_match_sklearn_per_image():
    preds, gts = _masks(5)
    mious, f1s = [], []
    for pred, gt in zip(preds, gts):
        valid = gt != 255
        truth, guess = (gt > 0)[valid], pred[valid]
        mious.append(jaccard_score(truth, guess, average=None, labels=[1, 0]).mean())  # fg IoU, bg IoU
        f1s.append(f1_score(truth, guess))
    m = pixel_per_image(preds, gts)
    assert m["miou"] == pytest.approx(np.mean(mious), abs=1e-6)
    assert m["pixel_f1"] == pytest.approx(np.mean(f1s), abs=1e-6)


def test_per_image_metrics_hand_count_and_empty_cases():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1
    pred = np.zeros((4, 4), bool)
    pred[:2, :1] = True  # tp 2, fn 2, fp 0, tn 12
    clean, nothing = np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool)
    m = pixel_per_image([pred, nothing], [gt, clean])
    first_miou, first_f1 = (2 / 4 + 12 / 14) / 2, 2 * 2 / (2 * 2 + 2)
    assert m["miou"] == pytest.approx((first_miou + 1.0) / 2, abs=1e-6)  # clean & nothing predicted → 1
    assert m["pixel_f1"] == pytest.approx((first_f1 + 1.0) / 2, abs=1e-6)
    false_alarm = nothing.copy()
    false_alarm[0, 0] = True  # clean image, one false positive: fg IoU 0, bg IoU 15/16, F1 0
    m = pixel_per_image([false_alarm], [clean])
    assert m["miou"] == pytest.approx((0 + 15 / 16) / 2, abs=1e-6) and m["pixel_f1"] == 0.0
    missed = pixel_per_image([nothing], [gt])  # positives, nothing predicted
    assert missed["miou"] == pytest.approx((0 + 12 / 16) / 2, abs=1e-6) and missed["pixel_f1"] == 0.0


def test_mask_to_boxes_matches_skimage_regionprops():
    mask = RNG.random((40, 40)) > 0.93
    expected = sorted([r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]]
                      for r in regionprops(sk_label(mask, connectivity=2)))
    assert sorted(mask_to_boxes(mask)) == expected
    assert mask_to_boxes(np.zeros((5, 5), bool)) == []


def test_boxes_greedy_matching_hand_count():
    gt_mask = np.zeros((20, 20), bool)
    gt_mask[2:6, 2:6] = gt_mask[10:15, 10:15] = True
    gt = mask_to_boxes(gt_mask)
    assert gt == [[2, 2, 6, 6], [10, 10, 15, 15]]
    preds = [[2, 2, 6, 6], [0, 15, 3, 19]]  # one exact match, one false positive, one miss
    m = box_f1([preds], [gt])
    assert (m["box_precision"], m["box_recall"], m["box_f1"]) == (0.5, 0.5, 0.5)
    assert m["mean_best_iou"] == pytest.approx((1.0 + 0.0) / 2, abs=1e-6)
    # IoU of [10,10,15,15] with [11,10,15,15] is 20/25 = 0.8 ≥ 0.5; with [13,10,15,15] it is 10/25 < 0.5
    assert box_prf([[11, 10, 15, 15]], [[10, 10, 15, 15]]) == (1.0, 1.0, 1.0)
    assert box_prf([[13, 10, 15, 15]], [[10, 10, 15, 15]]) == (0.0, 0.0, 0.0)
    # one-to-one: two predictions on one ground truth match once
    assert box_prf([[10, 10, 15, 15], [10, 10, 15, 14]], [[10, 10, 15, 15]]) == pytest.approx((0.5, 1.0, 2 / 3))


def test_box_metrics_empty_cases():
    assert box_prf([], []) == (1.0, 1.0, 1.0)  # both empty → all 1
    assert box_prf([[0, 0, 2, 2]], []) == (0.0, 0.0, 0.0)
    assert box_prf([], [[0, 0, 2, 2]]) == (0.0, 0.0, 0.0)
    # averaged over images with ground truth only: a clean image with false boxes does not count
    m = box_f1([[[0, 0, 2, 2]], [[0, 0, 2, 2]]], [[], [[0, 0, 2, 2]]])
    assert (m["box_precision"], m["box_recall"], m["box_f1"], m["mean_best_iou"]) == (1.0, 1.0, 1.0, 1.0)
    assert box_f1([[]], [[]]) == {"box_precision": 0.0, "box_recall": 0.0, "box_f1": 0.0, "mean_best_iou": 0.0}


def test_rouge_l_hand_count():
    assert tokens("The cat's legs, five!") == ["the", "cat", "s", "legs", "five"]
    assert rouge_l("the cat has five legs", "The cat has five legs.") == 1.0
    assert rouge_l("a b c d", "a x c y") == pytest.approx(0.5)  # LCS 2 of 4 and 4
    assert rouge_l("a b c", "a c b c d") == pytest.approx(2 * 1.0 * 0.6 / 1.6)  # LCS 3: P 1, R 3/5
    assert rouge_l("", "a") == 0.0
