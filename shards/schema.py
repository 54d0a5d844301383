"""The persisted shard schema (README, "Output format"): one Parquet row per ``Sample``.

Owns the Arrow schema ``SHARD_SCHEMA`` and the Hugging Face ``datasets`` feature declaration that
travels with it (the ``huggingface`` schema-metadata key, and the YAML form used by the dataset
card), so ``datasets.load_dataset`` decodes ``image``, ``real_image``, ``clean_image`` and ``mask`` as PIL images.
The feature declaration is derived from the Arrow types, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from shards.record import SCHEMA_VERSION

IMAGE_COLUMNS = ("image", "real_image", "clean_image", "mask")
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

ARTIFACT_TYPE = pa.struct([
    ("tool", pa.string()),
    ("kernel", pa.string()),
    ("entity", pa.string()),
    ("subentity", pa.string()),
    ("bbox", pa.list_(pa.int32())),
    ("cells", pa.list_(pa.int32())),
    ("reference_cells", pa.list_(pa.int32())),
    ("region_rle", pa.string()),  # JSON of the COCO RLE ``Artifact.region``; null when None
    ("local_explanation", pa.string()),
    ("label", pa.string()),
    ("lpips", pa.float64()),
    ("vlm_verdict", pa.string()),
    ("accepted", pa.bool_()),
    ("reject_reason", pa.string()),
])

SOURCE_TYPE = pa.struct([
    ("uri", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("sha256", pa.string()),
])

_FIELDS = pa.schema([
    ("sample_id", pa.string()),
    ("source_id", pa.string()),
    ("seed", pa.int64()),
    ("status", pa.string()),
    ("reject_reason", pa.string()),
    ("image", IMAGE_TYPE),
    ("real_image", IMAGE_TYPE),
    ("clean_image", IMAGE_TYPE),
    ("mask", IMAGE_TYPE),
    ("caption", pa.string()),
    ("global_explanation", pa.string()),
    ("artifacts", pa.list_(ARTIFACT_TYPE)),
    ("source", SOURCE_TYPE),
    ("plan", pa.string()),  # JSON
    ("provenance", pa.string()),  # JSON
    ("schema_version", pa.int32()),
])

# Arrow names that differ from the ``datasets`` Value dtype names.
_VALUE_DTYPES = {pa.float64(): "float64", pa.float32(): "float32", pa.bool_(): "bool"}


def _feature(dtype: pa.DataType) -> dict[str, Any]:
    """An Arrow type → its ``datasets.Features.to_dict()`` form (``Value``, ``List``, struct dict)."""
    if pa.types.is_struct(dtype):
        return {dtype.field(i).name: _feature(dtype.field(i).type) for i in range(dtype.num_fields)}
    if pa.types.is_list(dtype):
        return {"feature": _feature(dtype.value_type), "_type": "List"}
    return {"dtype": _VALUE_DTYPES.get(dtype, str(dtype)), "_type": "Value"}


def hf_features() -> dict[str, Any]:
    """The shard's ``datasets`` features, as ``datasets.Features.to_dict()`` would write them."""
    return {f.name: {"_type": "Image"} if f.name in IMAGE_COLUMNS else _feature(f.type) for f in _FIELDS}


def _yaml_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """One ``to_dict`` feature → the dataset-card YAML form (``Features._to_yaml_list`` rules)."""
    kind = feature.get("_type")
    if kind == "Image":
        return {"dtype": "image"}
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "List":
        inner = _yaml_feature(feature["feature"])
        return {"list": inner.get("dtype") or inner["struct"]}
    return {"struct": [{"name": name, **_yaml_feature(sub)} for name, sub in feature.items()]}


def hf_yaml_features() -> list[dict[str, Any]]:
    """The features as a dataset card's ``dataset_info.features`` list."""
    return [{"name": name, **_yaml_feature(feature)} for name, feature in hf_features().items()]


SHARD_SCHEMA = _FIELDS.with_metadata({
    "huggingface": json.dumps({"info": {"features": hf_features()}}),
    "flawforge": json.dumps({"schema_version": SCHEMA_VERSION}),
})
