"""Each detector metric against an independent implementation or a hand count, edge cases included."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from detector.metrics import box_f1, image_level, mask_to_boxes, pixel_per_image, pixel_pooled, rouge_l

RNG = np.random.default_rng(0)


def test_image_level_matches_sklearn():
    y_true, y_pred = RNG.integers(0, 2, 200), RNG.integers(0, 2, 200)
    m = image_level(y_true, y_pred)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-6)
    assert m["precision"] == pytest.approx(precision_score(y_true, y_pred), abs=1e-6)
    assert m["recall"] == pytest.approx(recall_score(y_true, y_pred), abs=1e-6)
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-6)


def test_pooled_pixel_metrics_match_sklearn_with_ignore():
    gts = [RNG.choice([0, 1, 255], size=(16, 16), p=[0.6, 0.3, 0.1]).astype(np.uint8) for _ in range(4)]
    preds = [RNG.random((16, 16)) > 0.5 for _ in range(4)]
    valid = np.concatenate([(g != 255).ravel() for g in gts])
    truth = np.concatenate([(g > 0).ravel() for g in gts])[valid]
    guess = np.concatenate([p.ravel() for p in preds])[valid]
    m = pixel_pooled(preds, gts)
    assert m["iou"] == pytest.approx(jaccard_score(truth, guess), abs=1e-6)
    assert m["pix_f1"] == pytest.approx(f1_score(truth, guess), abs=1e-6)
    assert m["pix_precision"] == pytest.approx(precision_score(truth, guess), abs=1e-6)


def test_per_image_metrics_and_empty_cases():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2, :2] = 1
    pred = np.zeros((4, 4), bool)
    pred[:2, :1] = True  # tp 2, fn 2, fp 0, tn 12
    m = pixel_per_image([pred, np.zeros((4, 4), bool)], [gt, np.zeros((4, 4), np.uint8)])
    first_miou, first_f1 = (2 / 4 + 12 / 14) / 2, 2 * 2 / (2 * 2 + 2)
    assert m["miou"] == pytest.approx((first_miou + 1.0) / 2, abs=1e-6)  # empty & no prediction → 1
    assert m["pixel_f1"] == pytest.approx((first_f1 + 1.0) / 2, abs=1e-6)
    assert pixel_pooled([np.zeros((2, 2), bool)], [np.zeros((2, 2), np.uint8)])["pix_f1"] == 0.0


def test_boxes_greedy_matching():
    gt_mask = np.zeros((20, 20), bool)
    gt_mask[2:6, 2:6] = gt_mask[10:15, 10:15] = True
    assert mask_to_boxes(gt_mask) == [[2, 2, 6, 6], [10, 10, 15, 15]]
    preds = [[[2, 2, 6, 6], [0, 15, 3, 19]]]  # one exact match, one false positive, one miss
    m = box_f1(preds, [mask_to_boxes(gt_mask)])
    assert (m["box_precision"], m["box_recall"], m["box_f1"]) == (0.5, 0.5, 0.5)
    assert m["mean_best_iou"] == pytest.approx(0.5, abs=1e-6)
    assert box_f1([[]], [[]])["box_f1"] == 0.0  # images without GT boxes are not averaged
    assert box_f1([[]], [[[0, 0, 2, 2]]])["box_recall"] == 0.0


def test_rouge_l():
    assert rouge_l("the cat has five legs", "the cat has five legs") == 1.0
    assert rouge_l("a b c d", "a x c y") == pytest.approx(0.5)
    assert rouge_l("", "a") == 0.0
