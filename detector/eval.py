"""Evaluate a detector on shards with every metric family of ``detector.metrics``, next to trivial baselines,
or on a public benchmark's own files (``--benchmark``, ``detector.benchmarks.detector_scores``).

``python -m detector.eval --shards DIR [DIR ...] --checkpoint CKPT --out metrics.json [--split val|all]``
``python -m detector.eval --benchmark {xaigd,synthscars,artifactbench} --data DIR --checkpoint CKPT --out m.json``

The evaluated set is the held-out sources (``--split val``, same hash split and ``--val-fraction``
as training) or every row: each accepted row's artifact image and each source's real photo once.
Predictions are made at the model's input size and upsampled to each image's own size. Ground-truth
boxes are the accepted artifacts' ``target_bbox`` (the target cells' tight box, the authors' label; ``--boxes
changed``: ``bbox``, every changed pixel's box); predicted boxes are connected components of the
predicted mask. The same metrics are computed for three trivial predictors — all background, all
foreground (one whole-image box), and random at the evaluated set's base rates (image and pixel) —
so a score can be read against what needs no model at all. Which images each number averages over
is in its name and in the report's ``image_sets`` (``detector.metrics.IMAGE_SETS``): pooled pixel
metrics cover every image, per-image pixel metrics the images with artifacts (as LEGION's benchmark,
whose images all have them) unless suffixed ``_all_images``, box metrics the images with boxes.

X-AIGD's category-specific metrics (``detector.metrics.xaigd_instances``) use each accepted artifact's
category (``shards.taxonomy.artifact_category``; mask value k = artifact k, 1-based, 255 = ignore):
``xaigd_fine_grained`` (IoU, PixP, PixR, PixF1 per category) and ``xaigd_instance`` (P@t, R@t, F1@t per
category and ``--xaigd-overlap-threshold``), counts pooled over every image, clean ones included. The
predicted mask and its boxes are submitted under ``submitted_categories`` (every category for a
category-agnostic detector, the baselines too); ignore pixels are neither artifact nor background. The
random baseline has none of them (its draw needs only counts, not the masks).

Images stream through in batches; only per-image counts and boxes are kept, so the set's size is
bounded by disk, not memory. The model also gets ``pixel_auroc`` (``detector.metrics.PixelRanks``), which
reads its probabilities without a threshold; every baseline's is 0.5 by construction. The random predictor ignores the image, so its per-image counts are
drawn directly (TP ~ Binomial(positives, rate), FP ~ Binomial(negatives, rate)) once the base rate
is known, and its boxes come from a random mask of the image's shape.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from detector.data import DataConfig, Example, Split, iter_sample_examples
from detector.benchmarks.detector_scores import BENCHMARKS, category_rule, evaluate_benchmark, type_scores
from detector.metrics.on_shards import (IGNORE, IMAGE_SETS, PixelCounts, PixelRanks, box_f1, image_level, mask_to_boxes,
                              per_image_from_counts, pixel_counts, pooled_from_counts)
from detector.metrics.xaigd import ARTIFACT, CATEGORIES, TRANSFORMS
from detector.metrics.xaigd_instances import Instances, XaigdCategoryTally, gt_instances, submitted_categories
from detector.model import load_detector
from detector.predict import infer
from shards.images import decode_mask
from shards.record import Sample
from shards.taxonomy import artifact_category

NEITHER = 128  # X-AIGD encoding of a pixel that is neither artifact nor background (``from_flawforge``)
Truth = tuple[dict[str, np.ndarray], dict[str, Instances]]  # per category: X-AIGD mask, instances


@dataclass
class Tally:
    """One predictor's per-image results, accumulated while the evaluation set streams by."""

    labels: list[bool] = field(default_factory=list)
    counts: list[PixelCounts] = field(default_factory=list)
    boxes: list[list[list[int]]] = field(default_factory=list)
    xaigd: XaigdCategoryTally | None = None  # X-AIGD per-category counts (None: not computed)

    def add(self, label: bool, mask: np.ndarray, gt: np.ndarray, truth: Truth | None = None,
            categories: Sequence[str] = CATEGORIES) -> None:
        self.labels.append(bool(label))
        self.counts.append(pixel_counts(mask, gt))
        self.boxes.append(mask_to_boxes(mask))
        if self.xaigd is not None and truth is not None:
            pred = np.where(mask, ARTIFACT, 0).astype(np.uint8)
            self.xaigd.add_pixels({c: pred for c in categories}, truth[0])
            self.xaigd.add_instances(truth[1], {c: self.boxes[-1] for c in categories})

    def report(self, truth: list[int], gt_boxes: list[list[list[int]]]) -> dict:
        """Image level (X-AIGD), pooled pixel (X-AIGD), per-image pixel (LEGION), box (ArtifactBench), and
        X-AIGD's per-category pixel and instance metrics."""
        report = {**{f"image_{k}": v for k, v in image_level(np.array(truth), np.array(self.labels)).items()},
                  **pooled_from_counts(self.counts), **per_image_from_counts(self.counts),
                  **per_image_from_counts(self.counts, positives_only=False), **box_f1(self.boxes, gt_boxes)}
        if self.xaigd is not None:
            categories = self.xaigd.report()
            report |= {"xaigd_fine_grained": categories["fine_grained"], "xaigd_instance": categories["instance"]}
        return report


def category_map(sample: Sample | None, shape: tuple[int, int]) -> np.ndarray:
    """One example's pixels by X-AIGD category: i + 1 where artifact k (mask value k, 1-based) lies and
    ``artifact_category(artifacts[k - 1])`` is ``CATEGORIES[i]``; 255 on ignore pixels and values naming no
    artifact; 0 elsewhere, and everywhere on a clean image (``sample`` None)."""
    if sample is None:
        return np.zeros(shape, np.uint8)
    labels = decode_mask(sample.mask)
    out = np.where(labels == 0, 0, IGNORE).astype(np.uint8)
    for k, artifact in enumerate(sample.artifacts, start=1):
        out[labels == k] = CATEGORIES.index(artifact_category(artifact)) + 1
    return out


def category_truth(categories: np.ndarray) -> Truth:
    """A ``category_map`` as X-AIGD ground truth per category (255 artifact, 0 background, 128 neither), with
    each category's instances."""
    masks = {c: np.where(categories == i, ARTIFACT, np.where(categories == IGNORE, NEITHER, 0)).astype(np.uint8)
             for i, c in enumerate(CATEGORIES, start=1)}
    return masks, {c: gt_instances(m) for c, m in masks.items()}


def examples_with_categories(shards, split: Split, cfg: DataConfig) -> Iterator[tuple[Example, np.ndarray]]:
    """``detector.data.iter_examples``'s examples, in its order, each with its ``category_map``."""
    for sample, ex in iter_sample_examples(shards, split, cfg):
        yield ex, category_map(sample if ex.label else None, ex.mask.shape)


def _batches(examples: Iterator[tuple[Example, np.ndarray]], size: int
             ) -> Iterator[list[tuple[Example, np.ndarray]]]:
    while batch := list(islice(examples, size)):
        yield batch


def evaluate(shards: str | Path | list[str | Path], checkpoint: str | Path, split: Split = "val",
             data: DataConfig | None = None, threshold: float = 0.5, seed: int = 0, batch_size: int = 32,
             device: str = "cpu", overlap_thresholds: Sequence[float] = (0.5,)) -> dict:
    """The model's metrics and the three baselines' on ``split`` of ``shards``."""
    data = data or DataConfig()
    model = load_detector(checkpoint, device)
    truth: list[int] = []
    gt_boxes: list[list[list[int]]] = []
    shapes: list[tuple[int, int]] = []
    positives_negatives: list[tuple[int, int]] = []  # valid artifact / clean pixels per image
    tallies = {name: Tally(xaigd=XaigdCategoryTally(tuple(overlap_thresholds)))
               for name in ("model", "all_background", "all_foreground")}
    ranks = PixelRanks()  # the model's threshold-free pixel AUROC (every baseline scores 0.5)
    rules: set[str] = set()
    for batch in _batches(examples_with_categories(shards, split, data), batch_size):
        for (ex, categories), pred in zip(batch, infer(model, [ex.image for ex, _ in batch])):
            categories = category_truth(categories)
            truth.append(ex.label)
            gt_boxes.append(ex.boxes)
            shapes.append(ex.mask.shape)
            valid = ex.mask != IGNORE
            positives_negatives.append((int((ex.mask[valid] > 0).sum()), int((ex.mask[valid] == 0).sum())))
            rules.add(category_rule(pred))
            ranks.add(pred.probability, ex.mask)
            tallies["model"].add(pred.score > threshold, pred.probability > threshold, ex.mask, categories,
                                 submitted_categories(type_scores(pred), threshold))
            tallies["all_background"].add(False, np.zeros(ex.mask.shape, bool), ex.mask, categories)
            tallies["all_foreground"].add(True, np.ones(ex.mask.shape, bool), ex.mask, categories)
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
        "image_sets": {**IMAGE_SETS, "xaigd_fine_grained, xaigd_instance":
                       "pixels / instances pooled over every image, per X-AIGD category (not for the random baseline)"},
        "xaigd_category_rule": "/".join(sorted(rules)),
        "model": {**tallies.pop("model").report(truth, gt_boxes), "pixel_auroc": ranks.auroc()},
        "baselines": {name: tally.report(truth, gt_boxes) for name, tally in tallies.items()},
    }


def write_report(metrics: dict, path: str | Path) -> None:
    """Write ``metrics`` as indented JSON to ``path`` (parents created) and print it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", help="shard files or run directories")
    parser.add_argument("--benchmark", choices=BENCHMARKS, help="evaluate on a public benchmark's files instead")
    parser.add_argument("--data", help="the benchmark's folder (with --benchmark)")
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", required=True, help="metrics JSON file")
    parser.add_argument("--split", choices=["val", "all", "train"], default="val", help="shards split")
    parser.add_argument("--xaigd-split", default="labeled_test", help="X-AIGD parquet split (with --benchmark xaigd)")
    parser.add_argument("--xaigd-transform", choices=list(TRANSFORMS), default="keep-original-size",
                        help="X-AIGD's mask transform before counting pixels")
    parser.add_argument("--xaigd-overlap-threshold", type=float, nargs="+", default=[0.5],
                        help="X-AIGD instance level: a box matches an instance when |box ∩ instance| / |box| > t")
    parser.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction,
                        help="must match training's for --split val")
    parser.add_argument("--negatives", choices=["clean", "real", "both"], default=DataConfig.negatives,
                        help="clean examples: the VAE reconstruction (default), the camera photo, or both")
    parser.add_argument("--boxes", choices=["target", "changed"], default="target",
                        help="ground-truth boxes: the target cells' (default) or the changed pixels'")
    parser.add_argument("--threshold", type=float, default=0.5, help="for the image score and each pixel")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.benchmark:
        if not args.data:
            parser.error("--benchmark needs --data DIR")
        try:
            metrics = evaluate_benchmark(args.benchmark, args.data, args.checkpoint, args.threshold, args.batch_size,
                                         args.device, args.xaigd_split, args.xaigd_transform,
                                         tuple(args.xaigd_overlap_threshold))
        except FileNotFoundError as err:  # --data holds none of the benchmark's layouts
            parser.error(str(err))
    elif args.shards:
        metrics = evaluate(args.shards, args.checkpoint, args.split,
                           DataConfig(val_fraction=args.val_fraction, negatives=args.negatives, boxes=args.boxes),
                           args.threshold, batch_size=args.batch_size, device=args.device,
                           overlap_thresholds=args.xaigd_overlap_threshold)
    else:
        parser.error("give --shards DIR [DIR ...] or --benchmark NAME --data DIR")
    write_report(metrics, args.out)
    return metrics


if __name__ == "__main__":
    main()
