"""Where source photos come from, and how one file becomes a clean RGB array (or a reason).

``list_sources`` enumerates a source deterministically: ``samples`` (real photos shipped with
scikit-image), a local folder or glob, any fsspec URI (``s3://``, ``gs://``, ``memory://``), or a
Parquet file/dir with an image column. Decoding happens inside the pipeline's tasks:
``decode_source`` checks size limits *before* decoding (decompression bombs), forces a full decode
(truncated files), applies EXIF orientation, and converts CMYK / 16-bit / palette / alpha images
to 8-bit RGB; anything unusable raises ``ImageRejected`` with a short reason code.
``prepare_image`` resizes and crops to the processed size (sides multiples of 16).
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
from PIL import Image, ImageOps

from factory.config import ImageConfig, SourceConfig

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Colour photos with clear objects and parts, shipped inside scikit-image (no download).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


class ImageRejected(ValueError):
    """A source file that cannot be used; ``reason`` is a short code for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class SourceItem:
    source_id: str
    uri: str
    data: bytes = b""  # inline bytes (samples, Parquet sources); empty means read ``uri``


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    width: int  # of the file, after EXIF orientation
    height: int
    sha256: str


# ------------------------------------------------------------------------------------ listing
def list_sources(config: SourceConfig) -> list[SourceItem]:
    uri = config.uri
    if uri == "samples":
        return [SourceItem(f"samples/{name}", f"samples://{name}") for name in SAMPLE_PHOTOS]
    if uri.endswith(".parquet") or _is_parquet_dir(uri):
        return _parquet_items(uri, config)
    fs, root = fsspec.core.url_to_fs(uri)
    if any(ch in root for ch in "*?["):
        paths = fs.glob(root)
    elif fs.isdir(root):
        paths = fs.find(root)
    elif fs.exists(root):
        paths = [root]
    else:
        raise ValueError(f"source {uri!r} does not exist")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    items = []
    for path in sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS)):
        full = path if protocol in ("file", "local") else f"{protocol}://{path.lstrip('/')}"
        rel = path[len(root.rstrip("/")) + 1:] if fs.isdir(root) and path.startswith(root.rstrip("/")) else path
        items.append(SourceItem(rel or path, full))
    return items


def _is_parquet_dir(uri: str) -> bool:
    if uri.startswith("samples"):
        return False
    fs, root = fsspec.core.url_to_fs(uri)
    return fs.isdir(root) and bool(fs.glob(f"{root.rstrip('/')}/*.parquet")) and not any(
        p.lower().endswith(IMAGE_EXTENSIONS) for p in fs.ls(root, detail=False))


def _parquet_items(uri: str, config: SourceConfig) -> list[SourceItem]:
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(uri)
    files = [root] if root.endswith(".parquet") else sorted(fs.glob(f"{root.rstrip('/')}/*.parquet"))
    items = []
    for path in files:
        columns = [config.image_column] + ([config.id_column] if config.id_column else [])
        table = pq.read_table(path, columns=columns, filesystem=fs)
        if config.image_column not in table.column_names:
            raise ValueError(f"{path} has no column {config.image_column!r}")
        for i, row in enumerate(table.to_pylist()):
            cell = row[config.image_column]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            source_id = str(row[config.id_column]) if config.id_column else f"{Path(path).name}#{i}"
            items.append(SourceItem(source_id, f"{uri}#{source_id}", bytes(data or b"")))
    return items


@functools.lru_cache(maxsize=None)
def _sample_photo_png(name: str) -> bytes:
    """A bundled scikit-image photo as PNG bytes (shipped, no download; encoded once per process)."""
    from skimage import data as skdata

    buf = io.BytesIO()
    Image.fromarray(getattr(skdata, name)()).save(buf, format="PNG")
    return buf.getvalue()


def read_bytes(item: SourceItem) -> bytes:
    """The file's bytes (samples are encoded to PNG from scikit-image's arrays)."""
    if item.data:
        return item.data
    if item.uri.startswith("samples://"):
        return _sample_photo_png(item.uri.removeprefix("samples://"))
    with fsspec.open(item.uri, "rb") as f:
        return f.read()


# ----------------------------------------------------------------------------------- decoding
def decode_source(data: bytes, config: SourceConfig) -> DecodedImage:
    if not data:
        raise ImageRejected("empty_file", "the file has zero bytes")
    if len(data) > config.max_bytes:
        raise ImageRejected("file_too_large", f"{len(data)} bytes > {config.max_bytes}")
    try:
        image = Image.open(io.BytesIO(data))  # in-memory bytes: any error here is about the data
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ImageRejected("not_an_image", f"no decoder recognises the file ({type(err).__name__})") from None
    width, height = image.size
    if width * height > config.max_pixels:  # checked on the header, before any pixel is decoded
        raise ImageRejected("too_many_pixels", f"{width}x{height} > {config.max_pixels} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()  # full decode: truncated data fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise ImageRejected("truncated_or_corrupt", f"{type(err).__name__}: {err}") from None
    image = ImageOps.exif_transpose(image)
    rgb = to_rgb(image)
    if min(rgb.shape[:2]) < config.min_side:
        raise ImageRejected("too_small", f"{rgb.shape[1]}x{rgb.shape[0]} < {config.min_side} px")
    return DecodedImage(rgb, rgb.shape[1], rgb.shape[0], hashlib.sha256(data).hexdigest())


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode → (H, W, 3) uint8: 16-bit scaled (not clipped), alpha composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(image, dtype=np.uint8).copy()


def prepare_image(rgb: np.ndarray, config: ImageConfig) -> np.ndarray:
    """Resize (short side ≥ min_short_side, long side ≤ max_side; max_side wins), then
    centre-crop both sides down to multiples of the 16-px cell."""
    height, width = rgb.shape[:2]
    scale = max(1.0, config.min_short_side / min(height, width))
    scale = min(scale, config.max_side / max(height, width)) if max(height, width) * scale > config.max_side else scale
    new_w, new_h = max(config.cell, round(width * scale)), max(config.cell, round(height * scale))
    image = Image.fromarray(rgb)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS)
    crop_w, crop_h = new_w - new_w % config.cell, new_h - new_h % config.cell
    left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
    return np.asarray(image.crop((left, top, left + crop_w, top + crop_h)), dtype=np.uint8)
