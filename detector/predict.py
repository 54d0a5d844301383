"""Run a trained detector on image files: score, mask PNG, boxes JSON and an overlay per image.

``python -m detector.predict IMG [IMG ...] --checkpoint CKPT [--out DIR] [--threshold T]``
writes ``DIR/<stem>_mask.png`` (255 = artifact), ``DIR/<stem>_overlay.png`` (mask tinted red,
boxes drawn) and ``DIR/<stem>.json`` (image score, type probabilities, boxes [x0, y0, x1, y1]).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from detector.data import to_pixels
from detector.metrics import mask_to_boxes
from detector.model import ARTIFACT_TYPES, ArtifactDetector, load_detector


@dataclass
class Prediction:
    score: float  # P(the image carries an artifact)
    probability: np.ndarray  # (H, W) float32 per-pixel artifact probability at the image's own size
    types: dict[str, float]  # P(artifact type present)


@torch.no_grad()
def infer(model: ArtifactDetector, images: list[Image.Image], batch_size: int = 16) -> list[Prediction]:
    """Resize to the model's input size, run, and upsample the mask probabilities back to each image."""
    model.eval()
    size = model.cfg.image_size
    device = next(model.parameters()).device
    out: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pixels = np.stack([to_pixels(im, size) for im in chunk])
        result = model(torch.from_numpy(pixels).to(device))
        for i, im in enumerate(chunk):
            logits = F.interpolate(result["mask"][i][None, None], size=(im.height, im.width), mode="bilinear",
                                   align_corners=False)
            out.append(Prediction(
                score=float(torch.sigmoid(result["image"][i])),
                probability=torch.sigmoid(logits)[0, 0].cpu().numpy(),
                types={t: float(p) for t, p in zip(ARTIFACT_TYPES, torch.sigmoid(result["types"][i]))},
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


def predict_files(paths: list[str | Path], checkpoint: str | Path, out: str | Path, threshold: float = 0.5
                  ) -> list[dict]:
    """Predict every image file and write its mask, overlay and JSON under ``out``; returns the JSON records."""
    model = load_detector(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [Image.open(p).convert("RGB") for p in paths]
    records = []
    for path, image, pred in zip(map(Path, paths), images, infer(model, images)):
        mask = pred.probability > threshold
        boxes = mask_to_boxes(mask)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{path.stem}_mask.png")
        overlay(image, mask, boxes).save(out / f"{path.stem}_overlay.png")
        record = {"image": str(path), "score": pred.score, "is_artifact": pred.score > threshold,
                  "types": pred.types, "boxes": boxes}
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2))
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", default="predictions")
    parser.add_argument("--threshold", type=float, default=0.5, help="for the image score and each pixel")
    args = parser.parse_args(argv)
    for record in predict_files(args.images, args.checkpoint, args.out, args.threshold):
        print(json.dumps(record))


if __name__ == "__main__":
    main()
