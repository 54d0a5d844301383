"""Readers of the public benchmarks' own on-disk layouts, and the tally of bad inputs met on the way.

Anything unreadable (a file, a row, a polygon, an image) is counted in ``BadInputs`` and skipped; only a
folder holding none of a benchmark's layouts is an error. ArtifactBench / ArtiBench is read by
``detector.benchmarks_artifactbench``.

* **X-AIGD** (``Coxy7/X-AIGD`` on the Hub, read as its ``metrics/data.py`` reads it):
  ``DIR/data/{split}-*.parquet`` (or ``DIR/{split}-*.parquet``) with columns ``generator``, ``uid``,
  ``width``, ``height``, ``labels`` (a list of ``{"label": category, "points": [[x, y], ...]}`` polygons,
  each with one of X-AIGD's 7 categories; a record keeps each polygon's category) and ``image`` (Hugging
  Face image struct ``{bytes, path}``); default split ``labeled_test``. Every labelled row is an
  AI-generated image. A point that is not an ``[x, y]`` pair is dropped, as X-AIGD does; a polygon left
  with fewer than 3 points (or a non-numeric / non-finite coordinate) is counted as ``malformed_polygon``
  and skipped alone, the image keeping its other polygons (X-AIGD's mask builder skips and counts it
  too); an unknown category drops its row (``unknown_category``: X-AIGD stops on it).
* **SynthScars** (LEGION's README): ``DIR/images/*`` and the annotation JSON in ``DIR/annoations/`` (the
  README's spelling), ``DIR/annotations/`` (ArtiAgent's evaluation) or ``DIR`` itself: a list of
  ``{key: {"img_file_name", "caption", "refs": [{"segmentation": [[x1, y1, x2, y2, ...]], "explanation",
  ...}]}}``. An image gets the entry whose ``img_file_name`` names exactly its file (the last path
  component), as ArtiAgent's evaluation joins ``images/`` and ``img_file_name``; never a substring match
  (LEGION's ``image_id in img_file_name`` would give ``1.jpg`` the annotation of ``11.jpg``). An image
  without an entry has an empty mask (``no_annotation``), an entry without an image is counted
  (``missing_image``), a second entry naming the same file is ignored (``duplicate_annotation``).
  ``DIR/test`` is used when ``DIR`` is the dataset root. LEGION's RichHF-18K layout, ``DIR/raw_imgs/*`` +
  ``DIR/heatmaps/*`` (same file names, any pixel > 0 = artifact), is read too.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from detector.metrics_legion import heatmap_mask, synthscars_mask
from detector.metrics_xaigd import CATEGORIES

XAIGD_SPLIT = "labeled_test"


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
    """An image file or encoded bytes, fully decoded, as RGB (EXIF orientation applied when ``exif``);
    ``ValueError`` if unreadable (a truncated file included)."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return (ImageOps.exif_transpose(im) if exif else im).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"not a readable image ({type(err).__name__}: {err})") from err


def parquet_rows(path: Path, columns: list[str], bad: BadInputs) -> Iterator[dict]:
    """The rows of one parquet file (only ``columns`` that exist); a file that cannot be read, or stops
    reading part-way, is counted as ``unreadable_file``."""
    try:
        parquet = pq.ParquetFile(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=32, columns=present):
            yield from batch.to_pylist()
    except (OSError, pa.ArrowException) as err:
        bad.add("unreadable_file", path.name, f"{type(err).__name__}: {err}")


def image_field(value, root: Path) -> bytes | Path | None:
    """A Hugging Face image cell (``{bytes, path}`` or raw bytes) as bytes, or as a file that exists
    (``path`` absolute or under ``root``); None when it holds neither."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, dict):
        return None
    if value.get("bytes"):
        return value["bytes"]
    path = value.get("path")
    for candidate in ((Path(path), root / path) if path else ()):
        if candidate.is_file():
            return candidate
    return None


# ----------------------------------------------------------------------------------------------- X-AIGD
@dataclass
class XaigdRecord:
    generator: str
    uid: str
    width: int
    height: int
    polygons: list[list[tuple[float, float]]]  # category-agnostic: every well-formed labelled polygon
    image: bytes | Path | None
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


def _polygon(points) -> list[tuple[float, float]]:
    """X-AIGD's points: ``[x, y]`` pairs kept, anything else dropped; ``ValueError`` when fewer than 3 remain
    or a coordinate is not a finite number."""
    kept = []
    for point in points or ():
        if not isinstance(point, (list, tuple)) or len(point) < 2:
            continue
        try:
            x, y = float(point[0]), float(point[1])
        except (TypeError, ValueError) as err:
            raise ValueError(f"coordinate {point!r}: {err}") from err
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"coordinate {point!r} is not finite")
        kept.append((x, y))
    if len(kept) < 3:
        raise ValueError(f"{len(kept)} points, a polygon needs 3")
    return kept


def _xaigd_record(row: dict, root: Path, bad: BadInputs) -> XaigdRecord | None:
    key = f"{row.get('generator')}/{row.get('uid')}"
    try:
        width, height = int(row["width"]), int(row["height"])
    except (KeyError, TypeError, ValueError):
        bad.add("malformed_record", key, "width / height")
        return None
    labels = row.get("labels") or ()
    unknown = [lab.get("label") if isinstance(lab, dict) else lab for lab in labels
               if not isinstance(lab, dict) or lab.get("label") not in CATEGORIES]
    if unknown:
        bad.add("unknown_category", key, str(unknown[0]))
        return None
    polygons, categories = [], []
    for number, label in enumerate(labels):
        try:
            polygons.append(_polygon(label.get("points")))
        except ValueError as err:
            bad.add("malformed_polygon", key, f"polygon {number}: {err}")
            continue
        categories.append(label["label"])
    return XaigdRecord(str(row.get("generator")), str(row.get("uid")), width, height, polygons,
                       image_field(row.get("image"), root), categories)


def iter_xaigd(data: str | Path, split: str, bad: BadInputs, with_images: bool = True) -> Iterator[XaigdRecord]:
    """The split's rows in file and row order; unusable rows and files are counted in ``bad`` and skipped."""
    columns = ["generator", "uid", "width", "height", "labels"] + (["image"] if with_images else [])
    for path in xaigd_files(data, split):
        for row in parquet_rows(path, columns, bad):
            if (record := _xaigd_record(row, path.parent, bad)) is not None:
                yield record


# ------------------------------------------------------------------------------------------- SynthScars
@dataclass
class LegionRecord:
    image_id: str  # the image's file name, LEGION's id
    image_path: Path
    polygons: list | None = None  # SynthScars: every ref's flat polygons
    mask_path: Path | None = None  # RichHF-18K: the heatmap
    annotation: dict = field(default_factory=dict)  # SynthScars: the matched entry (caption, refs)


def file_name(img_file_name: str) -> str:
    """The file an ``img_file_name`` names: its last path component (``/`` or ``\\`` separated)."""
    return PurePosixPath(str(img_file_name).replace("\\", "/")).name


def _annotation_entries(root: Path, bad: BadInputs) -> list[dict]:
    for folder in (root / "annoations", root / "annotations", root):
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if files:
            entries = []
            for path in files:
                try:
                    items = json.loads(path.read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                    bad.add("unreadable_file", path.name, f"{type(err).__name__}: {err}")
                    continue
                for item in items if isinstance(items, list) else [items]:
                    if isinstance(item, dict):
                        entries.extend(v for v in item.values() if isinstance(v, dict))
            return entries
    raise FileNotFoundError(f"no SynthScars annotation JSON under {root}/annoations, {root}/annotations or {root}")


def _entries_by_file(entries: list[dict], images: set[str], bad: BadInputs) -> dict[str, dict]:
    """Each image file name's entry (the first naming it); extra and image-less entries are counted."""
    by_file: dict[str, dict] = {}
    for entry in entries:
        name = file_name(entry.get("img_file_name", ""))
        if name in by_file:
            bad.add("duplicate_annotation", name, "a later entry naming the same file is ignored")
        elif name not in images:
            bad.add("missing_image", name or "(no img_file_name)", "annotated, but not in images/")
        else:
            by_file[name] = entry
    return by_file


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
    paths = sorted(p for p in (root / "images").iterdir() if p.is_file())
    by_file = _entries_by_file(_annotation_entries(root, bad), {p.name for p in paths}, bad)
    for path in paths:
        entry = by_file.get(path.name)
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


def decoded_size(source: Path | bytes | None, exif: bool = False,
                 expected: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) of an image file or encoded bytes after decoding it whole (a truncated file fails),
    EXIF rotation applied when ``exif``; ``Skip`` when it is missing, unreadable or not ``expected`` (w, h)."""
    if source is None:
        raise Skip("missing_image", "no image in the record")
    try:
        size = open_image(source, exif).size
    except ValueError as err:
        raise Skip("unreadable_image", str(err)) from err
    if expected is not None and size != tuple(expected):
        raise Skip("size_mismatch", f"image {size}, record {tuple(expected)} (w, h)")
    return size


def legion_truth(record: LegionRecord, height: int, width: int) -> np.ndarray:
    """A LEGION record's ground-truth mask at the image's size; ``Skip`` when it cannot be built."""
    if record.mask_path is not None:
        return heatmap_mask(grey_mask(record.mask_path, (height, width)))
    try:
        return synthscars_mask(record.polygons, height, width)
    except ValueError as err:
        raise Skip("malformed_polygon", str(err)) from err
