"""Best-of-N with the detector as the verifier: score N generations (of one prompt, say) and order them
from the fewest artifacts to the most.

``python -m detector.rank IMG [IMG ...] --checkpoint CKPT [--out ranking.json] [--csv ranking.csv]``

Each image gets the detector's image score (P(artifact)), the share of its pixels above
``--threshold`` and the mean pixel probability; the ranking orders by image score, then by flagged
share. Unreadable files are listed under ``bad_inputs`` with their reason and the rest are ranked
(exit status 1).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from detector.model import load_detector
from detector.predict import infer, load_image

COLUMNS = ("rank", "image", "score", "flagged_share", "mean_probability")


def rank(paths: list[str], checkpoint: str | Path, threshold: float = 0.5, batch_size: int = 16,
         device: str = "cpu") -> dict:
    """``{"ranking": [row, ...], "bad_inputs": [{"image", "reason"}]}``, best (lowest score) first."""
    model = load_detector(checkpoint, device)
    rows, bad = [], []
    for start in range(0, len(paths), batch_size):
        loaded = []
        for path in paths[start:start + batch_size]:
            try:
                loaded.append((path, load_image(path)))
            except ValueError as err:
                bad.append({"image": path, "reason": str(err)})
        for (path, _), pred in zip(loaded, infer(model, [im for _, im in loaded]) if loaded else []):
            rows.append({"image": path, "score": pred.score,
                         "flagged_share": float((pred.probability > threshold).mean()),
                         "mean_probability": float(pred.probability.mean())})
    rows.sort(key=lambda r: (r["score"], r["flagged_share"]))
    return {"ranking": [{"rank": i, **r} for i, r in enumerate(rows, start=1)], "bad_inputs": bad}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", default="ranking.json")
    parser.add_argument("--csv", default=None, help="also write the ranking as CSV")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if not (Path(args.checkpoint) / "config.json").is_file():
        print(f"error: no detector at {args.checkpoint} (expected a directory written by detector.train)",
              file=sys.stderr)
        return 2
    result = rank(args.images, args.checkpoint, args.threshold, device=args.device)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(result["ranking"])
    for row in result["ranking"]:
        print(f"{row['rank']:>4}  {row['score']:.4f}  {row['image']}")
    for item in result["bad_inputs"]:
        print(f"skipped {item['image']}: {item['reason']}", file=sys.stderr)
    return 1 if result["bad_inputs"] else 0


if __name__ == "__main__":
    sys.exit(main())
