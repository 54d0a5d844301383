"""Evaluate a detector on shards with every metric family of ``detector.metrics``, next to trivial baselines.

``python -m detector.eval --shards DIR [DIR ...] --checkpoint CKPT --out metrics.json [--split val|all]``

The evaluated set is the held-out sources (``--split val``, same hash split and ``--val-fraction``
as training) or every row: each accepted row's artifact image and each source's real photo once.
Predictions are made at the model's input size and upsampled to each image's own size. Ground-truth
boxes are the accepted artifacts' ``bbox``; predicted boxes are connected components of the
predicted mask. The same metrics are computed for three trivial predictors — all background, all
foreground (one whole-image box), and random at the base rates (image and pixel) — so a score can
be read against what needs no model at all. Pixel metrics cover every image, real photos included.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from detector.data import DataConfig, Split, iter_examples
from detector.metrics import box_f1, image_level, mask_to_boxes, pixel_per_image, pixel_pooled
from detector.model import IGNORE, load_detector
from detector.predict import infer


def metric_report(labels: np.ndarray, predicted: np.ndarray, pred_masks: list[np.ndarray],
                  gt_masks: list[np.ndarray], pred_boxes: list[list[list[int]]], gt_boxes: list[list[list[int]]]
                  ) -> dict[str, float]:
    """Image level (X-AIGD), pooled pixel (X-AIGD), per-image pixel (LEGION) and box (ArtifactBench) metrics."""
    return {**{f"image_{k}": v for k, v in image_level(labels, predicted).items()},
            **pixel_pooled(pred_masks, gt_masks), **pixel_per_image(pred_masks, gt_masks),
            **box_f1(pred_boxes, gt_boxes)}


def evaluate(shards: str | Path | list[str | Path], checkpoint: str | Path, split: Split = "val",
             data: DataConfig | None = None, threshold: float = 0.5, seed: int = 0) -> dict:
    """The model's metrics and the three baselines' on ``split`` of ``shards``."""
    data = data or DataConfig()
    examples = list(iter_examples(shards, split, data))
    if not examples:
        raise ValueError(f"no examples in split {split!r} of {shards}")
    model = load_detector(checkpoint)
    predictions = infer(model, [ex.image for ex in examples])
    labels = np.array([ex.label for ex in examples])
    gt_masks = [ex.mask for ex in examples]
    gt_boxes = [[b for b in ex.boxes if len(b) == 4] for ex in examples]
    valid = np.concatenate([(m != IGNORE).ravel() for m in gt_masks])
    pixel_rate = float(np.concatenate([(m == 1).ravel() for m in gt_masks])[valid].mean())
    image_rate = float(labels.mean())

    def report(pred_labels: np.ndarray, pred_masks: list[np.ndarray]) -> dict[str, float]:
        return metric_report(labels, pred_labels, pred_masks, gt_masks, [mask_to_boxes(m) for m in pred_masks],
                             gt_boxes)

    rng = np.random.default_rng(seed)
    model_masks = [p.probability > threshold for p in predictions]
    return {
        "split": split,
        "n_images": len(examples),
        "n_artifact_images": int(labels.sum()),
        "pixel_base_rate": pixel_rate,
        "threshold": threshold,
        "model": report(np.array([p.score > threshold for p in predictions]), model_masks),
        "baselines": {
            "all_background": report(np.zeros_like(labels), [np.zeros(m.shape, bool) for m in gt_masks]),
            "all_foreground": report(np.ones_like(labels), [np.ones(m.shape, bool) for m in gt_masks]),
            "random": report(rng.random(len(labels)) < image_rate,
                             [rng.random(m.shape) < pixel_rate for m in gt_masks]),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", required=True, help="metrics JSON file")
    parser.add_argument("--split", choices=["val", "all", "train"], default="val")
    parser.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args(argv)
    metrics = evaluate(args.shards, args.checkpoint, args.split, DataConfig(val_fraction=args.val_fraction),
                       args.threshold)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
