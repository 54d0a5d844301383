"""LLaMA-Factory export of a real tiny-preset run: every image path exists, every box lies inside its
image, real photos come once per source as negatives, and the JSON loads with ``datasets``."""

import json
import re

from datasets import load_dataset
from PIL import Image

from shards.export import DATA_FILE, DATASET_NAME, NO_ARTIFACTS, main
from shards.reader import iter_samples


def test_llamafactory_export(factory_shards, tmp_path):
    out = tmp_path / "export"
    main(["--format", "llamafactory", "--shards", str(factory_shards), "--out", str(out)])
    accepted = [s for s in iter_samples(factory_shards) if s.status == "accepted"]

    info = json.loads((out / "dataset_info.json").read_text())[DATASET_NAME]
    assert info["formatting"] == "sharegpt" and info["columns"] == {"messages": "messages", "images": "images"}
    assert info["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant"}
    records = json.loads((out / info["file_name"]).read_text())
    negatives = [r for r in records if r["messages"][1]["content"] == NO_ARTIFACTS]
    positives = [r for r in records if r not in negatives]
    assert len(positives) == len(accepted)
    assert len(negatives) == len({s.source_id for s in accepted})  # one real photo per source
    for record in records:
        user, assistant = record["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        assert user["content"].count("<image>") == len(record["images"]) == 1
        assert not record["images"][0].startswith("/")
        image = Image.open(out / record["images"][0])  # every path exists and decodes
        if record in negatives:
            continue
        boxes = json.loads(re.search(r"```json\n(.*)\n```", assistant["content"], re.S).group(1))
        assert boxes and all(b["explanation"] and b["label"] for b in boxes)
        for b in boxes:
            x0, y0, x1, y1 = b["bbox_2d"]
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height

    loaded = load_dataset("json", data_files=str(out / DATA_FILE), split="train")
    assert loaded.num_rows == len(records) and loaded.column_names == ["messages", "images"]
