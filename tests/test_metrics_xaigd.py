"""X-AIGD's category-specific metrics (``detector.metrics.xaigd_instances``): hand-counted cases, the cases of the
official repository's own tests (Coxy7/X-AIGD ``metrics/tests/test_metrics.py``) with its values, a literal
re-reading of its instance rule on random inputs, and the per-category numbers of ``detector.eval`` on a shard."""


import cv2
import numpy as np
import pytest

from detector.eval import category_map, category_truth
from detector.eval import main as eval_main
from detector.metrics.xaigd import CATEGORIES
from detector.metrics.xaigd_instances import (XaigdCategoryTally, category_masks, gt_instances, instance_counts,
                                              submitted_categories, threshold_label, valid_box)
from shards.images import encode_png
from shards.record import Artifact, Sample
from shards.taxonomy import CATEGORY_NAMES
from shards.writer import write_shard

EDGE, TEXTURE, SEMANTICS = "low-level-edge_shape", "low-level-texture", "high-level-semantics"


def _mask(shape, *rects) -> np.ndarray:
    """An X-AIGD mask (255 artifact) with the given [y0, y1) × [x0, x1) rectangles."""
    mask = np.zeros(shape, np.uint8)
    for y0, y1, x0, x1 in rects:
        mask[y0:y1, x0:x1] = 255
    return mask


def _counts(mask, boxes, *thresholds):
    return [c.report(t) for c, t in zip(instance_counts(gt_instances(mask), boxes, thresholds), thresholds)]


# ------------------------------------------------------------------------------------ instances
def test_instances_are_components_of_the_once_dilated_mask():
    # a 5 × 5 dilation grows each region by 2 pixels: a gap of 4 columns closes, a gap of 5 does not
    merged = gt_instances(_mask((8, 16), (1, 4, 1, 4), (1, 4, 8, 11)))
    assert merged.count == 1
    assert merged.labels[1, 5] == 0 and (merged.labels > 0).sum() == 18  # the gap is no part of the instance
    assert gt_instances(_mask((8, 16), (1, 4, 1, 4), (1, 4, 9, 12))).count == 2
    assert gt_instances(np.zeros((4, 4), np.uint8)).count == 0


def test_official_repository_cases():
    # test_box_match_uses_intersection_over_prediction_area: 9 of the box's 16 pixels → 0.5625
    square = _mask((10, 10), (1, 4, 1, 4))
    at_half, at_six = _counts(square, [[1, 1, 5, 5]], 0.5, 0.6)
    assert (at_half["TP"], at_half["FP"]) == (1, 0) and (at_six["TP"], at_six["FP"], at_six["FN"]) == (0, 1, 1)
    # test_missing_instance_rows_are_zero_predictions / test_instance_metric_outputs_threshold_named_columns
    gt = category_masks([(EDGE, [(1, 1), (4, 1), (4, 4), (1, 4)])], 8, 8)
    tally = XaigdCategoryTally()
    tally.add_instances({c: gt_instances(m) for c, m in gt.items()}, {})
    row = tally.report()["instance"]["0.5"][EDGE]
    assert (row["zero_prediction_images"], row["FP"], row["FN"], row["evaluated_images"]) == (1, 0, 1, 1)
    assert tally.report()["instance"]["0.5"][TEXTURE]["FN"] == 0
    tally = XaigdCategoryTally((0.5,))
    tally.add_instances({c: gt_instances(m) for c, m in gt.items()}, {EDGE: [[1, 1, 4, 4]]})
    assert tally.report()["instance"]["0.5"][EDGE] == {
        "P@0.5": 1.0, "R@0.5": 1.0, "F1@0.5": 1.0, "TP": 1, "FP": 0, "FN": 0, "evaluated_images": 1,
        "zero_prediction_images": 0, "invalid_prediction_boxes": 0}


def test_a_match_needs_strictly_more_than_t_of_the_box():
    gt = _mask((4, 4), (0, 1, 0, 1))
    half = [[0, 0, 2, 1]]  # 2 pixels, 1 on the instance: 0.5
    strict, below = _counts(gt, half, 0.5, 0.49)
    assert (strict["TP"], strict["FP"], strict["FN"]) == (0, 1, 1)
    assert (below["TP"], below["FP"], below["FN"]) == (1, 0, 0)
    assert _counts(gt, [[0, 0, 1, 1]], 1.0)[0]["TP"] == 0  # 1 > 1 is false: t = 1 never matches


def test_one_box_over_two_instances_and_two_boxes_on_one():
    two = _mask((4, 16), (0, 3, 0, 3), (0, 3, 8, 11))  # two 3 × 3 instances 5 columns apart
    assert gt_instances(two).count == 2
    wide = [[0, 0, 11, 3]]  # 33 pixels, 9 on each instance: 0.27 each
    at_half, at_quarter = _counts(two, wide, 0.5, 0.25)
    assert (at_half["TP"], at_half["FP"], at_half["FN"], at_half["P@0.5"], at_half["F1@0.5"]) == (0, 1, 2, 0.0, 0.0)
    # flags, not a one-to-one assignment: one box can match both instances, TP counts instances
    assert (at_quarter["TP"], at_quarter["FP"], at_quarter["FN"]) == (2, 0, 0)
    assert at_quarter["P@0.25"] == 1.0 and at_quarter["R@0.25"] == 1.0
    both_on_one = _counts(two, [[0, 0, 3, 3], [1, 1, 3, 3], [12, 0, 16, 4]], 0.5)[0]
    assert (both_on_one["TP"], both_on_one["FP"], both_on_one["FN"]) == (1, 1, 1)
    assert both_on_one["P@0.5"] == 0.5 and both_on_one["R@0.5"] == 0.5


def test_no_ground_truth_and_no_predictions():
    empty = np.zeros((8, 8), np.uint8)
    # no instance: every box is an FP; an invalid box is not counted as invalid there (X-AIGD's loop)
    row = _counts(empty, [[0, 0, 4, 4], [0, 0, 9, 9]], 0.5)[0]
    assert (row["TP"], row["FP"], row["FN"], row["invalid_prediction_boxes"]) == (0, 2, 0, 0)
    assert (row["P@0.5"], row["R@0.5"], row["F1@0.5"]) == (0.0, 0.0, 0.0)
    row = _counts(empty, [], 0.5)[0]
    assert row == {"P@0.5": 0.0, "R@0.5": 0.0, "F1@0.5": 0.0, "TP": 0, "FP": 0, "FN": 0, "evaluated_images": 1,
                   "zero_prediction_images": 1, "invalid_prediction_boxes": 0}


def test_invalid_and_truncated_boxes():
    assert valid_box([0.9, 0.9, 2.5, 2.5], 8, 8) == (0, 0, 2, 2)
    for box in ([0, 0, 9, 4], [-1, 0, 4, 4], [4, 0, 2, 4], [0, 0, 0, 4], [0.2, 0, 0.8, 4], [0, 0, float("nan"), 4]):
        assert valid_box(box, 8, 8) is None, box
    gt = _mask((8, 8), (0, 2, 0, 2))
    row = _counts(gt, [[0, 0, 9, 4], [0.2, 0, 0.8, 4], [0.5, 0.5, 2.9, 2.9]], 0.5)[0]
    assert (row["TP"], row["FP"], row["FN"], row["invalid_prediction_boxes"]) == (1, 2, 0, 2)


def test_ignore_pixels_are_out_of_instances_and_of_the_box_area():
    gt = _mask((4, 8), (0, 4, 0, 2))  # 8 artifact pixels
    gt[:, 2:5] = 128  # 12 "neither" pixels (our ignore)
    assert _counts(gt, [[0, 0, 6, 4]], 0.5)[0]["TP"] == 1  # 8 / (24 - 12) > 0.5
    assert _counts(gt, [[2, 0, 5, 4]], 0.5)[0]["FP"] == 0  # a box on ignore pixels alone is not counted
    assert gt_instances(gt).count == 1 and (gt_instances(gt).labels > 0).sum() == 8


def test_counts_pool_over_images_before_the_ratios():
    tally = XaigdCategoryTally((0.5,))
    three = _mask((8, 32), (0, 2, 0, 2), (0, 2, 10, 12), (0, 2, 20, 22))
    one = _mask((8, 32), (0, 2, 0, 2))
    for gt, boxes in ((three, [[0, 0, 2, 2], [10, 0, 12, 2], [20, 0, 22, 2]]), (one, [[28, 4, 32, 8]])):
        tally.add_instances({c: gt_instances(gt if c == EDGE else np.zeros_like(gt)) for c in CATEGORIES},
                            {EDGE: boxes})
    row = tally.report()["instance"]["0.5"][EDGE]
    assert (row["TP"], row["FP"], row["FN"], row["evaluated_images"]) == (3, 1, 1, 2)
    assert row["P@0.5"] == 0.75 and row["R@0.5"] == 0.75  # pooled; the mean of per-image P would be 0.5


def _literal(mask: np.ndarray, boxes: list, t: float) -> tuple[int, int, int, int]:
    """The README's instance rule read literally: one component at a time, one box at a time."""
    height, width = mask.shape
    n, components = cv2.connectedComponents(cv2.dilate(mask, np.ones((5, 5), np.uint8)), connectivity=8)
    box_hit, gt_hit, invalid = [False] * len(boxes), [False] * (n - 1), 0
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        for j in range(1, n):
            ok = 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            if ok:
                x0, y0, x1, y1 = int(x0), int(y0), int(x1), int(y1)
                ok = x0 < x1 and y0 < y1
            if not ok:
                invalid += 1
                break
            box = np.zeros_like(mask)
            box[y0:y1, x0:x1] = 1
            inside = int(((components == j) & (mask == 255) & (box == 1)).sum())
            if inside / int(box.sum()) > t:
                box_hit[i] = gt_hit[j - 1] = True
    return sum(gt_hit), box_hit.count(False), gt_hit.count(False), invalid


def test_agrees_with_the_literal_rule_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(6, 24, 2)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(0, 5)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            mask[y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] = 255
        boxes = [list(rng.uniform(-2, max(h, w) + 2, 4)) for _ in range(rng.integers(0, 6))]
        boxes += [[x0, y0, x0 + dx, y0 + dy] for x0, y0, dx, dy in rng.uniform(0, 8, (3, 4))]
        for t in (0.0, 0.3, 0.5, 0.9):
            row = _counts(mask, boxes, t)[0]
            assert (row["TP"], row["FP"], row["FN"], row["invalid_prediction_boxes"]) == _literal(mask, boxes, t)


# ----------------------------------------------------------------------------------- fine-grained pixels
def test_fine_grained_pixels_score_each_category_against_its_own_polygons():
    square = [(1, 1), (3, 1), (3, 3), (1, 3)]  # 9 pixels
    gts = category_masks([(EDGE, square), (SEMANTICS, [(5, 5), (6, 5), (6, 6), (5, 6)])], 8, 8)  # 9 and 4 pixels
    assert (gts[EDGE] == 255).sum() == 9 and (gts[SEMANTICS] == 255).sum() == 4 and not gts[TEXTURE].any()
    pred = _mask((8, 8), (1, 7, 1, 7))  # 36 pixels: both regions
    tally = XaigdCategoryTally()
    tally.add_pixels({EDGE: pred, SEMANTICS: pred}, gts)
    fine = tally.report()["fine_grained"]
    assert fine[EDGE]["IoU"] == 9 / 36 and fine[EDGE]["PixR"] == 1.0  # the semantics pixels are FP for edge
    assert fine[SEMANTICS]["PixP"] == 4 / 36 and fine[SEMANTICS]["PixF1"] == pytest.approx(2 * (4 / 36) / (1 + 4 / 36))
    assert fine[TEXTURE] == {"IoU": 0.0, "PixP": 0.0, "PixR": 0.0, "PixF1": 0.0, "evaluated_images": 1,
                             "zero_prediction_images": 1}
    with pytest.raises(ValueError, match="unknown X-AIGD category"):
        category_masks([("low-level-text", square)], 8, 8)


def test_submission_rule_and_thresholds():
    assert submitted_categories({"add": 0.9, "distort": 0.1}, 0.5) == CATEGORIES  # category agnostic
    assert submitted_categories(None, 0.5) == CATEGORIES == CATEGORY_NAMES  # the taxonomy's order
    assert submitted_categories({EDGE: 0.7, TEXTURE: 0.2, SEMANTICS: 0.6}, 0.5) == (EDGE, SEMANTICS)
    assert submitted_categories({EDGE: 0.3, TEXTURE: 0.4}, 0.5) == (TEXTURE,)  # none above: the most probable
    assert [threshold_label(t) for t in (0.5, 0.25, 1.0)] == ["0.5", "0.25", "1"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        XaigdCategoryTally((1.5,))


# -------------------------------------------------------------------------------------- on our shards
def _row() -> Sample:
    """A 16² accepted row: an added part (semantics), a permuted part (texture), a failed artifact's ignore strip."""
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6], labels[10:14, 10:14], labels[0:2, 12:16] = 1, 2, 255
    image = encode_png(np.full((16, 16, 3), 128, np.uint8))
    return Sample(sample_id="s", source_id="photo", seed=0, status="accepted", real_image=image, clean_image=image,
                  image=image, mask=encode_png(labels),
                  artifacts=[Artifact(tool="add", entity="dog", bbox=[2, 2, 6, 6], accepted=True),
                             Artifact(tool="distort", kernel="permute", entity="cat", bbox=[10, 10, 14, 14],
                                      accepted=True),
                             Artifact(tool="add", entity="cat", accepted=False)])


def test_category_truth_of_a_shard_row():
    categories = category_map(_row(), (16, 16))
    assert categories[3, 3] == CATEGORIES.index(SEMANTICS) + 1 and categories[11, 11] == CATEGORIES.index(TEXTURE) + 1
    truth, instances = category_truth(categories)
    assert (truth[SEMANTICS] == 255).sum() == 16 and (truth[TEXTURE] == 255).sum() == 16
    assert truth[SEMANTICS][11, 11] == 0 and truth[EDGE][0, 12] == 128 and (truth[EDGE] == 128).sum() == 8
    assert instances[SEMANTICS].count == 1 and instances[EDGE].count == 0
    assert not category_map(None, (16, 16)).any()


def test_shard_evaluation_reports_xaigd_categories(everywhere, tmp_path):
    write_shard([_row()], tmp_path / "run" / "data" / "part.parquet")
    m = eval_main(["--shards", str(tmp_path / "run"), "--checkpoint", str(everywhere), "--split", "all",
                   "--out", str(tmp_path / "m.json"), "--xaigd-overlap-threshold", "0.5", "0.05"])
    assert m["xaigd_category_rule"] == "every_category" and m["n_images"] == 2
    model = m["model"]
    # artifact image: 16 semantics pixels, 256 - 8 ignore - 16 = 232 FP; clean image: 256 FP
    assert model["xaigd_fine_grained"][SEMANTICS]["IoU"] == pytest.approx(16 / (16 + 232 + 256))
    edge = model["xaigd_fine_grained"][EDGE]
    assert edge["PixP"] == 0.0 and edge["evaluated_images"] == 2
    # one whole-image box per image: 16 / (256 - 8) = 0.065 of it lies on each instance
    half, low = model["xaigd_instance"]["0.5"][SEMANTICS], model["xaigd_instance"]["0.05"][TEXTURE]
    assert (half["TP"], half["FP"], half["FN"]) == (0, 2, 1)
    assert (low["TP"], low["FP"], low["FN"], low["P@0.05"], low["R@0.05"]) == (1, 1, 0, 0.5, 1.0)
    background = m["baselines"]["all_background"]["xaigd_instance"]["0.5"][TEXTURE]
    assert (background["FN"], background["FP"], background["zero_prediction_images"]) == (1, 0, 2)
    assert "xaigd_instance" not in m["baselines"]["random"]


def test_a_category_head_submits_its_mask_under_the_categories_it_scores(tmp_path):
    """The bundled detector's type head scores X-AIGD's categories: its mask goes under those above the
    threshold only, so the other categories see no prediction at all."""
    import torch

    from detector.model import TYPE_NAMES, ArtifactDetector, DetectorConfig, save_detector

    model = ArtifactDetector(DetectorConfig())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fuse[-1].bias.fill_(8.0)
        model.image_head.bias.fill_(8.0)
        model.type_head.bias.fill_(-8.0)
        model.type_head.bias[TYPE_NAMES.index(SEMANTICS)] = 8.0
    checkpoint = save_detector(model, tmp_path / "semantics")
    write_shard([_row()], tmp_path / "run" / "data" / "part.parquet")
    m = eval_main(["--shards", str(tmp_path / "run"), "--checkpoint", str(checkpoint), "--split", "all",
                   "--out", str(tmp_path / "m.json")])
    assert m["xaigd_category_rule"] == "type_head"
    fine, instances = m["model"]["xaigd_fine_grained"], m["model"]["xaigd_instance"]["0.5"]
    assert fine[SEMANTICS]["IoU"] == pytest.approx(16 / (16 + 232 + 256))  # as the category-agnostic mask
    assert (fine[TEXTURE]["PixP"], fine[TEXTURE]["IoU"]) == (0.0, 0.0)
    assert instances[SEMANTICS]["FP"] == 2 and instances[TEXTURE]["FP"] == 0  # nothing submitted there
