"""X-AIGD (``Coxy7/X-AIGD`` on the Hub, read as its ``metrics/data.py`` reads it):
``DIR/data/{split}-*.parquet`` (or ``DIR/{split}-*.parquet``) with columns ``generator``, ``uid``,
``width``, ``height``, ``labels`` (a list of ``{"label": category, "points": [[x, y], ...]}`` polygons,
each with one of X-AIGD's 7 categories; a record keeps each polygon's category) and ``image`` (Hugging
Face image struct ``{bytes, path}``); default split ``labeled_test``. Every labelled row is an
AI-generated image. A point that is not an ``[x, y]`` pair is dropped, as X-AIGD does; a polygon left
with fewer than 3 points (or a non-numeric / non-finite coordinate) is counted as ``malformed_polygon``
and skipped alone, the image keeping its other polygons (X-AIGD's mask builder skips and counts it
too); an unknown category drops its row (``unknown_category``: X-AIGD stops on it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from detector.benchmarks.common import BadInputs, image_field, parquet_rows
from detector.metrics.xaigd import CATEGORIES

XAIGD_SPLIT = "labeled_test"


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
