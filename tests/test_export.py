"""LLaMA-Factory export of a real tiny-preset run: every image path exists, is written in the frame the
model sees (sides multiples of 28, within ``image_max_pixels``), every box lies inside its image,
real photos come once per source as negatives, train / val split by source, and both files load
with the ``datasets`` JSON loader. The box frame itself is checked in ``test_export_frame.py``."""

import json
import re
from dataclasses import replace

from datasets import load_dataset
from PIL import Image

from shards.export import NO_ARTIFACTS, SPLITS, ModelFrame, data_file, dataset_name, main
from shards.reader import iter_samples
from shards.record import Artifact, Sample
from shards.split import split_of

VAL_FRACTION = 0.3


def test_llamafactory_export(factory_shards, tmp_path):
    out = tmp_path / "export"
    main(["--format", "llamafactory", "--shards", str(factory_shards), "--out", str(out),
          "--val-fraction", str(VAL_FRACTION)])
    accepted = [s for s in iter_samples(factory_shards) if s.status == "accepted"]
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {dataset_name(split) for split in SPLITS}
    images_by_split = {}
    for split in SPLITS:
        entry = info[dataset_name(split)]
        assert entry["file_name"] == data_file(split) and entry["formatting"] == "sharegpt"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                 "assistant_tag": "assistant"}
        records = json.loads((out / entry["file_name"]).read_text())
        rows = [s for s in accepted if split_of(s.source_id, VAL_FRACTION) == split]
        negatives = [r for r in records if r["messages"][1]["content"].startswith(NO_ARTIFACTS)]
        assert len(records) - len(negatives) == len(rows) > 0
        assert len(negatives) == len({s.source_id for s in rows})  # one real photo per source
        images_by_split[split] = {r["images"][0] for r in records}
        for record in records:
            user, assistant = record["messages"]
            assert (user["role"], assistant["role"]) == ("user", "assistant")
            assert user["content"].count("<image>") == len(record["images"]) == 1
            assert not record["images"][0].startswith("/")
            image = Image.open(out / record["images"][0])  # every path exists and decodes
            assert image.width % 28 == image.height % 28 == 0 and image.width * image.height <= 768 * 768
            if record in negatives:
                continue
            boxes = json.loads(re.search(r"```json\n(.*)\n```", assistant["content"], re.S).group(1))
            assert boxes and all(b["explanation"] and b["label"] for b in boxes)
            for b in boxes:
                x0, y0, x1, y1 = b["bbox_2d"]
                assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        loaded = load_dataset("json", data_files=str(out / entry["file_name"]), split="train")
        assert loaded.num_rows == len(records) and loaded.column_names == ["messages", "images"]
    assert not images_by_split["train"] & images_by_split["val"]


def test_export_skips_images_with_an_unlabelled_edit_and_offers_both_negatives(tmp_path):
    """A ``curation.partial`` row (one artifact failed, still in the image) is never described; the
    negatives are the VAE reconstruction by default, the photo with ``--negatives real``, both written
    in the model's frame (64×48 → 56×56, bicubic)."""
    import numpy as np
    from skimage import data as skdata

    from shards.images import encode_png
    from shards.record import Artifact, Sample
    from shards.writer import write_shard

    photo = np.asarray(Image.fromarray(skdata.coffee()).resize((64, 48)))
    clean = photo // 2 + 10

    def row(sample_id: str, source_id: str, second_passed: bool) -> Sample:
        return Sample(sample_id=sample_id, source_id=source_id, seed=0, status="accepted",
                      real_image=encode_png(photo), clean_image=encode_png(clean), image=encode_png(255 - clean),
                      mask=encode_png(np.ones((48, 64), np.uint8)), global_explanation="broken",
                      negative_explanation="The <image> cup has one handle, as cups do.",
                      artifacts=[Artifact(tool="add", bbox=[0, 0, 10, 10], accepted=True, local_explanation="x"),
                                 Artifact(tool="fuse", bbox=[20, 20, 30, 30], accepted=second_passed)])

    write_shard([row("whole", "a", True), row("partial", "b", False)], tmp_path / "run" / "data" / "p.parquet")
    for negatives, column in (("clean", clean), ("real", photo)):
        out = tmp_path / f"export_{negatives}"
        main(["--format", "llamafactory", "--shards", str(tmp_path / "run"), "--out", str(out),
              "--val-fraction", "0", "--negatives", negatives])
        records = json.loads((out / data_file("train")).read_text())
        described = [r for r in records if not r["messages"][1]["content"].startswith(NO_ARTIFACTS)]
        negative = [r for r in records if r["messages"][1]["content"].startswith(NO_ARTIFACTS)]
        assert [r["images"][0] for r in described] == ["images/whole.png"]  # "partial" is skipped
        assert len(negative) == 1  # answered with the row's generated negative explanation, defused
        assert negative[0]["messages"][1]["content"] == f"{NO_ARTIFACTS}\nThe [image] cup has one handle, as cups do."
        size = ModelFrame().export_size(64, 48)
        assert size == (56, 56)
        expected = np.asarray(Image.fromarray(column).resize(size, Image.Resampling.BICUBIC))
        assert np.array_equal(np.asarray(Image.open(out / negative[0]["images"][0])), expected)


def test_an_empty_validation_split_is_reported(tmp_path, capsys):
    """Every source lands in train at ``--val-fraction 0``: the export still writes both files, and says the
    validation split is empty (stats and one warning line), instead of leaving a trainer to find out."""
    import numpy as np

    from shards.images import encode_png
    from shards.record import Artifact, Sample
    from shards.writer import write_shard

    pixels = encode_png(np.full((48, 64, 3), 90, np.uint8))
    row = Sample(sample_id="s", source_id="a", seed=0, status="accepted", real_image=pixels, clean_image=pixels,
                 image=pixels, mask=encode_png(np.ones((48, 64), np.uint8)), global_explanation="broken",
                 artifacts=[Artifact(tool="add", bbox=[0, 0, 10, 10], accepted=True, local_explanation="x")])
    write_shard([row], tmp_path / "run" / "data" / "p.parquet")
    out = tmp_path / "export"
    main(["--format", "llamafactory", "--shards", str(tmp_path / "run"), "--out", str(out), "--val-fraction", "0"])
    printed = capsys.readouterr()
    stats = json.loads(printed.out)
    assert stats["empty_splits"] == ["val"] and stats["records"] == {"train": 2, "val": 0}
    assert "warning: the val split is empty" in printed.err
    assert json.loads((out / data_file("val")).read_text()) == []


def test_export_boxes_are_the_target_cells_box_by_default(tmp_path):
    """``--boxes target`` (default) answers with ``target_bbox`` (the authors' label); ``changed`` with
    ``bbox`` (every changed pixel's box, one dilation cell wider)."""
    from shards.export import answer
    from shards.answers import parse_answer

    sample = Sample(sample_id="s", source_id="src", seed=0, status="accepted",
                    artifacts=[Artifact(tool="add", bbox=[16, 16, 80, 80], target_bbox=[32, 32, 64, 64],
                                        accepted=True, local_explanation="x")])
    assert parse_answer(answer(sample, 128, 128)).boxes == [[32, 32, 64, 64]]
    assert parse_answer(answer(sample, 128, 128, boxes="changed")).boxes == [[16, 16, 80, 80]]
    old = replace(sample.artifacts[0], target_bbox=None)  # a shard written before schema 4
    assert parse_answer(answer(replace(sample, artifacts=[old]), 128, 128)).boxes == [[16, 16, 80, 80]]
