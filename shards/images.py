"""PNG encoding/decoding of images and label masks, and COCO RLE of region masks (pycocotools), shared by
every stage and the shard format."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def encode_png(image: Image.Image | np.ndarray) -> bytes:
    """Lossless PNG of an RGB image (H, W, 3 uint8) or a label mask (H, W uint8)."""
    if isinstance(image, np.ndarray):
        if image.dtype == bool:
            image = image.astype(np.uint8)
        if image.dtype != np.uint8:
            raise ValueError(f"encode_png needs uint8 arrays, got {image.dtype}")
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """PNG/JPEG bytes → RGB PIL image."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def decode_array(data: bytes) -> np.ndarray:
    """PNG bytes → uint8 array ((H, W, 3) for RGB images)."""
    return np.asarray(decode_image(data))


def decode_mask(data: bytes) -> np.ndarray:
    """PNG bytes of a label mask → (H, W) uint8 (0 clean, k artifact k, 255 ignore)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"a mask PNG must be single-channel, got mode {im.mode}")
        return np.asarray(im if im.mode == "L" else im.convert("L")).copy()


def encode_rle(mask: np.ndarray) -> dict:
    """(H, W) bool mask → COCO RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE ``{"size", "counts"}`` → (H, W) bool mask."""
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)
