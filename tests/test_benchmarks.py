"""``--benchmark`` evaluation on small folders in each benchmark's published layout (X-AIGD parquet, SynthScars
images + annotation JSON, LEGION's RichHF-18K heatmaps, ArtifactBench metadata + images): a detector that
predicts "artifact everywhere" and a VLM's replies give hand-countable metrics, and every bad input is counted."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from detector.benchmarks import BadInputs
from detector.eval import main as eval_main
from detector.metrics_legion import scores_from_counts
from detector.metrics_xaigd import polygon_mask, transform_mask
from detector.vlm_benchmarks import replies_by_id
from detector.vlm_eval import main as vlm_main

SQUARE = [[1, 1], [3, 1], [3, 3], [1, 3]]  # filled inclusively: the 3 × 3 pixels at rows / columns 1..3


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- layouts
@pytest.fixture(scope="module")
def xaigd_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("xaigd")
    (root / "data").mkdir()
    label = lambda category, points: {"label": category, "points": points}  # noqa: E731
    rows = [
        dict(generator="g1", uid="u1", width=8, height=8, labels=[label("high-level-semantics", SQUARE)],
             image={"bytes": _png(8, 8), "path": None}),
        dict(generator="g2", uid="u2", width=6, height=4, labels=[], image={"bytes": _png(6, 4), "path": None}),
        dict(generator="g2", uid="bad-category", width=8, height=8, labels=[label("low-level-text", SQUARE)],
             image={"bytes": _png(8, 8), "path": None}),
        dict(generator="g2", uid="two-points", width=8, height=8, labels=[label("low-level-color", SQUARE[:2])],
             image={"bytes": _png(8, 8), "path": None}),
        dict(generator="g1", uid="wrong-size", width=10, height=10, labels=[],
             image={"bytes": _png(8, 8), "path": None}),
        dict(generator="g1", uid="broken", width=8, height=8, labels=[], image={"bytes": b"not a png", "path": None}),
        dict(generator="g1", uid="no-image", width=8, height=8, labels=[], image=None),
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "labeled_test-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module")
def synthscars_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthscars")
    images = root / "test" / "images"
    images.mkdir(parents=True)
    for name, (w, h) in {"a.png": (8, 8), "ba.png": (8, 8), "c.png": (6, 4), "e.png": (8, 8)}.items():
        (images / name).write_bytes(_png(w, h))
    (images / "d.png").write_bytes(b"broken")
    ref = lambda seg, text: {"sentence": "s", "explanation": text, "bbox": None, "segmentation": seg}  # noqa: E731
    annotations = [  # LEGION matches "a.png" to the first entry whose path contains it: ba.png's
        {"7": {"caption": "A big flaw.\nTo elaborate, ...", "img_file_name": "/mnt/x/ba.png",
               "refs": [ref([[0, 0, 5, 0, 5, 5, 0, 5]], "a big square")]}},
        {"8": {"caption": "A small flaw.", "img_file_name": "/mnt/x/a.png", "refs": [ref([sum(SQUARE, [])], "small")]}},
        {"9": {"caption": "Bad.", "img_file_name": "/mnt/x/e.png", "refs": [ref([[1, 2, 3]], "odd coordinates")]}},
        {"10": {"caption": "Unreadable.", "img_file_name": "/mnt/x/d.png", "refs": []}},
    ]
    (root / "test" / "annotations").mkdir()
    (root / "test" / "annotations" / "test.json").write_text(json.dumps(annotations))
    return root


@pytest.fixture(scope="module")
def artifactbench_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifactbench") / "ours"
    (root / "images").mkdir(parents=True)
    for key in ("p1", "n1"):
        (root / "images" / f"{key}.png").write_bytes(_png(8, 8))
    metadata = [
        {"id": "p1", "has_artifacts": True, "explanation": "the dog has an extra leg",
         "artifacts": [{"target_bbox": [0, 0, 4, 4], "artifact_type": "addition", "explanation": "an extra leg"}]},
        {"id": "n1", "has_artifacts": False, "explanation": "There are no artifacts in this image.", "artifacts": []},
        {"id": "gone", "has_artifacts": True, "bboxes": [[0, 0, 2, 2]]},
        {"has_artifacts": False},
    ]
    (root / "metadata.json").write_text(json.dumps(metadata))
    return root.parent


def _run(argv: list[str], out: Path) -> dict:
    result = eval_main([*argv, "--out", str(out), "--batch-size", "2"])
    assert json.loads(out.read_text()) == result
    return result


# ------------------------------------------------------------------------------------- detector.eval
def test_xaigd_benchmark_pools_pixels_and_counts_bad_rows(everywhere, xaigd_dir, tmp_path):
    m = _run(["--benchmark", "xaigd", "--data", str(xaigd_dir), "--checkpoint", str(everywhere)], tmp_path / "m.json")
    assert m["bad_inputs"] == {"unknown_category": 1, "malformed_polygon": 1, "size_mismatch": 1,
                               "unreadable_image": 1, "missing_image": 1}
    x = m["xaigd"]
    # g1/u1: TP 9, FP 55; g2/u2: FP 24 → pooled IoU = PixP = 9 / 88, PixR 1
    assert x["category_agnostic"] == pytest.approx({"IoU": 9 / 88, "PixP": 9 / 88, "PixR": 1.0,
                                                    "PixF1": 2 * (9 / 88) / (1 + 9 / 88), "evaluated_images": 2,
                                                    "zero_prediction_images": 0})
    assert x["per_generator"]["g1"]["IoU"] == pytest.approx(9 / 64) and x["per_generator"]["g2"]["IoU"] == 0.0
    assert x["image_level"]["recall"] == 1.0 and m["n_images"] == 2
    # per category: the one mask (one whole-image box) is submitted under every category
    semantics, color = x["fine_grained"]["high-level-semantics"], x["fine_grained"]["low-level-color"]
    assert semantics["IoU"] == pytest.approx(9 / 88) and semantics["PixR"] == 1.0
    assert (color["IoU"], color["PixR"], color["evaluated_images"]) == (0.0, 0.0, 2)
    assert x["category_rule"] == "every_category"
    instance = x["instance"]["0.5"]["high-level-semantics"]  # 9 / 64 of u1's box on its instance
    assert (instance["TP"], instance["FP"], instance["FN"], instance["P@0.5"]) == (0, 2, 1, 0.0)
    assert x["instance"]["0.5"]["low-level-color"]["FP"] == 2
    assert x["instance_per_generator"]["g2"]["0.5"]["high-level-semantics"]["FP"] == 1
    assert x["fine_grained_per_generator"]["g1"]["high-level-semantics"]["IoU"] == pytest.approx(9 / 64)
    m = _run(["--benchmark", "xaigd", "--data", str(xaigd_dir), "--checkpoint", str(everywhere),
              "--xaigd-overlap-threshold", "0.1"], tmp_path / "o.json")
    low = m["xaigd"]["instance"]["0.1"]["high-level-semantics"]
    assert (low["TP"], low["FP"], low["FN"], low["P@0.1"], low["R@0.1"]) == (1, 1, 0, 0.5, 1.0)
    m = _run(["--benchmark", "xaigd", "--data", str(xaigd_dir), "--checkpoint", str(everywhere),
              "--xaigd-transform", "resize256-crop224"], tmp_path / "t.json")
    gt = transform_mask(polygon_mask([SQUARE], 8, 8), "resize256-crop224")
    expected_tp = int((gt == 255).sum())
    assert m["xaigd"]["category_agnostic"]["IoU"] == pytest.approx(expected_tp / (2 * 224 * 224))
    assert m["xaigd"]["fine_grained"]["high-level-semantics"]["IoU"] == pytest.approx(expected_tp / (2 * 224 * 224))


def test_synthscars_benchmark_is_legion_per_image_over_every_image(everywhere, synthscars_dir, tmp_path):
    m = _run(["--benchmark", "synthscars", "--data", str(synthscars_dir), "--checkpoint", str(everywhere)],
             tmp_path / "m.json")
    assert m["bad_inputs"] == {"no_annotation": 1, "unreadable_image": 1, "malformed_polygon": 1}
    # everything predicted: a.png carries ba.png's 6 × 6 square (36 of 64), ba.png too, c.png has no annotation
    per_image = [scores_from_counts(36, 28, 0, 0), scores_from_counts(36, 28, 0, 0), scores_from_counts(0, 24, 0, 0)]
    expected = {k: np.mean([s[k] for s in per_image]) for k in per_image[0]}
    assert m["synthscars"] == pytest.approx({**expected, "images": 3})


def test_richhf_heatmap_layout_counts_missing_and_mis_sized_masks(everywhere, tmp_path):
    root = tmp_path / "richhf"
    (root / "raw_imgs").mkdir(parents=True), (root / "heatmaps").mkdir()
    for name in ("x.png", "y.png", "z.png"):
        (root / "raw_imgs" / name).write_bytes(_png(8, 8))
    heat = np.zeros((8, 8), np.uint8)
    heat[:4] = 3  # any value > 0 is artifact
    Image.fromarray(heat).save(root / "heatmaps" / "x.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "heatmaps" / "y.png")
    m = _run(["--benchmark", "synthscars", "--data", str(root), "--checkpoint", str(everywhere)], tmp_path / "m.json")
    assert m["bad_inputs"] == {"mask_size_mismatch": 1, "missing_mask": 1}
    assert m["synthscars"] == pytest.approx({**scores_from_counts(32, 32, 0, 0), "images": 1})


def test_artifactbench_benchmark_detection_and_localisation(everywhere, artifactbench_dir, tmp_path):
    m = _run(["--benchmark", "artifactbench", "--data", str(artifactbench_dir), "--checkpoint", str(everywhere)],
             tmp_path / "m.json")
    assert m["bad_inputs"] == {"malformed_record": 1, "missing_image": 1} and m["n_images"] == 2
    a = m["artifactbench"]
    assert a["detection"]["accuracy"] == 0.5 and a["detection"]["f1"] == pytest.approx(2 / 3)
    # one whole-image box [0, 0, 8, 8] against [0, 0, 4, 4]: IoU 0.25 counts, but < 0.5 matches nothing
    assert a["localization"] == pytest.approx({"mean_iou": 0.25, "mean_precision": 0.0, "mean_recall": 0.0,
                                               "mean_f1": 0.0, "valid_samples": 1})


def test_benchmark_cli_needs_data(everywhere, tmp_path):
    with pytest.raises(SystemExit):
        eval_main(["--benchmark", "xaigd", "--checkpoint", str(everywhere), "--out", str(tmp_path / "m.json")])


# ------------------------------------------------------------------------------------ detector.vlm_eval
def _replies(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    return path


def _two_blocks(boxes: list, texts: list[str], explanation: str) -> str:
    items = [{"bbox_2d": b, "label": t} for b, t in zip(boxes, texts)]
    return f"```json\n{json.dumps(items)}\n```\n\n```json\n{json.dumps({'explanation': explanation})}\n```"


def test_vlm_on_artifactbench(artifactbench_dir, tmp_path):
    rows = [{"id": "p1", "predict": _two_blocks([[0, 0, 4.9, 4.2], [3, 3, 3, 9]], ["an extra leg", "x"],
                                                "the dog has extra legs")},
            {"id": "n1", "predict": _two_blocks([], [], "There are no artifacts in this image.")},
            {"id": "zzz", "predict": "```json\n[]\n```"}]
    m = vlm_main(["--benchmark", "artifactbench", "--data", str(artifactbench_dir),
                  "--predictions", str(_replies(tmp_path / "r.jsonl", rows)), "--out", str(tmp_path / "m.json")])
    assert m["bad_inputs"] == {"malformed_record": 1, "missing_image": 1, "unreadable_line": 1, "unknown_id": 1}
    assert (m["n_replies"], m["degenerate_boxes"]) == (2, 1)
    a = m["artifactbench"]
    assert a["detection"]["accuracy"] == 1.0 and a["localization"]["mean_f1"] == 1.0
    assert a["localization"]["mean_iou"] == 1.0  # [0, 0, 4.9, 4.2] truncates to the ground-truth box
    e = a["explanation"]
    assert e["global_rouge_l"] == pytest.approx((10 / 11 + 1.0) / 2) and e["local_rouge_l"] == 1.0


def test_vlm_on_synthscars_and_xaigd(synthscars_dir, xaigd_dir, tmp_path):
    rows = [{"id": "ba.png", "predict": _two_blocks([[0, 0, 6, 6]], ["a big square"], "A big flaw.")},
            {"id": "c.png", "predict": _two_blocks([[0, 0, 2, 2]], ["x"], "")}]
    m = vlm_main(["--benchmark", "synthscars", "--data", str(synthscars_dir),
                  "--predictions", str(_replies(tmp_path / "s.jsonl", rows)), "--out", str(tmp_path / "s.json")])
    assert m["bad_inputs"] == {"no_annotation": 1, "unreadable_line": 1, "missing_reply": 3}
    per_image = [scores_from_counts(36, 0, 0, 28), scores_from_counts(0, 4, 0, 20)]
    assert m["synthscars"] == pytest.approx({**{k: np.mean([s[k] for s in per_image]) for k in per_image[0]},
                                             "images": 2})
    protocol = m["artifactbench_protocol"]  # ArtiAgent on SynthScars: polygon → tightest box, caption's first line
    assert protocol["localization"]["mean_iou"] == pytest.approx(25 / 36)
    assert protocol["explanation"]["global_rouge_l"] == pytest.approx(1.0)
    rows = [{"id": "g1/u1", "predict": _two_blocks([[1, 1, 4, 4]], ["x"], "")}]
    m = vlm_main(["--benchmark", "xaigd", "--data", str(xaigd_dir),
                  "--predictions", str(_replies(tmp_path / "x.jsonl", rows)), "--out", str(tmp_path / "x.json")])
    assert m["xaigd"]["category_agnostic"]["IoU"] == 1.0 and m["bad_inputs"]["missing_reply"] == 4


def test_replies_without_ids_follow_the_benchmark_order():
    bad = BadInputs()
    assert replies_by_id([{"predict": "a"}, {"predict": "b"}], ["x", "y", "z"], bad) == {"x": "a", "y": "b"}
    assert bad.counts == {"reply_count_mismatch": 1, "missing_reply": 1}
