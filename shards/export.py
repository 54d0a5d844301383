"""Export shards as a LLaMA-Factory ShareGPT dataset for fine-tuning a VLM explainer (Qwen2.5-VL).

``python -m shards.export --format llamafactory --shards DIR [DIR ...] --out EXPORT``

Writes ``EXPORT/images/*.png`` (every accepted row's artifact image, and once per source its
negative: ``--negatives clean`` the VAE reconstruction the artifacts were composited onto, the
default, so the decoder's fingerprint is no cue; ``real`` the camera photo; ``both``),
``EXPORT/flawforge_train.json`` and ``EXPORT/flawforge_val.json`` (lists of
``{"messages": [...], "images": [...]}`` records, image paths relative to ``EXPORT``, which is
LLaMA-Factory's default media directory) and ``EXPORT/dataset_info.json`` naming them
``flawforge_train`` / ``flawforge_val``. The split is ``shards.split``'s, by source image, with the
same ``--val-fraction`` as the detector's: fine-tune on ``flawforge_train``, predict on
``flawforge_val``, score with ``detector.vlm_eval``. The assistant answers with a JSON list of the artifacts in
Qwen2.5-VL's grounding convention — ``{"bbox_2d": [x1, y1, x2, y2], "label": ...}`` in absolute
pixels of the image as stored — each with its local explanation, followed by the global
explanation; a negative is answered "no artifacts". An image with an artifact that failed curation
(kept only by ``curation.partial`` runs) is never exported: its answer would not describe a visible
edit. ``parse_answer`` takes such a reply apart
again (for scoring a fine-tuned model's answers, ``detector.vlm_eval``).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from shards.images import decode_image
from shards.reader import iter_samples
from shards.record import NEGATIVE_COLUMNS, Artifact, Sample
from shards.split import DEFAULT_VAL_FRACTION, split_of

SPLITS = ("train", "val")
QUESTION = ("<image>Does this image contain structural artifacts (extra, missing, distorted or fused parts)? "
            "Locate each one with a bounding box and explain it.")
NO_ARTIFACTS = "No artifacts: every object and part in this image is structurally plausible."


def dataset_name(split: str) -> str:
    return f"flawforge_{split}"


def data_file(split: str) -> str:
    return f"flawforge_{split}.json"


@dataclass
class ExportStats:
    artifact_images: int = 0
    negative_images: int = 0
    skipped_partial: int = 0  # accepted rows with a failed artifact in the image
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))


def _box(artifact: Artifact, width: int, height: int) -> list[int]:
    """The artifact's [x0, y0, x1, y1], clipped to the image (Qwen2.5-VL absolute pixels)."""
    x0, y0, x1, y1 = artifact.bbox
    return [min(max(x0, 0), width), min(max(y0, 0), height), min(max(x1, 0), width), min(max(y1, 0), height)]


def answer(sample: Sample, width: int, height: int) -> str:
    """The assistant turn for an accepted row: a ```json``` list of boxes with explanations, then the global one."""
    items = [{"bbox_2d": _box(a, width, height), "label": a.label or a.tool, "explanation": a.local_explanation}
             for a in sample.artifacts if a.accepted and len(a.bbox) == 4]
    text = "```json\n" + json.dumps(items, indent=2, ensure_ascii=False) + "\n```"
    return f"{text}\n{sample.global_explanation}".strip()


@dataclass
class ParsedAnswer:
    """A reply in ``answer``'s format, taken apart; ``valid`` is False when its JSON block does not parse."""

    boxes: list[list[int]]
    labels: list[str]
    explanations: list[str]
    global_explanation: str
    valid: bool = True

    @property
    def has_artifacts(self) -> bool:
        return bool(self.boxes)


def parse_answer(text: str) -> ParsedAnswer:
    """The inverse of ``answer`` for a model's reply: a ```json``` list of ``{"bbox_2d", "label",
    "explanation"}`` then the global explanation. A reply without the block (e.g. ``NO_ARTIFACTS``)
    has no boxes; a block that is not a list of such objects makes the reply invalid (no boxes)."""
    match = re.search(r"```json\s*(.*?)\s*```", text, re.S)
    if not match:
        return ParsedAnswer([], [], [], "" if text.strip() == NO_ARTIFACTS else text.strip())
    rest = (text[:match.start()] + text[match.end():]).strip()
    try:
        items = json.loads(match.group(1))
        boxes = [[int(round(float(v))) for v in item["bbox_2d"]] for item in items]
        if any(len(b) != 4 for b in boxes):
            raise ValueError("bbox_2d needs 4 numbers")
        return ParsedAnswer(boxes, [str(item.get("label", "")) for item in items],
                            [str(item.get("explanation", "")) for item in items], rest)
    except (ValueError, TypeError, KeyError, AttributeError):
        return ParsedAnswer([], [], [], rest, valid=False)


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


def export_llamafactory(shards: str | Path | Sequence[str | Path], out: str | Path,
                        val_fraction: float = DEFAULT_VAL_FRACTION, negatives: str = "clean") -> ExportStats:
    """Write the images, the train / val conversations and ``dataset_info.json`` under ``out``."""
    out = Path(out)
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
        image = decode_image(sample.image)
        rel = f"images/{sample.sample_id}.png"
        (out / rel).write_bytes(sample.image)
        split.append(_record(rel, answer(sample, image.width, image.height)))
        stats.artifact_images += 1
        for column in NEGATIVE_COLUMNS[negatives]:
            data = getattr(sample, column)
            if data and (sample.source_id, column) not in seen_negative:
                seen_negative.add((sample.source_id, column))
                rel = f"images/{sample.sample_id}_{column.removesuffix('_image')}.png"
                (out / rel).write_bytes(data)
                split.append(_record(rel, NO_ARTIFACTS))
                stats.negative_images += 1
    for name, rows in records.items():
        (out / data_file(name)).write_text(json.dumps(rows, indent=2, ensure_ascii=False))
        stats.records[name] = len(rows)
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
    args = parser.parse_args(argv)
    stats = export_llamafactory(args.shards, args.out, args.val_fraction, args.negatives)
    print(json.dumps({"out": args.out, **stats.__dict__}))


if __name__ == "__main__":
    main()
