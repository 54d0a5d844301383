"""Evaluate a detector on shards with every metric family of ``detector.metrics``, next to trivial baselines.

``python -m detector.eval --shards DIR [DIR ...] --checkpoint CKPT --out metrics.json [--split val|all]``

The evaluated set is the held-out sources (``--split val``, same hash split and ``--val-fraction``
as training) or every row: each accepted row's artifact image and each source's real photo once.
Predictions are made at the model's input size and upsampled to each image's own size. Ground-truth
boxes are the accepted artifacts' ``bbox``; predicted boxes are connected components of the
predicted mask. The same metrics are computed for three trivial predictors — all background, all
foreground (one whole-image box), and random at the evaluated set's base rates (image and pixel) —
so a score can be read against what needs no model at all. Pixel metrics cover every image, real
photos included.

Images stream through in batches; only per-image counts and boxes are kept, so the set's size is
bounded by disk, not memory. The random predictor ignores the image, so its per-image counts are
drawn directly (TP ~ Binomial(positives, rate), FP ~ Binomial(negatives, rate)) once the base rate
is known, and its boxes come from a random mask of the image's shape.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from detector.data import DataConfig, Example, Split, iter_examples
from detector.metrics import (IGNORE, PixelCounts, box_f1, image_level, mask_to_boxes, per_image_from_counts,
                              pixel_counts, pooled_from_counts)
from detector.model import load_detector
from detector.predict import infer


@dataclass
class Tally:
    """One predictor's per-image results, accumulated while the evaluation set streams by."""

    labels: list[bool] = field(default_factory=list)
    counts: list[PixelCounts] = field(default_factory=list)
    boxes: list[list[list[int]]] = field(default_factory=list)

    def add(self, label: bool, mask: np.ndarray, gt: np.ndarray) -> None:
        self.labels.append(bool(label))
        self.counts.append(pixel_counts(mask, gt))
        self.boxes.append(mask_to_boxes(mask))

    def report(self, truth: list[int], gt_boxes: list[list[list[int]]]) -> dict[str, float]:
        """Image level (X-AIGD), pooled pixel (X-AIGD), per-image pixel (LEGION), box (ArtifactBench)."""
        return {**{f"image_{k}": v for k, v in image_level(np.array(truth), np.array(self.labels)).items()},
                **pooled_from_counts(self.counts), **per_image_from_counts(self.counts),
                **box_f1(self.boxes, gt_boxes)}


def _batches(examples: Iterator[Example], size: int) -> Iterator[list[Example]]:
    while batch := list(islice(examples, size)):
        yield batch


def evaluate(shards: str | Path | list[str | Path], checkpoint: str | Path, split: Split = "val",
             data: DataConfig | None = None, threshold: float = 0.5, seed: int = 0, batch_size: int = 32,
             device: str = "cpu") -> dict:
    """The model's metrics and the three baselines' on ``split`` of ``shards``."""
    data = data or DataConfig()
    model = load_detector(checkpoint, device)
    truth: list[int] = []
    gt_boxes: list[list[list[int]]] = []
    shapes: list[tuple[int, int]] = []
    positives_negatives: list[tuple[int, int]] = []  # valid artifact / clean pixels per image
    tallies = {name: Tally() for name in ("model", "all_background", "all_foreground")}
    for batch in _batches(iter_examples(shards, split, data), batch_size):
        for ex, pred in zip(batch, infer(model, [ex.image for ex in batch])):
            truth.append(ex.label)
            gt_boxes.append(ex.boxes)
            shapes.append(ex.mask.shape)
            valid = ex.mask != IGNORE
            positives_negatives.append((int((ex.mask[valid] > 0).sum()), int((ex.mask[valid] == 0).sum())))
            tallies["model"].add(pred.score > threshold, pred.probability > threshold, ex.mask)
            tallies["all_background"].add(False, np.zeros(ex.mask.shape, bool), ex.mask)
            tallies["all_foreground"].add(True, np.ones(ex.mask.shape, bool), ex.mask)
    if not truth:
        raise ValueError(f"no examples in split {split!r} of {shards} (accepted rows are what is evaluated)")

    pixel_rate = sum(p for p, _ in positives_negatives) / max(1, sum(p + n for p, n in positives_negatives))
    image_rate = float(np.mean(truth))
    rng = np.random.default_rng(seed)
    random = Tally(labels=list(rng.random(len(truth)) < image_rate))
    for (p, n), shape in zip(positives_negatives, shapes):
        tp, fp = int(rng.binomial(p, pixel_rate)), int(rng.binomial(n, pixel_rate))
        random.counts.append((tp, fp, p - tp, n - fp))
        random.boxes.append(mask_to_boxes(rng.random(shape) < pixel_rate))
    tallies["random"] = random

    return {
        "split": split,
        "n_images": len(truth),
        "n_artifact_images": int(sum(truth)),
        "pixel_base_rate": pixel_rate,
        "threshold": threshold,
        "checkpoint": str(checkpoint),
        "model": tallies.pop("model").report(truth, gt_boxes),
        "baselines": {name: tally.report(truth, gt_boxes) for name, tally in tallies.items()},
    }


def write_report(metrics: dict, path: str | Path) -> None:
    """Write ``metrics`` as indented JSON to ``path`` (parents created) and print it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", required=True, help="shard files or run directories")
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", required=True, help="metrics JSON file")
    parser.add_argument("--split", choices=["val", "all", "train"], default="val")
    parser.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction,
                        help="must match training's for --split val")
    parser.add_argument("--negatives", choices=["clean", "real", "both"], default=DataConfig.negatives,
                        help="clean examples: the VAE reconstruction (default), the camera photo, or both")
    parser.add_argument("--threshold", type=float, default=0.5, help="for the image score and each pixel")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    metrics = evaluate(args.shards, args.checkpoint, args.split,
                       DataConfig(val_fraction=args.val_fraction, negatives=args.negatives),
                       args.threshold, batch_size=args.batch_size, device=args.device)
    write_report(metrics, args.out)
    return metrics


if __name__ == "__main__":
    main()
