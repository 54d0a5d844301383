"""What every benchmark reader shares: the tally of bad inputs, image and parquet reading, ``Skip``.

Anything unreadable (a file, a row, a polygon, an image) is counted in ``BadInputs`` and skipped; only a
folder holding none of a benchmark's layouts is an error.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps


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
