"""SynthScars / LEGION (LEGION's README): ``DIR/images/*`` and the annotation JSON in ``DIR/annoations/`` (the
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

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np

from detector.benchmarks.common import BadInputs, Skip, grey_mask
from detector.metrics.legion import heatmap_mask, synthscars_mask


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


def legion_truth(record: LegionRecord, height: int, width: int) -> np.ndarray:
    """A LEGION record's ground-truth mask at the image's size; ``Skip`` when it cannot be built."""
    if record.mask_path is not None:
        return heatmap_mask(grey_mask(record.mask_path, (height, width)))
    try:
        return synthscars_mask(record.polygons, height, width)
    except ValueError as err:
        raise Skip("malformed_polygon", str(err)) from err
