"""Does detector-guided repair remove what the detector finds? Held-out factory shards, side by side with
a control that re-synthesises a random mask of the same size.

    python bench/repair.py --shards RUN_DIR --checkpoint DETECTOR [--val-fraction 0.3] [--attempts 2]
                           [--limit 40] [--preset tiny] [--set key=value ...]

The README's numbers came from shards and a detector made as ``tests/test_detector.py`` makes them:

    python -m factory.run --n 48 --preset tiny --out runs/rb --set image.min_short_side=256 --set image.max_side=384
    python -m detector.train --shards runs/rb --out runs/rb-det --epochs 15 --image-size 128 --workers 2 \
        --batch-size 8 --val-fraction 0.3
    python bench/repair.py --shards runs/rb --checkpoint runs/rb-det --attempts 2

For every held-out artifact image (``detector.data``'s split by source): the detector's image score
and pooled pixel IoU with the injected artifacts' mask, before; after repairing the cells the
detector flags (``detector.repair.Repairer``, best of ``--attempts``); and after the control, which
re-synthesises as many cells at random places (a fresh random draw per image, same best-of selection),
and the image's VAE reconstruction alone (``reconstruction``: what both composite onto, nothing
re-synthesised), which separates the effect of re-synthesis from that of one more VAE pass.
Both are scored by the same detector that chose the mask, so the control is what tells a repair that
removes artifacts from one that merely changes pixels. On the tiny preset this proves the loop, not
quality: the artifacts are a random transformer's re-renderings and the detector is trained on ~50 images.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from detector.data import DataConfig, iter_sample_examples
from detector.metrics.on_shards import pixel_counts, pooled_from_counts
from detector.repair import RepairSettings, load_repairer
from tools.grid import Grid


def random_mask(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A pixel mask of ``cells`` random 16-px cells of an image of ``shape``."""
    grid = Grid.from_image(*shape)
    return grid.pixel_mask(rng.choice(grid.rows * grid.cols, size=cells, replace=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--val-fraction", type=float, default=0.3)
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--limit", type=int, default=40, help="most held-out artifact images")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    repairer, _ = load_repairer(args.checkpoint, args.preset, RepairSettings(attempts=args.attempts), args.set)
    rng = np.random.default_rng(args.seed)
    rows = {"before": [], "reconstruction": [], "repair": [], "control": []}
    counts = {k: [] for k in rows}
    images, shares = 0, []
    for _, ex in iter_sample_examples(args.shards, "val", DataConfig(val_fraction=args.val_fraction)):
        if not ex.label:
            continue
        image = np.asarray(ex.image)
        mask, score = repairer.find(image)
        cells = len(Grid.from_image(*image.shape[:2]).cells(mask))
        repaired = repairer.repair(image, mask, seed=images, score_before=score)
        shares.append(float(repaired.mask.mean()))
        control = repairer.repair(image, random_mask(image.shape[:2], cells, rng) if cells else mask,
                                  seed=images, score_before=score)
        for key, seen in (("before", image), ("reconstruction", repaired.clean), ("repair", repaired.image),
                          ("control", control.image)):
            [pred] = repairer.score([seen])
            rows[key].append(pred.score)
            counts[key].append(pixel_counts(pred.probability > repairer.settings.threshold, ex.mask))
        images += 1
        if images >= args.limit:
            break
    print(json.dumps({
        "images": images, "attempts": args.attempts, "preset": args.preset,
        "mean_repaired_share": float(np.mean(shares)) if shares else None,  # of each image's pixels
        **{key: {"mean_score": float(np.mean(scores)) if scores else None,
                 "pixel_iou_with_injected": pooled_from_counts(counts[key])["iou"]}
           for key, scores in rows.items()},
        "score_drop_repair": float(np.mean(rows["before"]) - np.mean(rows["repair"])) if images else None,
        "score_drop_control": float(np.mean(rows["before"]) - np.mean(rows["control"])) if images else None,
        "score_drop_reconstruction": float(np.mean(rows["before"]) - np.mean(rows["reconstruction"])) if images else None,
    }, indent=2))


if __name__ == "__main__":
    main()
