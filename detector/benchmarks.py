"""Readers of the public benchmarks' own on-disk layouts, and the tally of bad inputs met on the way.

* **X-AIGD** (``Coxy7/X-AIGD`` on the Hub): ``DIR/data/{split}-*.parquet`` (or ``DIR/{split}-*.parquet``)
  with columns ``generator``, ``uid``, ``width``, ``height``, ``labels`` (a list of
  ``{"label": category, "points": [[x, y], ...]}`` polygons, each labelled with one of X-AIGD's 7
  categories; a record keeps each polygon's category) and ``image`` (Hugging Face image struct
  ``{bytes, path}``); default split ``labeled_test``. Every labelled row is an AI-generated image.
* **SynthScars** (LEGION's README): ``DIR/images/*`` and one annotation JSON in ``DIR/annotations/``
  (also ``annoations/``, the README's spelling, or ``DIR`` itself): a list of ``{key: {"img_file_name",
  "caption", "refs": [{"segmentation": [[x1, y1, x2, y2, ...]], "explanation", ...}]}}``. An image's
  annotation is the first entry whose ``img_file_name`` contains the image's file name, as LEGION matches
  it; an image without one has an empty mask (counted as ``no_annotation``). ``DIR/test`` is used when
  ``DIR`` is the dataset root. LEGION's RichHF-18K layout, ``DIR/raw_imgs/*`` + ``DIR/heatmaps/*`` (same
  file names, any pixel > 0 = artifact), is read too.
* **ArtifactBench** (ArtiAgent's evaluation): ``DIR/metadata.json`` (or ``DIR/ours/metadata.json``), a list
  of ``{"id", "has_artifacts", "explanation", "bboxes" | "artifacts": [{"target_bbox" | "bbox" | "bbox_2d",
  "explanation" | "label"}]}``, and ``DIR/images/{id}.png``. Without ``has_artifacts`` a record is
  positive when it has boxes.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from detector.metrics_legion import heatmap_mask, synthscars_mask
from detector.metrics_xaigd import CATEGORIES

XAIGD_SPLIT = "labeled_test"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass
class BadInputs:
    """Inputs that could not be evaluated (or only partly), by kind, with the first few ids of each."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, item: str, detail: str = "") -> None:
        self.counts[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 5:
            shown.append(f"{item}: {detail}" if detail else item)

    def report(self) -> dict:
        return {"bad_inputs": dict(self.counts), "bad_input_examples": self.examples}


def open_image(source: Path | bytes, exif: bool = False) -> Image.Image:
    """An image file or encoded bytes as RGB (EXIF orientation applied when ``exif``); ``ValueError`` if unreadable."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return (ImageOps.exif_transpose(im) if exif else im).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------------------------- X-AIGD
@dataclass
class XaigdRecord:
    generator: str
    uid: str
    width: int
    height: int
    polygons: list[list[tuple[float, float]]]  # category-agnostic: every labelled polygon
    image: bytes | None
    categories: list[str] = field(default_factory=list)  # each polygon's X-AIGD category, in order

    @property
    def key(self) -> str:
        return f"{self.generator}/{self.uid}"

    @property
    def labels(self) -> list[tuple[str, list[tuple[float, float]]]]:
        """(category, polygon) pairs, X-AIGD's labels."""
        return list(zip(self.categories, self.polygons))


def xaigd_files(data: str | Path, split: str = XAIGD_SPLIT) -> list[Path]:
    data = Path(data)
    files = sorted((data / "data").glob(f"{split}-*.parquet")) or sorted(data.glob(f"{split}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no X-AIGD parquet files {split}-*.parquet under {data}/data or {data}")
    return files


def _xaigd_record(row: dict, bad: BadInputs) -> XaigdRecord | None:
    key = f"{row.get('generator')}/{row.get('uid')}"
    try:
        width, height = int(row["width"]), int(row["height"])
    except (KeyError, TypeError, ValueError):
        bad.add("malformed_record", key, "width / height")
        return None
    polygons, categories = [], []
    for label in row.get("labels") or ():
        if not isinstance(label, dict) or label.get("label") not in CATEGORIES:
            bad.add("unknown_category", key, str(label.get("label") if isinstance(label, dict) else label))
            return None
        try:
            points = [(float(p[0]), float(p[1])) for p in label.get("points") or () if isinstance(p, (list, tuple))
                      and len(p) >= 2]
        except (TypeError, ValueError) as err:
            bad.add("malformed_polygon", key, str(err))
            return None
        if len(points) < 3:
            bad.add("malformed_polygon", key, f"{len(points)} points")
            return None
        polygons.append(points)
        categories.append(label["label"])
    image = row.get("image")
    if isinstance(image, dict):
        image = image.get("bytes") or (Path(image["path"]).read_bytes() if image.get("path")
                                       and Path(image["path"]).is_file() else None)
    return XaigdRecord(str(row.get("generator")), str(row.get("uid")), width, height, polygons, image, categories)


def iter_xaigd(data: str | Path, split: str, bad: BadInputs, with_images: bool = True) -> Iterator[XaigdRecord]:
    """The split's rows in file and row order; unusable rows are counted in ``bad`` and skipped."""
    columns = ["generator", "uid", "width", "height", "labels"] + (["image"] if with_images else [])
    for path in xaigd_files(data, split):
        parquet = pq.ParquetFile(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=32, columns=present):
            for row in batch.to_pylist():
                if (record := _xaigd_record(row, bad)) is not None:
                    yield record


# ------------------------------------------------------------------------------------------- SynthScars
@dataclass
class LegionRecord:
    image_id: str  # the image's file name, LEGION's id
    image_path: Path
    polygons: list | None = None  # SynthScars: every ref's flat polygons
    mask_path: Path | None = None  # RichHF-18K: the heatmap
    annotation: dict = field(default_factory=dict)  # SynthScars: the matched entry (caption, refs)


def _annotation_entries(root: Path) -> list[dict]:
    for folder in (root / "annotations", root / "annoations", root):
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if files:
            entries = []
            for path in files:
                for item in json.loads(path.read_text()):
                    if isinstance(item, dict):
                        entries.extend(v for v in item.values() if isinstance(v, dict))
            return entries
    raise FileNotFoundError(f"no SynthScars annotation JSON under {root}/annotations, {root}/annoations or {root}")


def iter_legion(data: str | Path, bad: BadInputs) -> Iterator[LegionRecord]:
    """Every file of the images folder in name order, with its ground truth (polygons or a heatmap path)."""
    root = Path(data)
    if (root / "raw_imgs").is_dir() and (root / "heatmaps").is_dir():
        for path in sorted(p for p in (root / "raw_imgs").iterdir() if p.is_file()):
            yield LegionRecord(path.name, path, mask_path=root / "heatmaps" / path.name)
        return
    if not (root / "images").is_dir() and (root / "test" / "images").is_dir():
        root = root / "test"
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"no SynthScars images folder at {root}/images (or RichHF-18K raw_imgs/ + heatmaps/)")
    entries = _annotation_entries(root)
    for path in sorted(p for p in (root / "images").iterdir() if p.is_file()):
        entry = next((e for e in entries if path.name in str(e.get("img_file_name", ""))), None)
        if entry is None:
            bad.add("no_annotation", path.name, "scored against an empty mask, as LEGION does")
            yield LegionRecord(path.name, path, polygons=[])
            continue
        refs = entry.get("refs") or []
        segs = [r.get("segmentation", []) for r in refs if isinstance(r, dict)]
        if len(segs) != len(refs) or not all(isinstance(s, list) for s in segs):
            bad.add("malformed_polygon", path.name, "a ref without a segmentation list")
            continue
        yield LegionRecord(path.name, path, polygons=[p for s in segs for p in s], annotation=entry)


# ---------------------------------------------------------------------------------------- ArtifactBench
@dataclass
class ArtifactBenchRecord:
    id: str
    image_path: Path
    has_artifacts: bool
    boxes: list[list[float]]
    texts: list[str]  # each box's local explanation
    explanation: str  # the global explanation


def _gt_boxes(record: dict, key: str, bad: BadInputs) -> tuple[list[list[float]], list[str]]:
    if "bboxes" in record:
        texts = list(record.get("explanations") or [])
        raw = [(b, texts[i] if i < len(texts) else "") for i, b in enumerate(record["bboxes"] or [])]
    else:
        raw = [(a.get("target_bbox") or a.get("bbox") or a.get("bbox_2d"), a.get("explanation", a.get("label", "")))
               for a in record.get("artifacts") or [] if isinstance(a, dict)
               and (a.get("target_bbox") or a.get("bbox") or a.get("bbox_2d"))]
    boxes, texts = [], []
    for box, text in raw:
        try:
            values = [float(v) for v in box]
            if len(values) != 4 or not np.isfinite(values).all():
                raise ValueError(f"{box}")
        except (TypeError, ValueError):
            bad.add("malformed_box", key, str(box)[:60])
            continue
        boxes.append(values)
        texts.append(text if isinstance(text, str) else "")
    return boxes, texts


def read_artifactbench(data: str | Path, bad: BadInputs, need_images: bool = True) -> list[ArtifactBenchRecord]:
    """``metadata.json`` in order; records without an id, or (``need_images``) without their image, are skipped."""
    root = Path(data)
    if not (root / "metadata.json").is_file() and (root / "ours" / "metadata.json").is_file():
        root = root / "ours"
    if not (root / "metadata.json").is_file():
        raise FileNotFoundError(f"no ArtifactBench metadata.json at {root} (or {root}/ours)")
    out = []
    for number, record in enumerate(json.loads((root / "metadata.json").read_text())):
        if not isinstance(record, dict) or record.get("id") in (None, ""):
            bad.add("malformed_record", f"#{number}", "no id")
            continue
        key = str(record["id"])
        path = root / "images" / f"{key}.png"
        if need_images and not path.is_file():
            bad.add("missing_image", key, str(path))
            continue
        boxes, texts = _gt_boxes(record, key, bad)
        explanation = record.get("explanation") or ""
        out.append(ArtifactBenchRecord(key, path, bool(record.get("has_artifacts", bool(boxes))), boxes, texts,
                                       explanation if isinstance(explanation, str) else ""))
    return out


class Skip(Exception):
    """An input that cannot be evaluated: ``kind`` goes to ``BadInputs``, the evaluation goes on."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def boxes_mask(boxes: list[list[int]], height: int, width: int, value: int = 1) -> np.ndarray:
    """The union of [x1, y1, x2, y2) boxes as a (height, width) uint8 mask of ``value``."""
    mask = np.zeros((height, width), np.uint8)
    for x1, y1, x2, y2 in boxes:
        mask[max(0, int(y1)):max(0, int(y2)), max(0, int(x1)):max(0, int(x2))] = value
    return mask


def grey_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask file as a grey array of ``shape`` (height, width); ``Skip`` when missing, unreadable or mis-sized."""
    if not path.is_file():
        raise Skip("missing_mask", str(path))
    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L"))
    except (OSError, ValueError) as err:
        raise Skip("unreadable_mask", f"{path}: {err}") from err
    if mask.shape != tuple(shape):
        raise Skip("mask_size_mismatch", f"{path}: mask {mask.shape[::-1]}, image {tuple(shape)[::-1]} (w, h)")
    return mask


def image_size(path: Path, exif: bool = False) -> tuple[int, int]:
    """(width, height) from the file's header, EXIF rotation applied when ``exif``; ``Skip`` if unreadable."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            rotated = exif and im.getexif().get(0x0112) in (5, 6, 7, 8)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise Skip("unreadable_image", f"{type(err).__name__}: {err}") from err
    return (height, width) if rotated else (width, height)


def legion_truth(record: LegionRecord, height: int, width: int) -> np.ndarray:
    """A LEGION record's ground-truth mask at the image's size; ``Skip`` when it cannot be built."""
    if record.mask_path is not None:
        return heatmap_mask(grey_mask(record.mask_path, (height, width)))
    try:
        return synthscars_mask(record.polygons, height, width)
    except ValueError as err:
        raise Skip("malformed_polygon", str(err)) from err
