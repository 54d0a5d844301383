"""Sources: listing is deterministic; good files decode to RGB; bad files get a reason."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from factory.config import ImageConfig, SourceConfig
from factory.sources import (ImageRejected, decode_source, list_sources, prepare_image,
                             read_bytes)

CONFIG = SourceConfig()


def _jpeg(array, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_samples_are_real_photos():
    items = list_sources(SourceConfig(uri="samples"))
    assert len(items) >= 5 and items == list_sources(SourceConfig(uri="samples"))
    decoded = decode_source(read_bytes(items[0]), CONFIG)
    assert decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3 and decoded.rgb.dtype == np.uint8


@pytest.mark.parametrize("name, payload, reason", [
    ("zero-byte", b"", "empty_file"),
    ("text named .jpg", b"definitely not an image\n" * 10, "not_an_image"),
    ("truncated jpeg", _jpeg(data.astronaut())[:6000], "truncated_or_corrupt"),
    ("tiny", _png(Image.new("RGB", (40, 30))), "too_small"),
    ("decompression bomb", _png(Image.new("1", (8000, 8000))), "too_many_pixels"),
])
def test_bad_files_get_a_reason(name, payload, reason):
    with pytest.raises(ImageRejected) as err:
        decode_source(payload, CONFIG)
    assert err.value.reason == reason, name


def test_cmyk_16bit_palette_alpha_and_exif():
    cmyk = Image.fromarray(data.astronaut()).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG")
    assert decode_source(buf.getvalue(), CONFIG).rgb.shape == (512, 512, 3)

    gradient = (np.linspace(0, 65535, 128 * 96).reshape(96, 128)).astype(np.uint16)
    rgb16 = decode_source(_png(Image.fromarray(gradient)), CONFIG).rgb
    assert rgb16.max() == 255 and rgb16.min() == 0  # scaled, not clipped

    palette = Image.new("P", (80, 80), 0)
    palette.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    palette.info["transparency"] = 0  # index 0 (red) is transparent → composited on white
    out = decode_source(_png(palette), CONFIG).rgb
    assert tuple(out[0, 0]) == (255, 255, 255)

    array = np.zeros((80, 120, 3), np.uint8)
    array[:, :60] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    decoded = decode_source(_jpeg(array, exif=exif), CONFIG)
    assert (decoded.height, decoded.width) == (120, 80)


def test_folder_glob_memory_and_parquet_sources(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(_png(Image.new("RGB", (70, 70))))
    items = list_sources(SourceConfig(uri=str(tmp_path)))
    assert [i.source_id for i in items] == ["a.jpg", "b.png"]
    assert [i.source_id for i in list_sources(SourceConfig(uri=str(tmp_path / "*.png")))][0].endswith("b.png")

    import fsspec

    with fsspec.open("memory://photos/x.png", "wb") as f:
        f.write(_png(Image.new("RGB", (70, 70))))
    [item] = list_sources(SourceConfig(uri="memory://photos"))
    assert decode_source(read_bytes(item), CONFIG).rgb.shape == (70, 70, 3)

    table = pa.table({"id": ["p1", "p2"], "image": [{"bytes": _png(Image.new("RGB", (80, 64))), "path": None}] * 2})
    pq.write_table(table, tmp_path / "photos.parquet")
    items = list_sources(SourceConfig(uri=str(tmp_path / "photos.parquet"), id_column="id"))
    assert [i.source_id for i in items] == ["p1", "p2"] and items[0].data


def test_prepare_image_sizes():
    config = ImageConfig(min_short_side=128, max_side=192)
    for shape in [(300, 451), (512, 512), (100, 1000), (40, 60)]:
        out = prepare_image(np.zeros((*shape, 3), np.uint8), config)
        h, w = out.shape[:2]
        assert h % 16 == 0 and w % 16 == 0 and max(h, w) <= 192 and h >= 16 and w >= 16
    out = prepare_image(np.zeros((300, 451, 3), np.uint8), config)
    assert min(out.shape[:2]) >= 112  # short side upscaled/kept near 128 before the crop
