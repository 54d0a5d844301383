"""Shard format: lossless round trips, Parquet layout, ``datasets`` decoding, atomic writes, card."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from skimage import data as skdata

from shards.card import write_dataset_card
from shards.images import decode_mask, encode_png
from shards.reader import count_rows, iter_samples, read_table, table_to_samples
from shards.record import SCHEMA_VERSION, Artifact, Sample, SourceInfo, make_sample_id
from shards.rows import row_to_sample, sample_to_row
from shards.taxonomy import artifact_category
from shards.schema import IMAGE_COLUMNS, SHARD_SCHEMA, TRANSPORT_SCHEMA, hf_features, hf_yaml_features
from shards.writer import samples_to_table, write_shard

datasets = pytest.importorskip("datasets")

SIZE = (48, 32)  # (width, height): small but real photos


def _photo(array: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize(SIZE))


def _mask(seed: int) -> np.ndarray:
    mask = np.zeros(SIZE[::-1], dtype=np.uint8)
    mask[4:12, 6:20] = 1
    mask[20:28, 30:44] = 2
    mask[0, :] = 255
    mask[seed % 3, seed % 5] = 255
    return mask


def _accepted(seed: int, photo: np.ndarray) -> Sample:
    fake = photo.copy()
    fake[4:12, 6:20] = 255 - fake[4:12, 6:20]
    return Sample(
        sample_id=make_sample_id("astronaut", seed, "cfg"), source_id="astronaut", seed=seed,
        status="accepted", source=SourceInfo(uri="skimage://astronaut", width=512, height=512, sha256="ab" * 32),
        real_image=encode_png(photo), clean_image=encode_png(photo // 2), image=encode_png(fake),
        mask=encode_png(_mask(seed)), caption="an astronaut | with a flag\nsecond line", global_explanation="the hand has six fingers",
        plan={"entities": [{"label": "astronaut", "score": 0.5, "box": [1.0, 2.0, 30.5, 31.0],
                            "mask": {"size": [32, 48], "counts": "0a1b"}}],
              "parts": [{"label": "hand", "kind": "peripheral", "parent": 0, "score": 0.25, "box": [6.0, 4.0, 20.0, 12.0],
                         "mask": {"size": [32, 48], "counts": "Xy0"}}],
              "artifacts": [{"tool": "add", "entity": "astronaut", "subentity": "hand", "grid": [2, 3],
                             "target_cells": [1, 2, 3], "reference_cells": [7],
                             "meta": {"anchor": 4, "offset": [0, 1], "score": 1.5}}],
              "detections": 2},
        negative_explanation="the astronaut has two hands, each with five fingers",
        artifacts=[
            Artifact(tool="add", kernel="fuse", entity="hand", subentity="finger", bbox=[6, 4, 20, 12],
                     target_bbox=[8, 4, 16, 12],
                     cells=[1, 2, 3], reference_cells=[7], region={"size": [32, 48], "counts": "Xy0"},
                     local_explanation="an extra finger", label="extra_finger", lpips=0.125,
                     vlm_verdict='{"ok": true}', accepted=True),
            Artifact(tool="distort", entity="face", accepted=False, reject_reason="lpips_too_low"),
        ],
        provenance={"preset": "tiny", "models": {"flux": "rev1"}, "timings": {"synthesis": 0.5}},
    )


def _rejected(seed: int) -> Sample:
    return Sample(sample_id=make_sample_id("broken", seed, "cfg"), source_id="broken", seed=seed,
                  status="rejected", reject_reason="bad_input:truncated: file ends early")


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    photos = [_photo(skdata.astronaut()), _photo(skdata.chelsea()), _photo(skdata.coffee())]
    rows = [_accepted(seed, photos[seed % 3]) for seed in range(7)]
    rows.insert(3, _rejected(3))
    half = _rejected(10)  # rejected after perception: has the real image only
    half.real_image = rows[0].real_image
    rows.append(half)
    return rows


@pytest.fixture
def shard(tmp_path: Path, samples: list[Sample]) -> Path:
    return write_shard(samples, tmp_path / "run" / "data" / "part-0.parquet", row_group_size=4)


def test_round_trip_is_lossless(shard: Path, samples: list[Sample]) -> None:
    back = list(iter_samples(shard))
    assert back == samples
    for original, read in zip(samples, back):
        assert read.image == original.image and read.real_image == original.real_image
        assert read.clean_image == original.clean_image
        if original.mask:
            assert np.array_equal(decode_mask(read.mask), decode_mask(original.mask))
    assert back[3].image == b"" and back[3].artifacts == [] and back[-1].real_image == samples[0].real_image
    assert back[0].artifacts[1].region is None and back[0].artifacts[1].lpips is None
    assert table_to_samples(samples_to_table(samples)) == samples


def test_directory_list_and_counts(shard: Path, samples: list[Sample], tmp_path: Path) -> None:
    run = shard.parent.parent
    second = write_shard(samples[:2], run / "data" / "part-1.parquet")
    (run / "data" / ".part-2.parquet.tmp").write_bytes(b"partial")  # hidden files are never read
    assert [s.sample_id for s in iter_samples(run)] == [s.sample_id for s in samples + samples[:2]]
    assert count_rows(run) == count_rows([shard, second]) == len(samples) + 2
    assert read_table(run / "data").num_rows == len(samples) + 2
    flat = tmp_path / "flat"
    write_shard(samples[:3], flat / "x.parquet")
    assert list(iter_samples(flat)) == samples[:3]


def test_fsspec_url(samples: list[Sample]) -> None:
    url = write_shard(samples, "memory://flawforge-test/run/data/part-0.parquet", row_group_size=3)
    assert url == "memory://flawforge-test/run/data/part-0.parquet"
    assert list(iter_samples("memory://flawforge-test/run")) == samples


def test_parquet_layout(shard: Path, samples: list[Sample]) -> None:
    table = pq.read_table(shard)
    assert table.num_rows == len(samples)
    assert table.schema.remove_metadata() == SHARD_SCHEMA.remove_metadata()
    assert json.loads(table.schema.metadata[b"flawforge"]) == {"schema_version": SCHEMA_VERSION}
    assert table.column("mask")[3].as_py() is None
    assert table.column("image")[0].as_py()["path"] == f"{samples[0].sample_id}_image.png"
    meta = pq.ParquetFile(shard).metadata
    assert meta.num_row_groups == 3
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        assert group.num_rows <= 4
        for j in range(group.num_columns):
            column = group.column(j)
            is_image = column.path_in_schema.split(".")[0] in IMAGE_COLUMNS
            assert column.compression == ("UNCOMPRESSED" if is_image else "ZSTD"), column.path_in_schema


def test_features_match_datasets() -> None:
    features = datasets.Features.from_dict(hf_features())
    assert features.to_dict() == hf_features()
    assert features._to_yaml_list() == hf_yaml_features()
    assert features.arrow_schema.remove_metadata() == SHARD_SCHEMA.remove_metadata()
    assert datasets.Features.from_arrow_schema(SHARD_SCHEMA) == features


def _check_hf(ds, samples: list[Sample]) -> None:
    assert len(ds) == len(samples)
    for row, sample in zip(ds, samples):
        for column in IMAGE_COLUMNS:
            data = getattr(sample, column)
            if not data:
                assert row[column] is None
                continue
            assert isinstance(row[column], Image.Image)
            assert row[column].mode == ("L" if column == "mask" else "RGB")
            assert row[column].size == SIZE
        if sample.mask:
            assert np.array_equal(np.asarray(row["mask"]), decode_mask(sample.mask))
        assert [a["tool"] for a in row["artifacts"]] == [a.tool for a in sample.artifacts]


def test_datasets_parquet_decodes_images(shard: Path, samples: list[Sample], tmp_path: Path) -> None:
    ds = datasets.load_dataset("parquet", data_files=str(shard), split="train", cache_dir=str(tmp_path / "hf"))
    _check_hf(ds, samples)


def test_card_drives_load_dataset(shard: Path, samples: list[Sample], tmp_path: Path) -> None:
    run = shard.parent.parent
    stats = {"accepted": 8, "rejected": 2, "rejected_by_reason": {"bad_input:truncated": 2},
             "per_tool": {"add": {"planned": 8, "accepted": 8, "acceptance": 1.0},
                          "fuse": {"planned": 0, "accepted": 0, "acceptance": None}},
             "rounds": [{"planned": 10, "accepted": 8}], "complete": True}
    card = write_dataset_card(run, stats, {"preset": "tiny", "seed": 0}, tiny=True)
    text = card.read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["configs"][0]["data_files"][0]["path"] == "data/*.parquet"
    assert set(front["task_categories"]) == {"image-segmentation", "image-classification",
                                             "visual-question-answering"}
    assert front["dataset_info"]["features"] == hf_yaml_features()
    assert "TINY PRESET" in text and "| add | 8 | 8 | 1.0 |" in text and "| bad_input:truncated | 2 |" in text
    assert "TINY PRESET" not in write_dataset_card(tmp_path / "full", stats, {}, tiny=False).read_text()
    ds = datasets.load_dataset(str(run), split="train", cache_dir=str(tmp_path / "hf"))
    _check_hf(ds, samples)


def test_failed_write_leaves_nothing(tmp_path: Path, samples: list[Sample]) -> None:
    bad = Sample(sample_id="bad", source_id="x", seed="not a seed")  # type: ignore[arg-type]
    target = tmp_path / "data" / "part-bad.parquet"
    with pytest.raises(Exception):
        write_shard(samples[:4] + [bad], target, row_group_size=2)  # fails on the third row group
    assert list(target.parent.iterdir()) == []
    write_shard(samples[:4], target)
    with pytest.raises(Exception):
        write_shard(samples[:2] + [bad], target, row_group_size=2)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert count_rows(target) == 4  # the committed shard is untouched


def test_transport_is_the_stored_schema_plus_failure_and_prompt(samples: list[Sample]) -> None:
    failed = Sample(sample_id="f", source_id="x", seed=1).fail("synthesis", RuntimeError("CUDA error"))
    encoded = Sample(sample_id="e", source_id="x", seed=2, prompt_embeds=b"safetensors bytes")
    table = samples_to_table([*samples, failed, encoded], transport=True)
    assert table.schema.remove_metadata() == TRANSPORT_SCHEMA.remove_metadata()
    assert TRANSPORT_SCHEMA.remove_metadata().names == [*SHARD_SCHEMA.names, "failure", "prompt_embeds"]
    assert not any(pa.types.is_string(f.type) and f.name in ("plan", "provenance") for f in TRANSPORT_SCHEMA)
    back = table_to_samples(table)
    assert back[:-2] == samples and back[-2] == failed and back[-2].failure["stage"] == "synthesis"
    assert back[-1] == encoded
    stored = table_to_samples(samples_to_table([encoded]))[0]  # never written to a shard
    assert stored.prompt_embeds == b""


def test_a_field_the_schema_lacks_is_refused_not_dropped(samples: list[Sample]) -> None:
    sample = table_to_samples(samples_to_table(samples[:1]))[0]
    sample.provenance["timings"]["invented_stage"] = 1.0
    with pytest.raises(ValueError, match=r"provenance.timings has fields the shard schema lacks: \['invented_stage'\]"):
        samples_to_table([sample])


def test_version_2_shards_still_read(samples: list[Sample]) -> None:
    """Schema v2 stored plan, provenance and each artifact's region as JSON strings."""
    row = sample_to_row(samples[0])
    row.update(schema_version=2, plan=json.dumps(samples[0].plan), provenance=json.dumps(samples[0].provenance))
    del row["negative_explanation"]
    for artifact in row["artifacts"]:
        del artifact["xaigd_category"], artifact["target_bbox"]
        region = artifact.pop("region")
        artifact["region_rle"] = None if region is None else json.dumps(region)
    old = row_to_sample(row)
    assert old.plan == samples[0].plan and old.provenance == samples[0].provenance
    assert old.negative_explanation == ""
    assert old.artifacts == [replace(a, xaigd_category=artifact_category(a), target_bbox=None)
                             for a in samples[0].artifacts]
    assert old.artifacts[0].box("target") == old.artifacts[0].box("changed") == [6, 4, 20, 12]  # falls back
    assert [a.xaigd_category for a in old.artifacts] == ["high-level-semantics", "low-level-edge_shape"]


def test_version_3_shards_read_without_target_bbox(samples: list[Sample]) -> None:
    """Schema 4 added ``target_bbox``; a v3 row reads it as None and its box falls back to ``bbox``."""
    row = sample_to_row(samples[0])
    row["schema_version"] = 3
    for artifact in row["artifacts"]:
        del artifact["target_bbox"]
    old = row_to_sample(row)
    assert [a.target_bbox for a in old.artifacts] == [None, None]
    assert samples[0].artifacts[0].box() == [8, 4, 16, 12] and samples[0].artifacts[0].box("changed") == [6, 4, 20, 12]
