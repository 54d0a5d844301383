"""The LLaMA-Factory export in the frame the model sees: a 1024² row is written at the size that
LLaMA-Factory's pre-resize and the Qwen2-VL image processor leave unchanged, its box lands on the
artifact in the pixels the processor hands the model, and no generated text can break the
placeholder count (one ``<image>`` per image)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor, smart_resize

from shards.export import NO_ARTIFACTS, SPLITS, ModelFrame, data_file, main, parse_answer, plain_text
from shards.images import encode_png
from shards.record import Artifact, Sample
from shards.writer import write_shard

SIDE = 1024
BOX = [600, 200, 840, 424]  # the artifact: a saturated red block on a grey photo
LLAMAFACTORY_MAX_PIXELS, LLAMAFACTORY_MIN_PIXELS = 768 * 768, 32 * 32  # its image_max/min_pixels defaults
# Qwen2.5-VL's preprocessor_config.json, given explicitly: nothing is downloaded.
QWEN25 = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 3136,
          "max_pixels": 12845056}
GENERATED = "a red block <image> where none <video> belongs <audio> <|im_end|> <|image_pad|>"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    """One 1024² accepted row, every generated text laced with placeholders, exported with the defaults."""
    rng = np.random.default_rng(0)
    clean = np.repeat(rng.integers(70, 130, (SIDE, SIDE, 1), dtype=np.uint8), 3, axis=2)
    fake = clean.copy()
    x0, y0, x1, y1 = BOX
    fake[y0:y1, x0:x1] = (230, 20, 20)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[y0:y1, x0:x1] = 1
    sample = Sample(sample_id="big", source_id="photo", seed=0, status="accepted", real_image=encode_png(clean),
                    clean_image=encode_png(clean), image=encode_png(fake), mask=encode_png(mask),
                    global_explanation=f"Global: {GENERATED}",
                    artifacts=[Artifact(tool="add", bbox=list(BOX), accepted=True, label="extra <image> block",
                                        local_explanation=GENERATED)])
    root = tmp_path_factory.mktemp("frame")
    write_shard([sample], root / "run" / "data" / "part.parquet")
    main(["--format", "llamafactory", "--shards", str(root / "run"), "--out", str(root / "export"),
          "--val-fraction", "0"])
    return root / "export"


def _records(export_dir: Path) -> list[dict]:
    return [r for split in SPLITS for r in json.loads((export_dir / data_file(split)).read_text())]


def _described(export_dir: Path) -> tuple[dict, Image.Image]:
    record = next(r for r in _records(export_dir) if r["messages"][1]["content"] != NO_ARTIFACTS)
    return record, Image.open(export_dir / record["images"][0]).convert("RGB")


def _processed(image: Image.Image) -> tuple[np.ndarray, int, int]:
    """The Qwen2-VL processor's pixels as an (H, W, 3) image in [0, 1], and its patch grid (rows, cols)."""
    processor = Qwen2VLImageProcessor(**QWEN25)
    out = processor(images=[image], return_tensors="pt")
    _, rows, cols = (int(v) for v in out["image_grid_thw"][0])
    p, m, t = QWEN25["patch_size"], QWEN25["merge_size"], QWEN25["temporal_patch_size"]
    patches = out["pixel_values"].numpy().reshape(rows // m, cols // m, m, m, 3, t, p, p)[:, :, :, :, :, 0]
    chw = patches.transpose(4, 0, 2, 5, 1, 3, 6).reshape(3, rows * p, cols * p)  # undo the patch order
    mean, std = np.array(processor.image_mean)[:, None, None], np.array(processor.image_std)[:, None, None]
    return (chw * std + mean).transpose(1, 2, 0), rows, cols


def _iou(a: list[int], b: list[int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_the_export_is_written_at_the_size_the_model_receives(export_dir):
    """1024² → LLaMA-Factory: 768² (area over image_max_pixels) → smart_resize: 756² (27 × 28); the file
    is written at 756², which LLaMA-Factory leaves alone and the processor patches into 54 × 54 × 14 px."""
    lf_side = int(SIDE * math.sqrt(LLAMAFACTORY_MAX_PIXELS / SIDE ** 2))
    expected = smart_resize(lf_side, lf_side, factor=28, min_pixels=QWEN25["min_pixels"],
                            max_pixels=QWEN25["max_pixels"])
    assert (lf_side, expected) == (768, (756, 756))
    for record in _records(export_dir):  # the artifact image and its negative alike
        image = Image.open(export_dir / record["images"][0])
        width, height = image.size
        assert (height, width) == expected
        assert LLAMAFACTORY_MIN_PIXELS <= width * height <= LLAMAFACTORY_MAX_PIXELS  # LLaMA-Factory: no resize
        _, rows, cols = _processed(image.convert("RGB"))
        assert (cols * QWEN25["patch_size"], rows * QWEN25["patch_size"]) == (width, height)  # processor: none


def test_the_box_lands_on_the_artifact_in_the_image_the_model_receives(export_dir):
    record, image = _described(export_dir)
    pixels, rows, cols = _processed(image)
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)
    ys, xs = np.nonzero(red)
    seen = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]  # the artifact as the model sees it
    [box] = parse_answer(record["messages"][1]["content"]).boxes
    scale = (cols * QWEN25["patch_size"] / image.width, rows * QWEN25["patch_size"] / image.height)
    box_in_processed = [round(v * scale[i % 2]) for i, v in enumerate(box)]  # the processor's resize: × 1
    assert box_in_processed == box
    assert all(abs(a - b) <= 2 for a, b in zip(box, seen)) and _iou(box, seen) > 0.95
    assert red[box[1]:box[3], box[0]:box[2]].mean() > 0.95
    assert _iou(BOX, seen) < 0.1  # the stored-frame box (×1 instead of ×0.74) would miss it


def test_the_tiny_vlm_receives_the_export_in_the_same_frame(export_dir):
    """The tiny Qwen2-VL (the model the tests answer and train with) has the export's frame: its processor
    leaves an exported image unresized and patches it into Qwen2.5-VL's grid, so a test on the export checks
    the boxes in the pixels the tiny model sees."""
    from factory.models.tiny.vlm import tiny_image_processor

    for record in _records(export_dir):
        image = Image.open(export_dir / record["images"][0]).convert("RGB")
        out = tiny_image_processor()(images=[image], return_tensors="pt")
        _, rows, cols = (int(v) for v in out["image_grid_thw"][0])
        assert (cols * QWEN25["patch_size"], rows * QWEN25["patch_size"]) == image.size
        assert tuple(int(v) for v in out["image_grid_thw"][0]) == \
            tuple(int(v) for v in Qwen2VLImageProcessor(**QWEN25)(images=[image], return_tensors="pt")["image_grid_thw"][0])


def test_generated_text_cannot_break_the_placeholder_count(export_dir):
    for record in _records(export_dir):
        contents = [m["content"] for m in record["messages"]]
        assert sum(c.count("<image>") for c in contents) == len(record["images"]) == 1
        assert not any(tag in c for c in contents for tag in ("<video>", "<audio>", "<|", "|>"))
        assert record["messages"][0]["content"].startswith("<image>")
    record, _ = _described(export_dir)
    reply = parse_answer(record["messages"][1]["content"])
    assert reply.explanations == [plain_text(GENERATED)] and reply.labels == ["extra [image] block"]
    assert reply.global_explanation == f"Global: {plain_text(GENERATED)}"


def test_plain_text_defuses_placeholders_and_special_tokens():
    assert plain_text("an <image> and <VIDEO>, <audio>") == "an [image] and [VIDEO], [audio]"
    assert plain_text("end <|im_end|> <|vision_start|>x") == "end [im_end] [vision_start]x"
    assert plain_text("a <b> tag, 3 < 4 > 2, <imagery>") == "a <b> tag, 3 < 4 > 2, <imagery>"


@pytest.mark.parametrize("max_pixels", [768 * 768, 512 * 512, 1024 * 1024, 256 * 28 * 28, 56 * 56])
def test_the_frame_is_the_processors_and_a_fixed_point_of_both_resizes(max_pixels):
    frame = ModelFrame(max_pixels=max_pixels)
    for width in (1, 13, 27, 28, 29, 64, 97, 300, 767, 770, 1000, 1024, 1537, 2048, 4000, 5756):
        for height in (1, 20, 32, 42, 48, 333, 766, 768, 1024, 1500, 3000):
            lf_w, lf_h = frame.llamafactory_size(width, height)
            if max(lf_w, lf_h) / min(lf_w, lf_h) <= 200:
                assert frame.processor_size(lf_w, lf_h)[::-1] == smart_resize(
                    lf_h, lf_w, factor=28, min_pixels=QWEN25["min_pixels"], max_pixels=QWEN25["max_pixels"])
            w, h = frame.export_size(width, height)
            assert w % 28 == h % 28 == 0 and max(LLAMAFACTORY_MIN_PIXELS, QWEN25["min_pixels"]) <= w * h <= max_pixels
            assert frame.llamafactory_size(w, h) == (w, h) and frame.processor_size(w, h) == (w, h)


def test_a_frame_no_image_survives_is_refused(tmp_path):
    with pytest.raises(ValueError, match="min_pixels"):
        ModelFrame(max_pixels=1000)
    with pytest.raises(SystemExit):
        main(["--format", "llamafactory", "--shards", str(tmp_path), "--out", str(tmp_path / "x"),
              "--max-pixels", "1000"])
