"""The dataset card (``README.md``) of a run's output directory.

Owns the card's YAML front matter — license, task categories, tags, the ``configs`` entry that
points ``datasets.load_dataset(out_dir)`` at ``data/*.parquet``, and ``dataset_info.features``
generated from ``shards.schema`` — and its body: run statistics rendered as tables, the column
documentation, the run config, and for tiny runs a loud note that the output proves mechanics only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import fsspec
import yaml
from fsspec.implementations.local import LocalFileSystem

from shards.schema import hf_yaml_features

TAGS = ["synthetic", "image-forensics", "ai-generated-image-detection", "artifact-detection",
        "artifact-localization", "flux", "flawforge"]

COLUMNS = """\
| column | type | meaning |
|---|---|---|
| `sample_id` | string | deterministic id: hash of source id, seed and config hash |
| `source_id` | string | id of the source photo |
| `seed` | int64 | seed of this (source, seed) unit of work |
| `status` | string | `accepted` or `rejected` (samples the infrastructure failed are never written) |
| `reject_reason` | string | why a rejected row was rejected (empty when accepted) |
| `image` | image (PNG) | the photo with injected artifacts, composited onto `clean_image`; null when the row was rejected before synthesis |
| `real_image` | image (PNG) | the original photo at the processed size (camera pixels); null if it could not be decoded |
| `clean_image` | image (PNG) | the VAE reconstruction of `real_image` (decode of its encoded latent): `image == clean_image` wherever `mask == 0`, byte for byte |
| `mask` | image (PNG, mode L) | 0 = clean, k = artifact k (1-based, order of `artifacts`), 255 = ignore (only with `curation.partial`) |
| `caption` | string | caption of the real photo |
| `global_explanation` | string | what is wrong with the image as a whole |
| `negative_explanation` | string | why the photo itself (`clean_image` / `real_image`) has no structural flaw: the answer a VLM is trained on for the negative images |
| `artifacts` | list of struct | one entry per planned artifact: `tool`, `kernel`, `entity`, `subentity`, `bbox` [x0, y0, x1, y1] in pixels (end exclusive) around every changed pixel, `target_bbox` the tight box of the target cells (the method authors' label and the exports' default box; null in shards before schema 4), `cells`/`reference_cells` token-cell indices (row × W + col), `region` (COCO RLE `{size, counts}` of the changed pixels: the label), `local_explanation`, `label`, `xaigd_category` (X-AIGD's category: `shards/taxonomy.py`), `lpips`, `vlm_verdict` (raw JSON), `accepted`, `reject_reason` |
| `source` | struct | `uri`, `width`/`height` of the original file, `sha256` |
| `plan` | struct | perception and planner output: detections, entities and parts (label, box, score, COCO RLE mask), the planned mappings |
| `provenance` | struct | preset, config hash, code version, seed, timestamp, model id and revision per role, timings |
| `schema_version` | int32 | version of this row format |
"""

THREE_IMAGES = """\
**Three images per row.** `real_image` is the photo as the camera made it. `clean_image` is its
reconstruction through the FLUX VAE, and `image` is `clean_image` with the artifacts pasted into the
masked cells: every pixel of `image` went through the same decoder, so "VAE-decoded pixels" does not
mark the artifacts, and `image == clean_image` wherever `mask == 0`. Use `clean_image` as the
negative for a detector (the same decoder fingerprint); `real_image` as an extra negative if you
want one. Unless the run set `curation.partial`, an image is accepted only when *every* artifact in
it passed curation, so no accepted image carries an unlabelled edit.
"""

TINY_NOTE = """\
> [!WARNING]
> **TINY PRESET — NOT A REAL DATASET.** This run used the `tiny` preset: FLUX and LPIPS are
> *randomly initialised* models of the production classes (only the tiny VAE is fitted for a few
> seconds to reconstruct photos); Grounding DINO and SAM are random models
> whose outputs are replaced by a seeded geometric layout of boxes and ellipses; the VLM is
> *scripted* (answers drawn from a fixed lexicon and templates, no model; see `provenance`).
> The files prove the factory's mechanics (planning, injection, curation, masks, shards, resume),
> **not artifact quality**. Do not train or evaluate on them.
"""


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _records_table(key_name: str, records: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Dicts keyed by name (or a list of dicts) → one table whose columns are the union of keys."""
    items = list(records.items()) if isinstance(records, dict) else list(enumerate(records))
    columns = list(dict.fromkeys(k for _, rec in items for k in rec))
    return _table([key_name, *columns], [[name, *(rec.get(c) for c in columns)] for name, rec in items])


def render_stats(stats: dict[str, Any]) -> str:
    """Run statistics as Markdown: scalars in one summary table, each nested value as its own table."""
    scalars = [[k, v] for k, v in stats.items() if not isinstance(v, (dict, list))]
    parts = [_table(["statistic", "value"], scalars)] if scalars else []
    for key, value in stats.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            body = _records_table(key, value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            body = _records_table("#", value)
        elif isinstance(value, dict):
            body = _table([key, "value"], [[k, v] for k, v in value.items()]) if value else "(none)\n"
        elif isinstance(value, list):
            body = _cell(value) + "\n"
        else:
            continue
        parts.append(f"### {key.replace('_', ' ')}\n\n{body}")
    return "\n".join(parts)


def card_metadata() -> dict[str, Any]:
    """The YAML front matter of the card."""
    return {
        "license": "other",
        "task_categories": ["image-segmentation", "image-classification", "visual-question-answering"],
        "tags": TAGS,
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
        "dataset_info": {"features": hf_yaml_features()},
    }


def render_card(stats: dict[str, Any], config: dict[str, Any], tiny: bool) -> str:
    """The whole ``README.md`` text."""
    front = yaml.safe_dump(card_metadata(), sort_keys=False, allow_unicode=True)
    config_yaml = yaml.safe_dump(config, sort_keys=True, allow_unicode=True)
    sections = [
        f"---\n{front}---\n",
        "# FlawForge synthetic artifact dataset\n",
        TINY_NOTE if tiny else "",
        "Real photos with injected structural artifacts (FLUX), each verified and explained, with a "
        "per-pixel artifact mask. One row per (source photo, seed); rejected rows are kept with their "
        "reason. Load with `datasets.load_dataset(\"<this directory>\")`: `image`, `real_image`, "
        "`clean_image` and `mask` decode as PIL images.\n",
        THREE_IMAGES,
        "**License:** the images are derived from the source photos; each row's source license "
        "(see `source.uri`) applies.\n",
        "## Run statistics\n",
        render_stats(stats),
        "## Columns\n",
        COLUMNS,
        "## Config\n",
        f"```yaml\n{config_yaml}```\n",
    ]
    return "\n".join(s for s in sections if s)


def write_dataset_card(out_dir: str | os.PathLike, stats: dict[str, Any], config: dict[str, Any],
                       tiny: bool) -> Path | str:
    """Write ``out_dir/README.md`` (local path or fsspec URL); returns its ``Path`` or URL."""
    fs, root = fsspec.core.url_to_fs(str(out_dir))
    target = f"{root.rstrip('/')}/README.md"
    fs.makedirs(root, exist_ok=True)
    with fs.open(target, "w", encoding="utf-8") as f:
        f.write(render_card(stats, config, tiny))
    return Path(target) if isinstance(fs, LocalFileSystem) else f"{str(out_dir).rstrip('/')}/README.md"
