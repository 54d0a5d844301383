"""The crops curation shows the VLM: an artifact's box with a margin, and the (context, real crop,
artifact crop) triplet of the method's checks and explanations.

As the method's authors: the context is the *original* photo with the artifact's target cells
blacked out, and the crops are the target's tight box (``curation.crop_margin`` 0);
``curation.triplet_context: artifact`` blacks the target out of the artifact image instead."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shards.images import decode_rle
from shards.record import Artifact, Sample
from tools.grid import Grid


def region_bbox(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Box (x0, y0, x1, y1), end exclusive, around the mask, grown by ``margin`` of its size each side."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    dx, dy = round((x1 - x0) * margin), round((y1 - y0) * margin)
    height, width = mask.shape
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def triplet_images(real: np.ndarray, artifact: np.ndarray, region: np.ndarray, margin: float,
                   context_from: str = "real") -> tuple[Image.Image, Image.Image, Image.Image]:
    """(context: the ``context_from`` image — ``real`` photo or ``artifact`` image — with ``region``
    blacked out, real crop, artifact crop); the crops are the region's box plus ``margin`` and are
    resized so their long side equals the image's long side."""
    context = (real if context_from == "real" else artifact).copy()
    context[region] = 0
    x0, y0, x1, y1 = region_bbox(region, margin)
    long_side = max(real.shape[:2])
    scale = long_side / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    crops = [Image.fromarray(a[y0:y1, x0:x1]).resize(size, Image.Resampling.BICUBIC) for a in (real, artifact)]
    return Image.fromarray(context), crops[0], crops[1]


def artifact_regions(sample: Sample, shape: tuple[int, int]) -> list[np.ndarray]:
    """Each artifact's change region as an (H, W) bool mask (all False when it has none)."""
    return [decode_rle(a.region) if a.region else np.zeros(shape, bool) for a in sample.artifacts]


def target_mask(artifact: Artifact, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) pixels of an artifact's target cells (the part the authors black out and crop);
    its change region when it has no cells."""
    if not artifact.cells:
        return decode_rle(artifact.region) if artifact.region else np.zeros(shape, bool)
    return Grid.from_image(*shape).pixel_mask(np.asarray(artifact.cells, dtype=np.int64))
