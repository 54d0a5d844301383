"""Run a trained detector on image files: score, mask PNG, boxes JSON and an overlay per image.

``python -m detector.predict IMG [IMG ...] --checkpoint CKPT [--out DIR] [--threshold T]``
writes ``DIR/<stem>_mask.png`` (255 = artifact, 0 = clean: X-AIGD's prediction encoding, which reads it
with > 127; our shards' masks use 255 for ignore instead), ``DIR/<stem>_overlay.png`` (mask tinted red,
boxes drawn) and ``DIR/<stem>.json`` (image score, type probabilities, boxes [x0, y0, x1, y1]).
An unreadable file is reported on stderr with its reason, the rest are still predicted, and the
exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps

from detector.data import to_pixels
from detector.metrics.on_shards import mask_to_boxes
from detector.model import TYPE_NAMES, ArtifactDetector, load_detector
from shards.record import ARTIFACT_TOOLS as ARTIFACT_TYPES


@dataclass
class Prediction:
    score: float  # P(the image carries an artifact)
    probability: np.ndarray  # (H, W) float32 per-pixel artifact probability at the image's own size
    types: dict[str, float]  # P(artifact type present), per tool
    categories: dict[str, float]  # P(X-AIGD category present); empty for detectors saved before categories


@torch.no_grad()
def infer(model: ArtifactDetector, images: list[Image.Image]) -> list[Prediction]:
    """One batch: resize to the model's input size, run, and upsample the mask probabilities back to
    each image's own size. Callers choose the batch size."""
    model.eval()
    device = next(model.parameters()).device
    pixels = np.stack([to_pixels(im, model.cfg.image_size) for im in images])
    result = model(torch.from_numpy(pixels).to(device))
    out: list[Prediction] = []
    for i, im in enumerate(images):
        logits = F.interpolate(result["mask"][i][None, None], size=(im.height, im.width), mode="bilinear",
                               align_corners=False)
        scores = {t: float(p) for t, p in zip(TYPE_NAMES, torch.sigmoid(result["types"][i]))}
        out.append(Prediction(
            score=float(torch.sigmoid(result["image"][i])),
            probability=torch.sigmoid(logits)[0, 0].cpu().numpy(),
            types={t: p for t, p in scores.items() if t in ARTIFACT_TYPES},
            categories={t: p for t, p in scores.items() if t not in ARTIFACT_TYPES},
        ))
    return out


def overlay(image: Image.Image, mask: np.ndarray, boxes: list[list[int]]) -> Image.Image:
    """The image with artifact pixels tinted red and each box outlined."""
    pixels = np.asarray(image.convert("RGB"), np.float32)
    pixels[mask] = 0.5 * pixels[mask] + 0.5 * np.array([255.0, 0.0, 0.0])
    result = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(result)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 255, 0))
    return result


def load_image(path: str | Path) -> Image.Image:
    """An image file as RGB, EXIF orientation applied; raises ``ValueError`` naming the file and the reason."""
    try:
        with Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err


def predict_files(paths: list[str | Path], checkpoint: str | Path, out: str | Path, threshold: float = 0.5,
                  batch_size: int = 16, device: str = "cpu") -> list[dict]:
    """Predict every image file and write its mask, overlay and JSON under ``out``; returns the JSON records.

    A file that cannot be read gets a record with ``error`` instead and the others go on. Output names
    are the file's stem, made unique with ``-2``, ``-3``, ... when two inputs share one."""
    model = load_detector(checkpoint, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    stems: dict[str, int] = {}
    for start in range(0, len(paths), batch_size):
        loaded: list[tuple[Path, Image.Image]] = []
        for path in map(Path, paths[start:start + batch_size]):
            try:
                loaded.append((path, load_image(path)))
            except ValueError as err:
                records.append({"image": str(path), "error": str(err)})
        for (path, image), pred in zip(loaded, infer(model, [im for _, im in loaded]) if loaded else []):
            stems[path.stem] = stems.get(path.stem, 0) + 1
            name = path.stem if stems[path.stem] == 1 else f"{path.stem}-{stems[path.stem]}"
            mask = pred.probability > threshold
            boxes = mask_to_boxes(mask)
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{name}_mask.png")
            overlay(image, mask, boxes).save(out / f"{name}_overlay.png")
            record = {"image": str(path), "score": pred.score, "is_artifact": pred.score > threshold,
                      "types": pred.types, "categories": pred.categories, "boxes": boxes, "outputs": name}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2))
            records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--threshold", type=float, default=0.5, help="for the image score and each pixel")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    records = predict_files(args.images, args.checkpoint, args.out, args.threshold, args.batch_size, args.device)
    for record in records:
        print(json.dumps(record), file=sys.stderr if "error" in record else sys.stdout)
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
