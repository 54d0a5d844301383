"""ArtifactBench / ArtiBench, ArtiAgent's benchmark, in either of its published layouts.

* **Parquet** (the Hub dataset ``KRAFTON/ArtiBench`` as downloaded): ``DIR/data/test-*.parquet`` (or
  ``DIR/test-*.parquet``) with columns ``id``, ``image`` (Hugging Face image struct ``{bytes, path}``),
  ``has_artifacts``, ``explanation`` (the global explanation) and ``bboxes`` (``[[x1, y1, x2, y2], ...]``).
* **metadata.json** (what ArtiAgent's evaluation reads: ``DatasetIterator`` ``ours``): ``DIR/metadata.json``
  (or ``DIR/ours/metadata.json``), a list of ``{"id", "has_artifacts", "explanation", "bboxes" |
  "artifacts": [{"target_bbox" | "bbox" | "bbox_2d", "explanation" | "label", ...}]}``, and
  ``DIR/images/{id}.png``. Boxes come from ``bboxes`` when present, else from ``artifacts`` (the authors'
  order of keys).

Each box's reference text is its artifact's ``explanation`` (else ``label``), the key ArtiAgent's curation
writes and its training-data generator reads; ``bboxes`` carry no text, so their images have no local
reference (``local_samples`` counts only images that do). Without ``has_artifacts`` a record is positive
when it has boxes. A ``metadata.json`` is used when both layouts are present. Unreadable files, records
without an id, missing images and malformed boxes are counted in ``BadInputs`` and skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from detector.benchmarks.common import BadInputs, image_field, parquet_rows

SPLIT = "test"
BOX_KEYS = ("target_bbox", "bbox", "bbox_2d")


@dataclass
class ArtifactBenchRecord:
    id: str
    image: Path | bytes | None  # the image file, its encoded bytes (parquet), or None when not kept
    has_artifacts: bool
    boxes: list[list[float]]
    texts: list[str]  # each box's local explanation; [] when the layout has none
    explanation: str  # the global explanation


def _artifact_box(artifact: dict):
    return next((artifact[k] for k in BOX_KEYS if artifact.get(k)), None)


def _gt_boxes(record: dict, key: str, bad: BadInputs) -> tuple[list[list[float]], list[str]]:
    if "bboxes" in record:
        raw = record["bboxes"]
        if isinstance(raw, str):  # a JSON-encoded column
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                bad.add("malformed_box", key, raw[:60])
                raw = []
        pairs, with_text = [(b, "") for b in raw or []], False
    else:
        pairs = [(_artifact_box(a), a.get("explanation", a.get("label", ""))) for a in record.get("artifacts") or []
                 if isinstance(a, dict) and _artifact_box(a)]
        with_text = True
    boxes, texts = [], []
    for box, text in pairs:
        try:
            values = [float(v) for v in box]
            if len(values) != 4 or not np.isfinite(values).all():
                raise ValueError(f"{box}")
        except (TypeError, ValueError):
            bad.add("malformed_box", key, str(box)[:60])
            continue
        boxes.append(values)
        texts.append(text if isinstance(text, str) else "")
    return boxes, texts if with_text else []


def _record(row: dict, number: int, image: Path | bytes | None, need_images: bool,
            bad: BadInputs) -> ArtifactBenchRecord | None:
    if not isinstance(row, dict) or row.get("id") in (None, ""):
        bad.add("malformed_record", f"#{number}", "no id")
        return None
    key = str(row["id"])
    if need_images and image is None:
        bad.add("missing_image", key)
        return None
    boxes, texts = _gt_boxes(row, key, bad)
    explanation = row.get("explanation") or ""
    has_artifacts = row.get("has_artifacts")
    return ArtifactBenchRecord(key, image if need_images else None,
                               bool(boxes) if has_artifacts is None else bool(has_artifacts), boxes, texts,
                               explanation if isinstance(explanation, str) else "")


def metadata_root(data: Path) -> Path | None:
    for root in (data, data / "ours"):
        if (root / "metadata.json").is_file():
            return root
    return None


def parquet_files(data: Path) -> list[Path]:
    return sorted((data / "data").glob(f"{SPLIT}-*.parquet")) or sorted(data.glob(f"{SPLIT}-*.parquet"))


def _from_metadata(root: Path, bad: BadInputs, need_images: bool) -> Iterator[ArtifactBenchRecord]:
    try:
        rows = json.loads((root / "metadata.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        bad.add("unreadable_file", "metadata.json", f"{type(err).__name__}: {err}")
        return
    if not isinstance(rows, list):
        bad.add("unreadable_file", "metadata.json", "not a list of records")
        return
    for number, row in enumerate(rows):
        path = root / "images" / f"{row.get('id')}.png" if isinstance(row, dict) else None
        if (record := _record(row, number, path if path and path.is_file() else None, need_images, bad)):
            yield record


def _from_parquet(files: list[Path], bad: BadInputs, need_images: bool) -> Iterator[ArtifactBenchRecord]:
    columns = ["id", "has_artifacts", "explanation", "bboxes", "artifacts"] + (["image"] if need_images else [])
    number = 0
    for path in files:
        for row in parquet_rows(path, columns, bad):
            if (record := _record(row, number, image_field(row.get("image"), path.parent), need_images, bad)):
                yield record
            number += 1


def iter_artifactbench(data: str | Path, bad: BadInputs, need_images: bool = True) -> Iterator[ArtifactBenchRecord]:
    """The benchmark's records in file order (metadata order, or parquet file and row order); with
    ``need_images`` each carries its image and a record without one is counted and skipped."""
    data = Path(data)
    if (root := metadata_root(data)) is not None:
        yield from _from_metadata(root, bad, need_images)
    elif files := parquet_files(data):
        yield from _from_parquet(files, bad, need_images)
    else:
        raise FileNotFoundError(f"no ArtifactBench metadata.json at {data} (or {data}/ours) and no "
                                f"{SPLIT}-*.parquet under {data}/data or {data}")
