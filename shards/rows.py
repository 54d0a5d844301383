"""The one ``Sample`` ⇄ Arrow row converter, for every place a sample meets Arrow: the Ray Data
stages (``TRANSPORT_SCHEMA``), the shard writer and reader and resume (``SHARD_SCHEMA``).

Nested parts map onto the schema's structs field by field: ``pa.Table.from_pylist`` fills a field
a dict lacks with null, and ``_without_nulls`` drops those again on the way back, so a sample
round-trips unchanged as long as its nested dicts hold no ``None`` values (producers leave such
keys out); a key the schema lacks raises instead of being dropped. Rows written by older schema versions (JSON strings for ``plan``,
``provenance`` and ``region_rle``; no ``clean_image`` or ``negative_explanation``) still read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, Sequence

import pyarrow as pa

from shards.record import SCHEMA_VERSION, Artifact, Sample, SourceInfo
from shards.schema import IMAGE_COLUMNS, SHARD_SCHEMA, TRANSPORT_SCHEMA
from shards.taxonomy import artifact_category

_ARTIFACT_FIELDS = {f.name for f in fields(Artifact)}


def _image_cell(sample_id: str, column: str, data: bytes) -> dict[str, Any] | None:
    """PNG bytes → the ``{bytes, path}`` image struct; a missing image is a null cell."""
    return {"bytes": data, "path": f"{sample_id}_{column}.png"} if data else None


def check_fields(value: Any, dtype: pa.DataType, path: str) -> None:
    """Raise when a nested dict has a key its struct type lacks (Arrow would drop it silently)."""
    if pa.types.is_struct(dtype) and isinstance(value, dict):
        names = {dtype.field(i).name: dtype.field(i).type for i in range(dtype.num_fields)}
        unknown = set(value) - set(names)
        if unknown:
            raise ValueError(f"{path} has fields the shard schema lacks: {sorted(unknown)}")
        for key, item in value.items():
            check_fields(item, names[key], f"{path}.{key}")
    elif pa.types.is_list(dtype) and isinstance(value, list):
        for item in value:
            check_fields(item, dtype.value_type, f"{path}[]")


def sample_to_row(sample: Sample, transport: bool = False) -> dict[str, Any]:
    """One sample as a row of ``SHARD_SCHEMA`` (with ``failure`` and ``prompt_embeds`` when ``transport``)."""
    for name in ("plan", "provenance"):  # free-form dicts in Python, typed structs in Arrow
        check_fields(getattr(sample, name), SHARD_SCHEMA.field(name).type, name)
    row = {
        "sample_id": sample.sample_id,
        "source_id": sample.source_id,
        "seed": sample.seed,
        "status": sample.status,
        "reject_reason": sample.reject_reason,
        **{column: _image_cell(sample.sample_id, column, getattr(sample, column)) for column in IMAGE_COLUMNS},
        "caption": sample.caption,
        "global_explanation": sample.global_explanation,
        "negative_explanation": sample.negative_explanation,
        "artifacts": [asdict(a) for a in sample.artifacts],
        "source": asdict(sample.source),
        "plan": sample.plan or None,
        "provenance": sample.provenance or None,
        "schema_version": SCHEMA_VERSION,
    }
    if transport:
        row["failure"] = sample.failure or None
        row["prompt_embeds"] = sample.prompt_embeds or None
    return row


def samples_to_table(samples: Sequence[Sample], transport: bool = False) -> pa.Table:
    """Samples → a table in ``SHARD_SCHEMA`` (schema metadata included), or ``TRANSPORT_SCHEMA``."""
    schema = TRANSPORT_SCHEMA if transport else SHARD_SCHEMA
    return pa.Table.from_pylist([sample_to_row(s, transport) for s in samples], schema=schema)


def _without_nulls(value: Any) -> Any:
    """Nested dicts and lists with the null fields of the schema's structs dropped."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _nested(value: Any) -> dict[str, Any]:
    """A struct cell (or a JSON string, schema versions 1-2) → a dict without null fields."""
    if isinstance(value, str):
        return json.loads(value)
    return _without_nulls(value) if value else {}


def _artifact(cell: dict[str, Any]) -> Artifact:
    cell = dict(cell)
    if "region_rle" in cell:  # schema versions 1-2: the region as a JSON string
        text = cell.pop("region_rle")
        cell["region"] = None if text is None else json.loads(text)
    artifact = Artifact(**{k: v for k, v in cell.items() if k in _ARTIFACT_FIELDS})
    if "xaigd_category" not in cell:  # schema versions 1-2: derived from the stored fields
        artifact.xaigd_category = artifact_category(artifact)
    return artifact


def row_to_sample(row: dict[str, Any]) -> Sample:
    """The inverse of ``sample_to_row``, for rows of this and every earlier schema version, and for
    a projection of the columns (absent columns read as empty)."""
    version = row.get("schema_version") or SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise ValueError(f"shard row {row['sample_id']} has schema version {version}; "
                         f"this code reads up to {SCHEMA_VERSION}")
    images = {c: row[c]["bytes"] if row.get(c) is not None else b"" for c in IMAGE_COLUMNS}  # v1: no clean_image
    return Sample(
        sample_id=row["sample_id"],
        source_id=row["source_id"],
        seed=int(row["seed"]),
        status=row["status"],
        reject_reason=row.get("reject_reason") or "",
        source=SourceInfo(**(row.get("source") or {})),
        caption=row.get("caption") or "",
        global_explanation=row.get("global_explanation") or "",
        negative_explanation=row.get("negative_explanation") or "",
        plan=_nested(row.get("plan")),
        artifacts=[_artifact(a) for a in row.get("artifacts") or []],
        provenance=_nested(row.get("provenance")),
        failure=_nested(row.get("failure")),
        prompt_embeds=row.get("prompt_embeds") or b"",
        **images,
    )


def table_to_samples(table: pa.Table) -> list[Sample]:
    """A table in ``SHARD_SCHEMA`` or ``TRANSPORT_SCHEMA`` (or an earlier shard version) → samples."""
    return [row_to_sample(row) for row in table.to_pylist()]
