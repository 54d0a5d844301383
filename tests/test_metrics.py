"""The metric families against independent implementations (scikit-learn, torchmetrics, scikit-image) or a hand
count, and the benchmarks' own definitions on the cases where our earlier conventions differed (issue 13): each
asserted value is the one the authors' evaluation code gives."""

import numpy as np
import pytest
import torch
from skimage.measure import label as sk_label
from skimage.measure import regionprops
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score, jaccard_score, precision_score,
                             recall_score)
from torchmetrics.classification import BinaryF1Score, BinaryJaccardIndex

from detector.metrics import artifactbench as ab
from detector.metrics import legion
from detector.metrics import xaigd
from detector.metrics.on_shards import box_f1, image_level, mask_to_boxes, per_image_from_counts, pixel_per_image, pixel_pooled

RNG = np.random.default_rng(0)


def _masks(n: int, size: int = 16) -> tuple[list[np.ndarray], list[np.ndarray]]:
    gts = [RNG.choice([0, 1, 2, 255], size=(size, size), p=[0.55, 0.2, 0.15, 0.1]).astype(np.uint8) for _ in range(n)]
    preds = [RNG.random((size, size)) > 0.5 for _ in range(n)]
    return preds, gts


# --------------------------------------------------------------------------------- shards (our masks)
def test_image_level_matches_sklearn():
    y_true, y_pred = RNG.integers(0, 2, 200), RNG.integers(0, 2, 200)
    m = image_level(y_true, y_pred)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-6)
    assert m["precision"] == pytest.approx(precision_score(y_true, y_pred), abs=1e-6)
    assert m["recall"] == pytest.approx(recall_score(y_true, y_pred), abs=1e-6)
    assert m["f1"] == pytest.approx(f1_score(y_true, y_pred), abs=1e-6)
    m = image_level(np.array([0, 0, 1, 1]), np.zeros(4, int))
    assert m["balanced_accuracy"] == 0.5 and (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


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
    target = torch.tensor(np.stack([np.where(g == 255, -1, g > 0) for g in gts]))
    stacked = torch.tensor(np.stack(preds)).long()
    assert m["iou"] == pytest.approx(float(BinaryJaccardIndex(ignore_index=-1)(stacked, target)), abs=1e-6)
    assert m["pix_f1"] == pytest.approx(float(BinaryF1Score(ignore_index=-1)(stacked, target)), abs=1e-6)
    empty = np.zeros((4, 4), bool)
    assert pixel_pooled([empty], [np.zeros((4, 4), np.uint8)]) == {"iou": 0.0, "pix_precision": 0.0,
                                                                   "pix_recall": 0.0, "pix_f1": 0.0}


def test_per_image_metrics_on_shards_average_over_positives_with_legion_rules():
    preds, gts = _masks(5)
    mious, f1s = [], []
    for pred, gt in zip(preds, gts):
        valid = gt != 255
        truth, guess = (gt > 0)[valid], pred[valid]
        mious.append(jaccard_score(truth, guess, average=None, labels=[1, 0]).mean())  # both classes present
        f1s.append(f1_score(truth, guess))
    m = pixel_per_image(preds, gts)
    assert m["positive_images"] == 5
    assert m["miou"] == pytest.approx(np.mean(mious), abs=1e-5) and m["pixel_f1"] == pytest.approx(np.mean(f1s))
    # a clean image is left out of the default average and enters the *_all_images one with LEGION's rules
    clean, nothing = np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool)
    gt = clean.copy()
    gt[:2, :2] = 1
    pred = nothing.copy()
    pred[:2, :1] = True  # TP 2, FN 2, TN 12
    counts = [(2, 0, 2, 12), (0, 0, 0, 16)]
    assert pixel_per_image([pred, nothing], [gt, clean]) == pytest.approx(
        {"miou": (2 / (4 + 1e-6) + 12 / (14 + 1e-6)) / 2, "pixel_f1": 2 / 3, "positive_images": 1})
    everything = per_image_from_counts(counts, positives_only=False)
    assert everything["all_images"] == 2
    assert everything["miou_all_images"] == pytest.approx(((2 / 4 + 12 / 14) / 2 + 0.5) / 2, abs=1e-6)
    assert everything["pixel_f1_all_images"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_mask_to_boxes_matches_skimage_regionprops():
    mask = RNG.random((40, 40)) > 0.93
    expected = sorted([r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regionprops(sk_label(mask, connectivity=2)))
    assert sorted(mask_to_boxes(mask)) == expected
    assert mask_to_boxes(np.zeros((5, 5), bool)) == []


def test_box_metrics_on_shards_are_artifactbench_over_images_with_boxes():
    gts = [[[0, 0, 10, 10], [0, 0, 10, 7]], [], [[0, 0, 10, 10], [20, 20, 30, 30]]]
    preds = [[[0, 0, 10, 8], [0, 3, 10, 12]], [[0, 0, 5, 5]], [[0, 0, 10, 10]]]
    m = box_f1(preds, gts)
    assert m["box_images"] == 2  # the image without boxes is not averaged
    assert m["box_f1"] == pytest.approx((0.5 + 2 / 3) / 2) and m["box_iou"] == pytest.approx((0.8375 + 1.0) / 2)
    assert box_f1([[]], [[]]) == {"box_precision": 0.0, "box_recall": 0.0, "box_f1": 0.0, "box_iou": 0.0,
                                  "box_images": 0}


# ------------------------------------------------------------------------------------------- LEGION
def test_legion_empty_class_scores_zero_and_empty_image_half():
    empty = np.zeros((4, 4), np.uint8)
    s = legion.image_scores(empty, empty)  # LEGION 0.5 (our old convention: 1.0)
    assert s["miou"] == pytest.approx(0.5, abs=1e-6) and s["miou"] < 0.5
    assert s["f1_score"] == 1.0 and s["iou"] == 0.0 and s["miou_without_background"] == 0.0
    full = np.ones((4, 4), np.uint8)  # no background anywhere: that class scores 0 too
    assert legion.image_scores(full, full)["miou"] == pytest.approx(0.5, abs=1e-6)
    gt = empty.copy()
    gt[:2, :2] = 1  # nothing predicted: artifact class 0, background 12/16
    s = legion.image_scores(empty, gt)
    assert s["miou"] == pytest.approx(12 / 16 / 2, abs=1e-6) and s["f1_score"] == 0.0


def test_legion_scores_match_sklearn_when_both_classes_occur():
    preds, gts = [RNG.random((12, 12)) > 0.5 for _ in range(4)], [RNG.random((12, 12)) > 0.6 for _ in range(4)]
    m = legion.legion_scores(preds, gts)
    assert m["images"] == 4
    assert m["miou"] == pytest.approx(np.mean([jaccard_score(g.ravel(), p.ravel(), average="macro")
                                               for p, g in zip(preds, gts)]), abs=1e-5)
    assert m["f1_score"] == pytest.approx(np.mean([f1_score(g.ravel(), p.ravel()) for p, g in zip(preds, gts)]))
    with pytest.raises(ValueError, match="shapes differ"):
        legion.image_scores(np.zeros((2, 2)), np.zeros((3, 3)))


def test_synthscars_polygons_truncate_through_float32_and_fill_inclusively():
    mask = legion.synthscars_mask([[1.9, 1.2, 3.7, 1.0, 3.2, 3.99, 1.0, 3.0]], 6, 6)
    assert mask[1:4, 1:4].all() and mask.sum() == 9  # (1,1)-(3,3) inclusive
    # 3.9999999999 is 4.0 as float32: the polygon reaches row / column 4 (int() of the float64 would give 3)
    almost_four = 3.9999999999
    assert legion.synthscars_mask([[0, 0, almost_four, 0, almost_four, almost_four, 0, almost_four]], 6, 6).sum() == 25
    with pytest.raises(ValueError, match="malformed polygon"):
        legion.synthscars_mask([[1, 2, 3]], 6, 6)
    assert legion.heatmap_mask(np.array([[0, 1], [255, 0]])).tolist() == [[0, 1], [1, 0]]


# ------------------------------------------------------------------------------------------- X-AIGD
def test_xaigd_pixel_metrics_official_example():
    gt = xaigd.polygon_mask([[(1, 1), (3, 1), (3, 3), (1, 3)]], 8, 8)  # 9 pixels
    pred = np.zeros((8, 8), np.uint8)
    pred[1:6, 1:6] = 255  # 25 pixels
    m = xaigd.xaigd_pixel([pred], [gt])
    assert m == {"IoU": 0.36, "PixP": 0.36, "PixR": 1.0, "PixF1": pytest.approx(0.5294117647058824),
                 "evaluated_images": 1, "zero_prediction_images": 0}
    assert xaigd.xaigd_pixel([np.zeros((8, 8), np.uint8)], [gt])["zero_prediction_images"] == 1


def test_xaigd_polygons_truncate_clip_and_reject_short_ones():
    truncated = xaigd.polygon_mask([[(1.9, 1.9), (5.9, 1.9), (1.9, 5.9)]], 8, 8)
    assert np.array_equal(truncated, xaigd.polygon_mask([[(1, 1), (5, 1), (1, 5)]], 8, 8))
    assert set(np.unique(truncated)) == {0, 255}
    clipped = xaigd.polygon_mask([[(-5, -5), (20, -5), (20, 20), (-5, 20)]], 4, 6)
    assert clipped.all()
    with pytest.raises(ValueError, match="at least 3 points"):
        xaigd.polygon_mask([[(1, 1), (2, 2)]], 8, 8)


def test_xaigd_mask_encoding_255_is_artifact_not_ignore():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 255  # an X-AIGD mask: 255 = artifact
    pred = gt > 0
    assert xaigd.xaigd_pixel([xaigd.binarize(pred.astype(np.uint8) * 255)], [gt])["IoU"] == 1.0
    assert pixel_pooled([pred], [gt])["iou"] == 0.0  # fed to our evaluator as is, 255 reads as "ignore"
    assert pixel_pooled([pred], [xaigd.to_flawforge(gt)])["iou"] == 1.0
    ours = np.array([[0, 1], [2, 255]], np.uint8)  # ignore → 128: counted as neither class
    assert xaigd.from_flawforge(ours).tolist() == [[0, 255], [255, 128]]
    everything = np.full((2, 2), 255, np.uint8)
    assert xaigd.xaigd_pixel([everything], [xaigd.from_flawforge(ours)])["PixP"] == pytest.approx(2 / 3)


def test_xaigd_transforms_and_image_level():
    assert xaigd.transformed_shape(6, 10, "keep-original-size") == (6, 10)
    assert xaigd.transformed_shape(6, 10, "resize256-crop224") == (224, 224)
    assert xaigd.transformed_shape(6, 10, "resize518-crop518") == (518, 518)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    out = xaigd.transform_mask(mask, "resize256-crop224")
    assert out.shape == (224, 224) and set(np.unique(out)) == {0, 255}
    assert xaigd.transform_mask(np.zeros((6, 10), np.uint8), "resize518-crop518").shape == (518, 518)
    assert xaigd.binarize(np.array([127, 128])).tolist() == [0, 255]
    m = xaigd.xaigd_image_level([1, 1, 1, 1], [1, 0, 1, 1])  # labelled split: fakes only
    assert m["balanced_accuracy"] == 0.75 == m["recall"] and m["precision"] == 1.0 and (m["real"], m["fake"]) == (0, 4)


# ------------------------------------------------------------------------------------ ArtifactBench
def test_artifactbench_box_f1_matches_in_ground_truth_order():
    gt, pred = [[0, 0, 10, 10], [0, 0, 10, 7]], [[0, 0, 10, 8], [0, 3, 10, 12]]
    # IoUs: gt0–p0 0.8, gt0–p1 0.583, gt1–p0 0.875, gt1–p1 0.333. gt0 takes p0 first, gt1 is left with p1:
    # official F1 0.5 (matching the highest IoU first would pair gt1–p0 and gt0–p1: F1 1.0)
    s = ab.localize(gt, pred)
    assert (s.tp, s.fp, s.fn, s.precision, s.recall, s.f1) == (1, 1, 1, 0.5, 0.5, 0.5)
    assert s.iou == pytest.approx((0.8 + 0.875) / 2)


def test_artifactbench_localisation_miou_skips_missed_boxes_and_zeroes_non_overlap():
    s = ab.localize([[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10]])  # one hit at IoU 1, one miss
    assert s.iou == 1.0 and s.recall == 0.5 and s.precision == 1.0  # official 1.0 (our old pooled mean: 0.5)
    assert ab.localize([[0, 0, 10, 10]], [[50, 50, 60, 60]]) == ab.Localization()  # IoU 0: every score 0
    assert ab.localize([[0, 0, 10, 10]], []) == ab.Localization()
    assert ab.greedy_gt_order([], []).f1 == 1.0 and ab.greedy_gt_order([], [[0, 0, 1, 1]]).recall == 1.0
    assert ab.box_iou([0, 0, 2, 2], [2, 2, 4, 4]) == 0.0
    assert ab.box_iou([0, 0, 2, 2], [1, 0, 3, 2]) == pytest.approx(1 / 3)
    samples = [ab.Sample(True, [[0, 0, 10, 10], [20, 20, 30, 30]], [], "", [[0, 0, 10, 10]]),
               ab.Sample(True, [[0, 0, 10, 10]], [], "", []), ab.Sample(False, [], [], "", [[0, 0, 4, 4]])]
    loc = ab.score(samples)["localization"]
    assert loc == pytest.approx({"mean_iou": 0.5, "mean_precision": 0.5, "mean_recall": 0.25,
                                 "mean_f1": (2 / 3) / 2, "valid_samples": 2})


def test_artifactbench_detection_is_plain_accuracy_and_positive_f1():
    y_true, y_pred = [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]
    m = ab.detection(y_true, y_pred)
    assert m["accuracy"] == 0.8 == accuracy_score(y_true, y_pred)  # balanced accuracy would be 0.5
    assert m["f1"] == pytest.approx(8 / 9) and m["precision"] == 0.8 and m["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((8 / 9 + 0.0) / 2) and (m["tp"], m["fp"], m["fn"], m["tn"]) == (4, 1, 0, 0)


def test_artifactbench_rouge_l_stems_and_explanations_average_as_the_authors_do():
    scorer = ab.TextScorer()
    assert scorer.rouge_l("the dog has an extra leg", "the dog has extra legs") == pytest.approx(10 / 11)  # 0.909
    # without stemming the LCS is "the dog has extra": P 4/5, R 4/6 → 0.727 (our old hand-written score)
    samples = [
        ab.Sample(True, [[0, 0, 10, 10], [20, 20, 30, 30]], ["a bent leg", "a missing ear"], "two flaws",
                  [[0, 0, 10, 10]], ["a bent leg"], "two flaws"),
        ab.Sample(False, [], [], "no artifacts here", [], [], "no artifacts here"),
        ab.Sample(True, [[0, 0, 10, 10]], ["x"], "one flaw", [], [], ""),
    ]
    e = ab.score(samples, scorer)["explanation"]
    assert (e["global_rouge_l"], e["global_samples"]) == (pytest.approx(2 / 3), 3)  # over all samples, empty → 0
    # sample 1: one of two boxes matched, ROUGE 1 → 1/2; sample 3: no prediction → 0; over the 2 positives
    assert (e["local_rouge_l"], e["local_samples"], e["local_pairs"]) == (pytest.approx(0.25), 2, 1)
    # many-to-one: one wide prediction serves both boxes, each pair scored
    wide = ab.Sample(True, [[0, 0, 10, 10], [10, 0, 20, 10]], ["left", "right"], "", [[0, 0, 20, 10]], ["left"], "")
    assert ab.score([wide], scorer)["explanation"]["local_rouge_l"] == pytest.approx((1.0 + 0.0) / 2)
    # a reference with boxes but no box texts (ArtiBench's bboxes) is no local sample, not a zero
    textless = ab.Sample(True, [[0, 0, 10, 10]], [], "one flaw", [[0, 0, 10, 10]], ["a bent leg"], "one flaw")
    e = ab.score([wide, textless], scorer)["explanation"]
    assert (e["local_rouge_l"], e["local_samples"]) == (pytest.approx(0.5), 1)


def test_pixel_auroc_streamed_from_histograms_equals_scikit_learn():
    from sklearn.metrics import roc_auc_score

    from detector.metrics.on_shards import PixelRanks
    rng = np.random.default_rng(0)
    ranks, scores, labels = PixelRanks(), [], []
    for _ in range(4):
        gt = (rng.random((24, 24)) < 0.3).astype(np.uint8)
        gt[0, :6] = 255  # ignore pixels count for neither class
        probability = np.clip(rng.normal(0.4 + 0.2 * (gt == 1), 0.2), 0, 1)
        ranks.add(probability, gt)
        valid = gt != 255
        scores.append(probability[valid])
        labels.append(gt[valid])
    assert ranks.auroc() == pytest.approx(roc_auc_score(np.concatenate(labels), np.concatenate(scores)), abs=1e-3)
    constant = PixelRanks()
    constant.add(np.full((8, 8), 0.3), np.eye(8, dtype=np.uint8))
    assert constant.auroc() == 0.5
