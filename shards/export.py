"""Export shards as a LLaMA-Factory ShareGPT dataset for fine-tuning a VLM explainer (Qwen2.5-VL).

``python -m shards.export --format llamafactory --shards DIR [DIR ...] --out EXPORT [--max-pixels N]``

Writes ``EXPORT/images/*.png`` (every accepted row's artifact image, and once per source its
negative: ``--negatives clean`` the VAE reconstruction the artifacts were composited onto, the
default, so the decoder's fingerprint is no cue; ``real`` the camera photo; ``both``),
``EXPORT/flawforge_train.json`` and ``EXPORT/flawforge_val.json`` (lists of
``{"messages": [...], "images": [...]}`` records, image paths relative to ``EXPORT``: train with
LLaMA-Factory's ``dataset_dir: EXPORT``, or set ``media_dir: EXPORT``) and ``EXPORT/dataset_info.json``
naming them ``flawforge_train`` / ``flawforge_val``. The split is ``shards.split``'s, by source image,
with the same ``--val-fraction`` as the detector's: fine-tune on ``flawforge_train``, predict on
``flawforge_val``, score with ``detector.vlm_eval``.

**The model's frame.** Qwen2.5-VL grounds in pixels of the image it *receives*. LLaMA-Factory first
shrinks an image of more than ``image_max_pixels`` pixels (768², default) to that area (and enlarges
one under ``image_min_pixels``), then the Qwen2-VL processor's ``smart_resize`` rounds both sides to
multiples of 28; neither touches the text. So every image is written at that final size
(``ModelFrame.export_size``: a fixed point of both steps, so neither resizes it again) and its boxes
are scaled into it. Export with ``--max-pixels`` no larger than the ``image_max_pixels`` used for
training and prediction. The assistant answers with a JSON list of the artifacts in Qwen2.5-VL's
grounding convention — ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` in absolute pixels of the
exported image — each with its local explanation, followed by the global explanation; a negative
is answered "no artifacts". Generated text never carries a media placeholder (``<image>``,
``<video>``, ``<audio>``) or a chat special token (``<|...|>``): ``plain_text`` defuses them, so the
placeholder count LLaMA-Factory checks is one ``<image>`` per image. An image with an artifact that
failed curation (kept only by ``curation.partial`` runs) is never exported: its answer would not
describe a visible edit. ``parse_answer`` takes such a reply apart again (for scoring a fine-tuned
model's answers, ``detector.vlm_eval``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from shards.answers import NO_ARTIFACTS, ParsedAnswer, parse_answer  # noqa: F401  (re-exported)
from shards.images import decode_image, encode_png
from shards.reader import iter_samples
from shards.record import NEGATIVE_COLUMNS, BoxKind, Sample
from shards.split import DEFAULT_VAL_FRACTION, split_of

SPLITS = ("train", "val")
QUESTION = ("<image>Does this image contain structural artifacts (extra, missing, distorted or fused parts)? "
            "Locate each one with a bounding box and explain it.")
_MEDIA = re.compile(r"<(image|video|audio)>", re.I)  # LLaMA-Factory's placeholders
_SPECIAL = re.compile(r"<\|([^<>|]*)\|>")  # chat special tokens: <|im_end|>, <|image_pad|>, ...


def plain_text(text: str) -> str:
    """Generated text made inert: ``<image>`` → ``[image]`` (also video / audio), ``<|x|>`` → ``[x]``."""
    return _SPECIAL.sub(r"[\1]", _MEDIA.sub(r"[\1]", text))


@dataclass(frozen=True)
class ModelFrame:
    """How the training stack resizes an image before the VLM sees it.

    LLaMA-Factory (``image_max_pixels`` / ``image_min_pixels``, its defaults here) rescales the area
    into range with sides ``int(side * sqrt(limit / area))``, lifts a side under 28 px to 28 and
    caps the aspect ratio at 200; then the Qwen2-VL image processor's ``smart_resize`` rounds both
    sides to multiples of ``factor`` (patch 14 × merge 2) within its own pixel range (Qwen2.5-VL's
    preprocessor defaults here).
    """

    max_pixels: int = 768 * 768
    min_pixels: int = 32 * 32
    factor: int = 28
    processor_min_pixels: int = 56 * 56
    processor_max_pixels: int = 16384 * 28 * 28

    def __post_init__(self) -> None:
        if self.factor < 1 or not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need factor ≥ 1 and 0 < min_pixels ≤ max_pixels, got {self}")
        if self.max_pixels < self.processor_min_pixels:
            raise ValueError(f"max_pixels {self.max_pixels} is below the processor's min_pixels "
                             f"{self.processor_min_pixels}: no image size survives both resizes")

    def llamafactory_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after LLaMA-Factory's pre-resize of a Qwen2-VL image."""
        def to_area(area: int) -> tuple[int, int]:
            scale = math.sqrt(area / (width * height))
            return max(1, int(width * scale)), max(1, int(height * scale))  # LLaMA-Factory fails on a 0

        width, height = to_area(self.max_pixels) if width * height > self.max_pixels else (width, height)
        width, height = to_area(self.min_pixels) if width * height < self.min_pixels else (width, height)
        width, height = (max(width, 28), max(height, 28)) if min(width, height) < 28 else (width, height)
        width = height * 180 if width / height > 200 else width
        return width, width * 180 if height / width > 200 else height

    def processor_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the Qwen2-VL processor's ``smart_resize``."""
        f = self.factor
        if max(width, height) / min(width, height) > 200:
            raise ValueError(f"aspect ratio of {width}x{height} is over 200")
        w, h = round(width / f) * f, round(height / f) * f
        if w * h > self.processor_max_pixels:
            beta = math.sqrt(width * height / self.processor_max_pixels)
            w, h = max(f, math.floor(width / beta / f) * f), max(f, math.floor(height / beta / f) * f)
        elif w * h < self.processor_min_pixels:
            beta = math.sqrt(self.processor_min_pixels / (width * height))
            w, h = math.ceil(width * beta / f) * f, math.ceil(height * beta / f) * f
        return w, h

    def seen_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the image the model receives for a file of ``width`` × ``height``."""
        return self.processor_size(*self.llamafactory_size(width, height))

    def export_size(self, width: int, height: int) -> tuple[int, int]:
        """The size to write an image at: what the model would see, and left as it is by both resizes.

        Rounding to multiples of ``factor`` can push the area just over ``max_pixels`` (LLaMA-Factory
        would then shrink the file once more): then the stable size nearest to LLaMA-Factory's is used.
        """
        size = self.seen_size(width, height)
        if not self._stable(size):
            size = self._nearest_stable(*self.llamafactory_size(width, height))
        if not self._stable(size):
            raise ValueError(f"no stable model frame for a {width}x{height} image under {self}")
        return size

    def _nearest_stable(self, width: int, height: int) -> tuple[int, int]:
        """Sides in multiples of ``factor``, area within both pixel ranges, nearest (L1) to ``width`` × ``height``."""
        f, lo = self.factor, max(self.min_pixels, self.processor_min_pixels)
        hi = min(self.max_pixels, self.processor_max_pixels)
        side = -(-28 // f) * f  # LLaMA-Factory lifts a side under 28 px
        best: tuple[int, int, int, int] = (math.inf, 0, side, side)  # (distance, -area, w, h)
        for w in range(side, hi // side + 1, f):
            h_lo = max(side, -(-lo // (w * f)) * f, -(-w // (200 * f)) * f)  # aspect ratio ≤ 200 too
            h_hi = min(hi // (w * f), 200 * w // f) * f
            if h_lo <= h_hi:
                h = min(max(round(height / f) * f, h_lo), h_hi)
                best = min(best, (abs(w - width) + abs(h - height), -w * h, w, h))
        return best[2], best[3]

    def _stable(self, size: tuple[int, int]) -> bool:
        return self.llamafactory_size(*size) == size and self.processor_size(*size) == size


def dataset_name(split: str) -> str:
    return f"flawforge_{split}"


def data_file(split: str) -> str:
    return f"flawforge_{split}.json"


@dataclass
class ExportStats:
    artifact_images: int = 0
    negative_images: int = 0
    skipped_partial: int = 0  # accepted rows with a failed artifact in the image
    resized_images: int = 0  # written at the model's frame, not at their stored size
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    empty_splits: list[str] = field(default_factory=list)  # splits with no record: e.g. no accepted row of a val photo


def scale_box(bbox: Sequence[int], size: tuple[int, int], target: tuple[int, int]) -> list[int]:
    """[x0, y0, x1, y1] in pixels of an image of ``size`` (w, h), clipped to it, in pixels of ``target``."""
    (w, h), (tw, th) = size, target
    x0, x1 = (round(min(max(x, 0), w) * tw / w) for x in (bbox[0], bbox[2]))
    y0, y1 = (round(min(max(y, 0), h) * th / h) for y in (bbox[1], bbox[3]))
    return [x0, y0, max(x1, min(x0 + 1, tw)), max(y1, min(y0 + 1, th))]  # a box keeps at least one pixel


def answer(sample: Sample, width: int, height: int, target: tuple[int, int] | None = None,
           boxes: BoxKind = "target") -> str:
    """The assistant turn for an accepted row of ``width`` × ``height`` pixels: a ```json``` list of boxes
    (``Artifact.box(boxes)`` in pixels of ``target`` (w, h), default the row's own size) with
    explanations, then the global one."""
    target = target or (width, height)
    items = [{"bbox_2d": scale_box(a.box(boxes), (width, height), target), "label": plain_text(a.label or a.tool),
              "explanation": plain_text(a.local_explanation)}
             for a in sample.artifacts if a.accepted and len(a.box(boxes)) == 4]
    text = "```json\n" + json.dumps(items, indent=2, ensure_ascii=False) + "\n```"
    return f"{text}\n{plain_text(sample.global_explanation)}".strip()


def negative_answer(sample: Sample) -> str:
    """The assistant turn for a negative image: ``NO_ARTIFACTS``, then the row's generated explanation
    of why the photo is flawless (``negative_explanation``), when curation wrote one."""
    explanation = plain_text(sample.negative_explanation).strip()
    return f"{NO_ARTIFACTS}\n{explanation}" if explanation else NO_ARTIFACTS


def _record(image_path: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": reply}],
            "images": [image_path]}


def dataset_info() -> dict:
    """LLaMA-Factory's ``dataset_info.json`` entries for the exported files (ShareGPT formatting)."""
    return {dataset_name(split): {
        "file_name": data_file(split),
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
    } for split in SPLITS}


def _write_image(data: bytes, path: Path, frame: ModelFrame, stats: ExportStats
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Write an image at ``frame``'s export size (bicubic, as both resizes are); its stored and written sizes."""
    image = decode_image(data)
    size = frame.export_size(image.width, image.height)
    if size == image.size:
        path.write_bytes(data)
    else:
        path.write_bytes(encode_png(image.resize(size, Image.Resampling.BICUBIC)))
        stats.resized_images += 1
    return image.size, size


def export_llamafactory(shards: str | Path | Sequence[str | Path], out: str | Path,
                        val_fraction: float = DEFAULT_VAL_FRACTION, negatives: str = "clean",
                        frame: ModelFrame | None = None, boxes: BoxKind = "target") -> ExportStats:
    """Write the images (at ``frame``'s size, default LLaMA-Factory's + Qwen2.5-VL's), the train / val
    conversations and ``dataset_info.json`` under ``out``."""
    out, frame = Path(out), frame or ModelFrame()
    (out / "images").mkdir(parents=True, exist_ok=True)
    records: dict[str, list[dict]] = {split: [] for split in SPLITS}
    stats, seen_negative = ExportStats(), set()
    for sample in iter_samples(shards):
        if sample.status != "accepted" or not sample.image:
            continue
        if not all(a.accepted for a in sample.artifacts):
            stats.skipped_partial += 1
            continue
        split = records[split_of(sample.source_id, val_fraction)]
        rel = f"images/{sample.sample_id}.png"
        (width, height), written = _write_image(sample.image, out / rel, frame, stats)
        split.append(_record(rel, answer(sample, width, height, written, boxes)))
        stats.artifact_images += 1
        for column in NEGATIVE_COLUMNS[negatives]:
            data = getattr(sample, column)
            if data and (sample.source_id, column) not in seen_negative:
                seen_negative.add((sample.source_id, column))
                rel = f"images/{sample.sample_id}_{column.removesuffix('_image')}.png"
                _write_image(data, out / rel, frame, stats)
                split.append(_record(rel, negative_answer(sample)))
                stats.negative_images += 1
    for name, rows in records.items():
        (out / data_file(name)).write_text(json.dumps(rows, indent=2, ensure_ascii=False))
        stats.records[name] = len(rows)
    stats.empty_splits = [name for name, rows in records.items() if not rows]
    (out / "dataset_info.json").write_text(json.dumps(dataset_info(), indent=2))
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", choices=["llamafactory"], required=True)
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of source images held out (same split as detector.train's)")
    parser.add_argument("--negatives", choices=sorted(NEGATIVE_COLUMNS), default="clean",
                        help="'no artifacts' images: the VAE reconstruction (clean, default), the photo, or both")
    default = ModelFrame()
    parser.add_argument("--max-pixels", type=int, default=default.max_pixels,
                        help="LLaMA-Factory's image_max_pixels for training and prediction (default 768*768): "
                             "images are written at the size the model then sees")
    parser.add_argument("--min-pixels", type=int, default=default.min_pixels,
                        help="LLaMA-Factory's image_min_pixels (default 32*32)")
    parser.add_argument("--factor", type=int, default=default.factor,
                        help="side multiple of the VLM's processor: patch size × merge size (Qwen2/2.5-VL: 28)")
    parser.add_argument("--boxes", choices=["target", "changed"], default="target",
                        help="target: the target cells' tight box (the authors' label, default); changed: the box "
                             "of every changed pixel (one dilation cell wider)")
    args = parser.parse_args(argv)
    try:
        frame = ModelFrame(args.max_pixels, args.min_pixels, args.factor)
    except ValueError as err:
        parser.error(str(err))
    stats = export_llamafactory(args.shards, args.out, args.val_fraction, args.negatives, frame, args.boxes)
    print(json.dumps({"out": args.out, "image_max_pixels": frame.max_pixels, "image_min_pixels": frame.min_pixels,
                      **stats.__dict__}))
    for name in stats.empty_splits:
        print(f"warning: the {name} split is empty: no accepted row of a source held out for it (split by source, "
              f"--val-fraction {args.val_fraction}); use more source images or another --val-fraction", file=sys.stderr)


if __name__ == "__main__":
    main()
