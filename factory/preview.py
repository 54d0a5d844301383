"""``python -m factory.preview DIR``: a gallery of a run, as HTML and one PNG contact sheet.

Each row shows real | artifact | mask overlay (red: accepted artifact, grey: ignore region) |
the local and global explanations. Writes ``DIR/preview/index.html``, ``DIR/preview/*.png`` and
``DIR/preview/contact_sheet.png``.
"""

from __future__ import annotations

import argparse
import html
import random
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shards.images import decode_array, decode_mask
from shards.reader import iter_samples
from shards.record import MASK_IGNORE, Sample

TILE = 192
TEXT_WIDTH = 420
OVERLAY_ACCEPTED = np.array([255, 40, 40], dtype=np.float32)
OVERLAY_IGNORE = np.array([128, 128, 128], dtype=np.float32)


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Tint accepted artifact pixels red and ignore pixels grey."""
    out = image.astype(np.float32)
    ignore = mask == MASK_IGNORE
    for selector, colour in ((ignore, OVERLAY_IGNORE), ((mask > 0) & ~ignore, OVERLAY_ACCEPTED)):
        out[selector] = (1 - alpha) * out[selector] + alpha * colour
    return out.clip(0, 255).astype(np.uint8)


def _tile(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array)
    scale = TILE / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


def explanation_text(sample: Sample) -> str:
    lines = [f"{sample.sample_id}  [{sample.status}] {sample.reject_reason}".strip(),
             f"caption: {sample.caption}"]
    for k, art in enumerate(sample.artifacts, start=1):
        verdict = "accepted" if art.accepted else f"rejected ({art.reject_reason})"
        what = " / ".join(x for x in (art.entity, art.subentity, art.kernel) if x)
        lines.append(f"{k}. {art.tool} {what}: {verdict}. {art.local_explanation}")
    if sample.global_explanation:
        lines.append(f"global: {sample.global_explanation}")
    return "\n".join(lines)


def render_row(sample: Sample) -> Image.Image:
    """One contact-sheet row: real | artifact | overlay | text."""
    real = decode_array(sample.real_image)
    artifact = decode_array(sample.image) if sample.image else real
    mask = decode_mask(sample.mask) if sample.mask else np.zeros(real.shape[:2], np.uint8)
    tiles = [_tile(real), _tile(artifact), _tile(mask_overlay(artifact, mask))]
    row = Image.new("RGB", (3 * TILE + TEXT_WIDTH, TILE), "white")
    for i, tile in enumerate(tiles):
        row.paste(tile, (i * TILE, 0))
    draw = ImageDraw.Draw(row)
    wrapped = "\n".join(textwrap.fill(line, width=68) for line in explanation_text(sample).splitlines())
    draw.multiline_text((3 * TILE + 6, 4), wrapped, fill="black", font=ImageFont.load_default(), spacing=2)
    return row


def write_preview(run_dir: str | Path, rows: int = 12, seed: int = 0, include_rejected: bool = False) -> Path:
    run_dir = Path(run_dir)
    out = run_dir / "preview"
    out.mkdir(parents=True, exist_ok=True)
    samples = [s for s in iter_samples(run_dir) if include_rejected or s.status == "accepted"]
    if not samples:
        raise ValueError(f"{run_dir} holds no {'' if include_rejected else 'accepted '}samples to preview")
    chosen = sorted(random.Random(seed).sample(samples, min(rows, len(samples))), key=lambda s: s.sample_id)
    rendered = [render_row(s) for s in chosen]
    sheet = Image.new("RGB", (rendered[0].width, TILE * len(rendered)), "white")
    cells = []
    for i, (sample, row) in enumerate(zip(chosen, rendered)):
        sheet.paste(row, (0, i * TILE))
        name = f"{sample.sample_id}.png"
        row.save(out / name)
        cells.append(f'<figure><img src="{name}" alt="{html.escape(sample.sample_id)}">'
                     f"<figcaption><pre>{html.escape(explanation_text(sample))}</pre></figcaption></figure>")
    sheet.save(out / "contact_sheet.png")
    (out / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>FlawForge preview</title>"
        "<style>body{font-family:sans-serif;margin:2em}figure{margin:0 0 2em}pre{white-space:pre-wrap}</style>"
        f"<h1>FlawForge preview: {html.escape(str(run_dir))}</h1>"
        "<p>Columns: real | artifact | mask overlay (red: accepted artifact, grey: ignore region) | "
        "explanations.</p>" + "".join(cells))
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m factory.preview", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="output folder of factory.run")
    parser.add_argument("--rows", type=int, default=12, help="samples to show (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="which samples to show")
    parser.add_argument("--include-rejected", action="store_true", help="also show rejected samples")
    args = parser.parse_args(argv)
    try:
        index = write_preview(args.run_dir, args.rows, args.seed, args.include_rejected)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"preview written: {index} and {index.parent / 'contact_sheet.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
