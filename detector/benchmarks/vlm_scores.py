"""A VLM's replies on a public benchmark's own files, scored with that benchmark's metrics (``detector.vlm_eval``).

Replies are a JSONL file, one ``{"id": ..., "predict": reply}`` per image (``response`` / ``output`` are
accepted for ``predict``); ids are ArtifactBench's ``id``, SynthScars' image file name, X-AIGD's
``generator/uid``. A file without any ``id`` (LLaMA-Factory's ``generated_predictions.jsonl``) is
matched by line order to the benchmark's records (metadata order, sorted file names, parquet row order).
Replies are parsed by ``detector.vlm_replies`` (coordinates in pixels of the image as stored). Every image
is decoded whole before its reply is scored: a missing, unreadable or truncated image (or, for X-AIGD, one
whose size is not its row's) is a bad input, as in ``detector.eval --benchmark``.

* ``artifactbench`` — ArtifactBench detection, localisation and explanation (``detector.metrics.artifactbench``);
* ``synthscars`` — LEGION's per-image metrics of the union of the predicted boxes as a mask, and the
  ArtifactBench protocol as ArtiAgent runs it on SynthScars (each ref's first polygon → its tightest box,
  clipped; the caption's first line as the global reference; every image positive);
* ``xaigd`` — X-AIGD category-agnostic pixel metrics of the union of the predicted boxes (255 mask) and
  image-level scores (a reply with a box = "AI-generated").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, TypeVar

from detector.benchmarks.common import BadInputs, Skip, boxes_mask, decoded_size
from detector.benchmarks.legion import iter_legion, legion_truth
from detector.benchmarks.xaigd import XAIGD_SPLIT, iter_xaigd
from detector.benchmarks.artifactbench import iter_artifactbench
from detector.metrics.artifactbench import Sample, TextScorer, score
from detector.metrics.legion import LegionTotals, image_scores
from detector.metrics.xaigd import ARTIFACT, XaigdPixelCounts, polygon_mask, transform_mask, xaigd_image_level
from detector.vlm_replies import Reply, parse_reply

REPLY_KEYS = ("predict", "response", "output")
R = TypeVar("R")


class ReplyTally:
    """Parses replies and counts what parsing dropped."""

    def __init__(self):
        self.replies = self.invalid = self.malformed_items = self.degenerate_boxes = 0

    def parse(self, text: str, width: int | None = None, height: int | None = None) -> Reply:
        reply = parse_reply(text, width, height)
        self.replies += 1
        self.invalid += not reply.valid
        self.malformed_items += reply.malformed_items
        self.degenerate_boxes += reply.degenerate_boxes
        return reply

    def report(self) -> dict[str, int]:
        return {"n_replies": self.replies, "invalid_replies": self.invalid, "malformed_items": self.malformed_items,
                "degenerate_boxes": self.degenerate_boxes}


def reply_text(row: dict) -> str | None:
    return next((row[k] for k in REPLY_KEYS if isinstance(row.get(k), str)), None)


def replies_by_id(rows: list[dict], ids: list[str], bad: BadInputs) -> dict[str, str]:
    """Each benchmark id's reply text; missing, unknown, duplicate or textless rows are counted in ``bad``."""
    out: dict[str, str] = {}
    if any("id" in row for row in rows):
        known = set(ids)
        for number, row in enumerate(rows, 1):
            key, text = str(row.get("id")), reply_text(row)
            if text is None:
                bad.add("unreadable_line", f"line {number}", "no reply text")
            elif key not in known:
                bad.add("unknown_id", key)
            elif key in out:
                bad.add("duplicate_reply", key)
            else:
                out[key] = text
    else:
        if len(rows) != len(ids):
            bad.add("reply_count_mismatch", f"{len(rows)} replies", f"{len(ids)} benchmark records")
        for number, (key, row) in enumerate(zip(ids, rows), 1):
            if (text := reply_text(row)) is None:
                bad.add("unreadable_line", f"line {number}", "no reply text")
            else:
                out[key] = text
    for key in ids:
        if key not in out:
            bad.add("missing_reply", key)
    return out


def sized(records: Iterable[R], size: Callable[[R], tuple[int, int]], keep: Callable[[R], R] = lambda r: r
          ) -> list[tuple[R, tuple[int, int] | Skip]]:
    """Each record (``keep`` drops what need not stay in memory) with its decoded image size, or the ``Skip``
    its image raised: an image the VLM was shown must decode whole, a truncated file is a bad input."""
    out = []
    for record in records:
        try:
            out.append((keep(record), size(record)))
        except Skip as skip:
            out.append((keep(record), skip))
    return out


def _artifactbench(data: Path, rows: list[dict], scorer: TextScorer, tally: ReplyTally, bad: BadInputs) -> dict:
    records = sized(iter_artifactbench(data, bad), lambda r: decoded_size(r.image), lambda r: replace(r, image=None))
    replies = replies_by_id(rows, [r.id for r, _ in records], bad)
    samples = []
    for record, size in records:
        if record.id not in replies:
            continue
        if isinstance(size, Skip):
            bad.add(size.kind, record.id, size.detail)
            continue
        reply = tally.parse(replies[record.id], *size)
        samples.append(Sample(record.has_artifacts, record.boxes, record.texts, record.explanation, reply.boxes,
                              reply.texts, reply.explanation))
    return {"artifactbench": score(samples, scorer)}


def tightest_box(polygon: list[float], width: int, height: int) -> list[float]:
    """ArtiAgent's polygon → box: min / max of the flat coordinates, clipped to the image; [] under 3 points."""
    if len(polygon) < 6:
        return []
    xs, ys = polygon[0::2], polygon[1::2]
    return [max(0, min(xs)), max(0, min(ys)), min(width, max(xs)), min(height, max(ys))]


def _synthscars(data: Path, rows: list[dict], scorer: TextScorer, tally: ReplyTally, bad: BadInputs) -> dict:
    records = sized(iter_legion(data, bad), lambda r: decoded_size(r.image_path, exif=True))
    replies = replies_by_id(rows, [r.image_id for r, _ in records], bad)
    totals, samples = LegionTotals(), []
    for record, size in records:
        if record.image_id not in replies:
            continue
        try:
            if isinstance(size, Skip):
                raise size
            width, height = size
            gt = legion_truth(record, height, width)
        except Skip as skip:
            bad.add(skip.kind, record.image_id, skip.detail)
            continue
        reply = tally.parse(replies[record.image_id], width, height)
        totals.add(image_scores(boxes_mask(reply.boxes, height, width), gt))
        if not record.annotation:  # RichHF-18K heatmaps or no annotation: LEGION's metrics only
            continue
        refs = [r for r in record.annotation.get("refs") or [] if isinstance(r, dict) and r.get("segmentation")]
        boxes = [tightest_box(r["segmentation"][0], width, height) for r in refs]
        caption = record.annotation.get("caption") or ""
        texts = [r.get("explanation", "") for r, b in zip(refs, boxes) if b]
        samples.append(Sample(True, [b for b in boxes if b], texts,
                              caption.strip().split("\n")[0] if isinstance(caption, str) else "",
                              reply.boxes, reply.texts, reply.explanation))
    return {"synthscars": totals.report(), **({"artifactbench_protocol": score(samples, scorer)} if samples else {})}


def _xaigd(data: Path, rows: list[dict], tally: ReplyTally, bad: BadInputs, split: str, transform: str) -> dict:
    records = sized(iter_xaigd(data, split, bad), lambda r: decoded_size(r.image, expected=(r.width, r.height)),
                    lambda r: replace(r, image=None))
    replies = replies_by_id(rows, [r.key for r, _ in records], bad)
    overall, per_generator, guesses = XaigdPixelCounts(), defaultdict(XaigdPixelCounts), []
    for record, size in records:
        if record.key not in replies:
            continue
        if isinstance(size, Skip):
            bad.add(size.kind, record.key, size.detail)
            continue
        reply = tally.parse(replies[record.key], record.width, record.height)
        gt = transform_mask(polygon_mask(record.polygons, record.height, record.width), transform)
        pred = transform_mask(boxes_mask(reply.boxes, record.height, record.width, ARTIFACT), transform)
        overall.add(pred, gt)
        per_generator[record.generator].add(pred, gt)
        guesses.append(int(reply.has_artifacts))
    return {"xaigd": {"split": split, "transform": transform, "category_agnostic": overall.report(),
                      "per_generator": {g: c.report() for g, c in sorted(per_generator.items())},
                      "image_level": xaigd_image_level([1] * len(guesses), guesses)}}


AVERAGED_OVER = {
    "artifactbench": "detection and global explanation over every replied image; localisation and local "
                     "explanation over replied images with artifacts",
    "synthscars": "LEGION: mean over every replied image; ArtifactBench protocol: every image is positive",
    "xaigd": "pixel counts pooled over every replied image; image level over every replied image",
}


def score_benchmark(benchmark: str, data: str | Path, rows: list[dict], scorer: TextScorer, bad: BadInputs,
                    split: str = XAIGD_SPLIT, transform: str = "keep-original-size") -> dict:
    """``rows`` (parsed JSONL lines) scored against ``benchmark``'s files under ``data``."""
    tally, data = ReplyTally(), Path(data)
    if benchmark == "artifactbench":
        metrics = _artifactbench(data, rows, scorer, tally, bad)
    elif benchmark == "synthscars":
        metrics = _synthscars(data, rows, scorer, tally, bad)
    elif benchmark == "xaigd":
        metrics = _xaigd(data, rows, tally, bad, split, transform)
    else:
        raise ValueError(f"unknown benchmark {benchmark!r}")
    return {"benchmark": benchmark, "data": str(data), **tally.report(), **bad.report(),
            "averaged_over": AVERAGED_OVER[benchmark], **metrics}
