"""``--benchmark`` evaluation on small folders built by hand in each benchmark's published layout (X-AIGD's Hub
parquet, SynthScars' images + ``annoations/`` JSON, LEGION's RichHF-18K heatmaps, ArtiBench's Hub parquet and
ArtiAgent's ``metadata.json`` + images): a detector that predicts "artifact everywhere" and a VLM's replies give
hand-countable metrics, and every bad input is counted, never fatal."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from detector.benchmarks.common import BadInputs
from detector.benchmarks.legion import iter_legion
from detector.benchmarks.xaigd import iter_xaigd
from detector.benchmarks.artifactbench import iter_artifactbench
from detector.eval import main as eval_main
from detector.metrics.legion import scores_from_counts
from detector.metrics.xaigd import polygon_mask, transform_mask
from detector.benchmarks.vlm_scores import replies_by_id
from detector.vlm_eval import main as vlm_main

SQUARE = [[1, 1], [3, 1], [3, 3], [1, 3]]  # filled inclusively: the 3 × 3 pixels at rows / columns 1..3
BIG = [0, 0, 5, 0, 5, 5, 0, 5]  # flat SynthScars polygon: the 6 × 6 pixels at rows / columns 0..5


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _truncated_png() -> bytes:
    """A PNG whose header reads (8 × 8) but whose pixel data stops half-way."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()[:len(buffer.getvalue()) // 2]


def _hf_image(data: bytes | None) -> dict | None:
    return None if data is None else {"bytes": data, "path": None}


# ------------------------------------------------------------------------------------------- layouts
@pytest.fixture(scope="module")
def xaigd_dir(tmp_path_factory) -> Path:
    """X-AIGD's Hub layout: ``data/labeled_test-*.parquet``; the second file is not parquet at all."""
    root = tmp_path_factory.mktemp("xaigd")
    (root / "data").mkdir()
    label = lambda category, points: {"label": category, "points": points}  # noqa: E731
    rows = [  # g1/u1: a malformed polygon (2 points, after one non-pair point is dropped) before its good one
        dict(generator="g1", uid="u1", width=8, height=8, image=_hf_image(_png(8, 8)),
             labels=[label("low-level-color", [[0, 0], [7], [5, 5]]), label("high-level-semantics", SQUARE)]),
        dict(generator="g2", uid="u2", width=6, height=4, labels=[], image=_hf_image(_png(6, 4))),
        dict(generator="g2", uid="bad-category", width=8, height=8, labels=[label("low-level-text", SQUARE)],
             image=_hf_image(_png(8, 8))),
        dict(generator="g1", uid="wrong-size", width=10, height=10, labels=[], image=_hf_image(_png(8, 8))),
        dict(generator="g1", uid="broken", width=8, height=8, labels=[], image=_hf_image(b"not a png")),
        dict(generator="g1", uid="no-image", width=8, height=8, labels=[], image=None),
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "labeled_test-00000-of-00002.parquet")
    (root / "data" / "labeled_test-00001-of-00002.parquet").write_bytes(b"PAR1 not really")
    return root


@pytest.fixture(scope="module")
def synthscars_dir(tmp_path_factory) -> Path:
    """LEGION's README layout: ``test/images/*`` and ``test/annoations/test.json`` (sic)."""
    root = tmp_path_factory.mktemp("synthscars")
    images = root / "test" / "images"
    images.mkdir(parents=True)
    for name, (w, h) in {"1.png": (8, 8), "11.png": (8, 8), "2.png": (6, 4), "3.png": (8, 8)}.items():
        (images / name).write_bytes(_png(w, h))
    (images / "4.png").write_bytes(b"broken")
    ref = lambda seg, text: {"sentence": "s", "explanation": text, "bbox": None, "segmentation": seg}  # noqa: E731
    annotations = [  # 11.png's entry first: a substring match ("1.png" in "/mnt/x/11.png") would hand it to 1.png
        {"7": {"caption": "A big flaw.\nTo elaborate, ...", "img_file_name": "/mnt/x/11.png",
               "refs": [ref([BIG], "a big square")]}},
        {"8": {"caption": "A small flaw.", "img_file_name": "1.png", "refs": [ref([sum(SQUARE, [])], "small")]}},
        {"9": {"caption": "Bad.", "img_file_name": "3.png", "refs": [ref([[1, 2, 3]], "odd coordinates")]}},
        {"10": {"caption": "Unreadable.", "img_file_name": "4.png", "refs": []}},
        {"11": {"caption": "Gone.", "img_file_name": "99.png", "refs": []}},
        {"12": {"caption": "Again.", "img_file_name": "images/1.png", "refs": []}},
    ]
    (root / "test" / "annoations").mkdir()
    (root / "test" / "annoations" / "test.json").write_text(json.dumps(annotations))
    (root / "test" / "annoations" / "zz_broken.json").write_text("[{not json")
    return root


def _artifactbench_rows() -> list[dict]:
    return [
        {"id": "p1", "has_artifacts": True, "explanation": "the dog has an extra leg", "bboxes": [[0, 0, 4, 4]]},
        {"id": "n1", "has_artifacts": False, "explanation": "There are no artifacts in this image.", "bboxes": []},
    ]


@pytest.fixture(scope="module")
def artibench_dir(tmp_path_factory) -> Path:
    """ArtiBench as the Hub repo downloads: ``data/test-*.parquet`` (id, image, has_artifacts, explanation,
    bboxes); one file is not parquet."""
    root = tmp_path_factory.mktemp("artibench")
    (root / "data").mkdir()
    p1, n1 = _artifactbench_rows()
    rows = [
        {**p1, "image": _hf_image(_png(8, 8))},
        {**n1, "image": _hf_image(_png(8, 8))},
        {"id": "no-image", "has_artifacts": True, "explanation": "", "bboxes": [[0, 0, 2, 2]], "image": None},
        {"id": None, "has_artifacts": False, "explanation": "", "bboxes": [], "image": _hf_image(_png(8, 8))},
        {"id": "truncated", "has_artifacts": True, "explanation": "", "bboxes": [[0, 0, 2, 2]],
         "image": _hf_image(_truncated_png())},
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "test-00000-of-00002.parquet")
    (root / "data" / "test-00001-of-00002.parquet").write_bytes(b"garbage")
    return root


@pytest.fixture(scope="module")
def artifactbench_dir(tmp_path_factory) -> Path:
    """ArtiAgent's evaluation layout: ``ours/metadata.json`` + ``ours/images/{id}.png``."""
    root = tmp_path_factory.mktemp("artifactbench") / "ours"
    (root / "images").mkdir(parents=True)
    for key in ("p1", "n1", "x1"):
        (root / "images" / f"{key}.png").write_bytes(_png(8, 8))
    (root / "images" / "t1.png").write_bytes(_truncated_png())
    metadata = [
        {"id": "p1", "has_artifacts": True, "explanation": "the dog has an extra leg",
         "artifacts": [{"target_bbox": [0, 0, 4, 4], "artifact_type": "addition", "explanation": "an extra leg"}]},
        {"id": "n1", "has_artifacts": False, "explanation": "There are no artifacts in this image.", "artifacts": []},
        {"id": "gone", "has_artifacts": True, "bboxes": [[0, 0, 2, 2]]},
        {"has_artifacts": False},
        {"id": "t1", "has_artifacts": True, "explanation": "cut", "artifacts": [{"bbox": [0, 0, 2, 2], "label": "x"}]},
        {"id": "x1", "has_artifacts": True, "explanation": "", "bboxes": [[0, 0, 4, 4], [1, 2, 3]],
         "explanations": ["a key no published source uses"]},
    ]
    (root / "metadata.json").write_text(json.dumps(metadata))
    return root.parent


def _run(argv: list[str], out: Path) -> dict:
    result = eval_main([*argv, "--out", str(out), "--batch-size", "2"])
    assert json.loads(out.read_text()) == result
    return result


# ------------------------------------------------------------------------------------------ readers
def test_synthscars_pairs_each_image_with_the_entry_naming_exactly_its_file(synthscars_dir):
    bad = BadInputs()
    records = {r.image_id: r for r in iter_legion(synthscars_dir, bad)}
    assert records["1.png"].polygons == [sum(SQUARE, [])]  # not 11.png's, listed first, whose path contains "1.png"
    assert records["11.png"].polygons == [BIG] and records["2.png"].polygons == []
    assert bad.counts == {"missing_image": 1, "duplicate_annotation": 1, "no_annotation": 1, "unreadable_file": 1}


def test_xaigd_malformed_polygon_is_skipped_alone(xaigd_dir):
    bad = BadInputs()
    records = {r.uid: r for r in iter_xaigd(xaigd_dir, "labeled_test", bad, with_images=False)}
    assert records["u1"].labels == [("high-level-semantics", [tuple(map(float, p)) for p in SQUARE])]
    assert "bad-category" not in records and len(records) == 5
    assert bad.counts == {"malformed_polygon": 1, "unknown_category": 1, "unreadable_file": 1}


def test_artifactbench_reads_both_published_layouts(artibench_dir, artifactbench_dir):
    bad = BadInputs()
    parquet = list(iter_artifactbench(artibench_dir, bad))
    assert [(r.id, r.has_artifacts, r.boxes, r.texts) for r in parquet] == [
        ("p1", True, [[0.0, 0.0, 4.0, 4.0]], []), ("n1", False, [], []),
        ("truncated", True, [[0.0, 0.0, 2.0, 2.0]], [])]
    assert isinstance(parquet[0].image, bytes) and parquet[0].explanation == "the dog has an extra leg"
    assert bad.counts == {"missing_image": 1, "malformed_record": 1, "unreadable_file": 1}
    bad = BadInputs()
    metadata = {r.id: r for r in iter_artifactbench(artifactbench_dir, bad)}
    assert metadata["p1"].texts == ["an extra leg"] and metadata["t1"].texts == ["x"]  # explanation, else label
    assert (metadata["x1"].boxes, metadata["x1"].texts) == ([[0.0, 0.0, 4.0, 4.0]], [])  # no "explanations" key
    assert bad.counts == {"missing_image": 1, "malformed_record": 1, "malformed_box": 1}


# ------------------------------------------------------------------------------------- detector.eval
def test_xaigd_benchmark_pools_pixels_and_counts_bad_rows(everywhere, xaigd_dir, tmp_path):
    m = _run(["--benchmark", "xaigd", "--data", str(xaigd_dir), "--checkpoint", str(everywhere)], tmp_path / "m.json")
    assert m["bad_inputs"] == {"unknown_category": 1, "malformed_polygon": 1, "size_mismatch": 1,
                               "unreadable_image": 1, "missing_image": 1, "unreadable_file": 1}
    x = m["xaigd"]
    # g1/u1 (its malformed polygon skipped, its square kept): TP 9, FP 55; g2/u2: FP 24 → IoU = PixP = 9 / 88
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
    assert m["bad_inputs"] == {"no_annotation": 1, "unreadable_image": 1, "malformed_polygon": 1, "missing_image": 1,
                               "duplicate_annotation": 1, "unreadable_file": 1}
    # everything predicted: 1.png its own 3 × 3 square (9 of 64), 11.png its 6 × 6 (36 of 64), 2.png no annotation
    per_image = [scores_from_counts(9, 55, 0, 0), scores_from_counts(36, 28, 0, 0), scores_from_counts(0, 24, 0, 0)]
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


def test_artifactbench_benchmark_detection_and_localisation(everywhere, artifactbench_dir, artibench_dir, tmp_path):
    m = _run(["--benchmark", "artifactbench", "--data", str(artifactbench_dir), "--checkpoint", str(everywhere)],
             tmp_path / "m.json")
    assert m["bad_inputs"] == {"malformed_record": 1, "missing_image": 1, "malformed_box": 1, "unreadable_image": 1}
    assert m["n_images"] == 3  # p1, n1, x1 (t1's PNG is truncated)
    a = m["artifactbench"]
    assert a["detection"]["accuracy"] == pytest.approx(2 / 3) and a["detection"]["f1"] == pytest.approx(0.8)
    # one whole-image box [0, 0, 8, 8] against [0, 0, 4, 4] (p1, x1): IoU 0.25 counts, but < 0.5 matches nothing
    assert a["localization"] == pytest.approx({"mean_iou": 0.25, "mean_precision": 0.0, "mean_recall": 0.0,
                                               "mean_f1": 0.0, "valid_samples": 2})
    m = _run(["--benchmark", "artifactbench", "--data", str(artibench_dir), "--checkpoint", str(everywhere)],
             tmp_path / "p.json")  # ArtiBench's Hub parquet
    assert m["bad_inputs"] == {"missing_image": 1, "malformed_record": 1, "unreadable_file": 1,
                               "unreadable_image": 1} and m["n_images"] == 2
    a = m["artifactbench"]
    assert a["detection"]["accuracy"] == 0.5 and a["localization"]["mean_iou"] == 0.25


@pytest.fixture(scope="module")
def says_no(tmp_path_factory) -> Path:
    """A saved detector whose image score says "no artifacts" everywhere while its mask marks every pixel."""
    import torch

    from detector.model import ArtifactDetector, DetectorConfig, save_detector
    from shards.record import ARTIFACT_TOOLS

    model = ArtifactDetector(DetectorConfig(num_types=len(ARTIFACT_TOOLS)))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fuse[-1].bias.fill_(8.0)
        model.image_head.bias.fill_(-8.0)
    return save_detector(model, tmp_path_factory.mktemp("says_no"))


def test_artifactbench_localisation_follows_the_image_decision(says_no, artibench_dir, tmp_path):
    m = _run(["--benchmark", "artifactbench", "--data", str(artibench_dir), "--checkpoint", str(says_no)],
             tmp_path / "m.json")
    a = m["artifactbench"]  # "no artifacts" on both images: no boxes submitted, though the mask is everywhere
    assert (a["detection"]["accuracy"], a["detection"]["tn"], a["detection"]["fn"]) == (0.5, 1, 1)
    assert a["localization"] == pytest.approx({"mean_iou": 0.0, "mean_precision": 0.0, "mean_recall": 0.0,
                                               "mean_f1": 0.0, "valid_samples": 1})


def test_benchmark_cli_needs_data(everywhere, tmp_path):
    with pytest.raises(SystemExit):
        eval_main(["--benchmark", "xaigd", "--checkpoint", str(everywhere), "--out", str(tmp_path / "m.json")])
    for name in ("xaigd", "synthscars", "artifactbench"):  # a folder with none of the layouts: a usage error
        with pytest.raises(SystemExit):
            eval_main(["--benchmark", name, "--data", str(tmp_path), "--checkpoint", str(everywhere),
                       "--out", str(tmp_path / "m.json")])


# ------------------------------------------------------------------------------------ detector.vlm_eval
def _replies(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    return path


def _two_blocks(boxes: list, texts: list[str], explanation: str) -> str:
    items = [{"bbox_2d": b, "label": t} for b, t in zip(boxes, texts)]
    return f"```json\n{json.dumps(items)}\n```\n\n```json\n{json.dumps({'explanation': explanation})}\n```"


def _vlm(benchmark: str, data: Path, rows: list[dict], tmp_path: Path) -> dict:
    replies = _replies(tmp_path / f"{benchmark}.jsonl", rows)
    return vlm_main(["--benchmark", benchmark, "--data", str(data), "--predictions", str(replies),
                     "--out", str(tmp_path / f"{benchmark}.json")])


def test_vlm_on_artifactbench(artifactbench_dir, tmp_path):
    rows = [{"id": "p1", "predict": _two_blocks([[0, 0, 4.9, 4.2], [3, 3, 3, 9]], ["an extra leg", "x"],
                                                "the dog has extra legs")},
            {"id": "n1", "predict": _two_blocks([], [], "There are no artifacts in this image.")},
            {"id": "x1", "predict": _two_blocks([[0, 0, 4, 4]], ["a key no published source uses"], "")},
            {"id": "t1", "predict": _two_blocks([[0, 0, 2, 2]], ["x"], "cut")},
            {"id": "zzz", "predict": "```json\n[]\n```"}]
    m = _vlm("artifactbench", artifactbench_dir, rows, tmp_path)
    assert m["bad_inputs"] == {"malformed_record": 1, "missing_image": 1, "malformed_box": 1, "unreadable_line": 1,
                               "unknown_id": 1, "unreadable_image": 1}  # t1: a truncated PNG
    assert (m["n_replies"], m["degenerate_boxes"]) == (3, 1)
    a = m["artifactbench"]
    assert a["detection"]["accuracy"] == 1.0 and a["localization"]["mean_f1"] == 1.0
    assert a["localization"]["mean_iou"] == 1.0  # [0, 0, 4.9, 4.2] truncates to the ground-truth box
    e = a["explanation"]
    assert e["global_rouge_l"] == pytest.approx((10 / 11 + 1.0 + 0.0) / 3)
    assert (e["local_rouge_l"], e["local_samples"]) == (1.0, 1)  # x1 has no box text: not a local sample


def test_vlm_on_artibench_parquet(artibench_dir, tmp_path):
    perfect = [_two_blocks([[0, 0, 4, 4]], ["a leg"], "the dog has an extra leg"),
               _two_blocks([], [], "There are no artifacts in this image."), _two_blocks([[0, 0, 2, 2]], ["x"], "")]
    for rows in ([{"id": k, "predict": r} for k, r in zip(["p1", "n1", "truncated"], perfect)],
                 [{"predict": r} for r in perfect]):  # LLaMA-Factory's id-less lines follow the parquet row order
        m = _vlm("artifactbench", artibench_dir, rows, tmp_path)
        assert m["bad_inputs"] == {"missing_image": 1, "malformed_record": 1, "unreadable_file": 1,
                                   "unreadable_line": 1, "unreadable_image": 1}
        a = m["artifactbench"]
        assert a["detection"]["accuracy"] == 1.0 and a["localization"]["mean_iou"] == 1.0
        assert a["explanation"]["global_rouge_l"] == pytest.approx(1.0) and a["explanation"]["local_samples"] == 0


def test_vlm_on_synthscars_and_xaigd(synthscars_dir, xaigd_dir, tmp_path):
    rows = [{"id": "1.png", "predict": _two_blocks([[1, 1, 4, 4]], ["small"], "A small flaw.")},
            {"id": "11.png", "predict": _two_blocks([[0, 0, 6, 6]], ["a big square"], "A big flaw.")},
            {"id": "2.png", "predict": _two_blocks([[0, 0, 2, 2]], ["x"], "")}]
    m = _vlm("synthscars", synthscars_dir, rows, tmp_path)
    assert m["bad_inputs"] == {"no_annotation": 1, "missing_image": 1, "duplicate_annotation": 1, "unreadable_file": 1,
                               "unreadable_line": 1, "missing_reply": 2}
    # each box exactly covers its own image's polygon (1.png is not scored against 11.png's square)
    per_image = [scores_from_counts(9, 0, 0, 55), scores_from_counts(36, 0, 0, 28), scores_from_counts(0, 4, 0, 20)]
    assert m["synthscars"] == pytest.approx({**{k: np.mean([s[k] for s in per_image]) for k in per_image[0]},
                                             "images": 3})
    protocol = m["artifactbench_protocol"]  # ArtiAgent on SynthScars: polygon → tightest box, caption's first line
    assert protocol["localization"]["mean_iou"] == pytest.approx((4 / 9 + 25 / 36) / 2)
    assert protocol["explanation"]["global_rouge_l"] == pytest.approx(1.0)
    rows = [{"id": "g1/u1", "predict": _two_blocks([[1, 1, 4, 4]], ["x"], "")},
            {"id": "g1/broken", "predict": _two_blocks([[1, 1, 4, 4]], ["x"], "")},
            {"id": "g1/wrong-size", "predict": _two_blocks([[1, 1, 4, 4]], ["x"], "")}]
    m = _vlm("xaigd", xaigd_dir, rows, tmp_path)
    assert m["xaigd"]["category_agnostic"]["IoU"] == 1.0 and m["xaigd"]["category_agnostic"]["evaluated_images"] == 1
    assert m["bad_inputs"] == {"unknown_category": 1, "malformed_polygon": 1, "unreadable_file": 1,
                               "unreadable_line": 1, "unreadable_image": 1, "size_mismatch": 1, "missing_reply": 2}


def test_vlm_eval_stops_cleanly_on_a_folder_without_the_benchmark(tmp_path):
    with pytest.raises(SystemExit):
        _vlm("artifactbench", tmp_path, [], tmp_path)


def test_replies_without_ids_follow_the_benchmark_order():
    bad = BadInputs()
    assert replies_by_id([{"predict": "a"}, {"predict": "b"}], ["x", "y", "z"], bad) == {"x": "a", "y": "b"}
    assert bad.counts == {"reply_count_mismatch": 1, "missing_reply": 1}
