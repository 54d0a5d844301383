"""The record's Arrow form (README, "Output format"): one Parquet row per ``Sample``.

The same typed columns (structs and lists, no JSON inside strings) are the stored shard schema
``SHARD_SCHEMA`` and, with a ``failure`` column added, the transport schema ``TRANSPORT_SCHEMA``
between Ray Data stages; ``shards.rows`` converts samples to and from both. Owns the types and
the Hugging Face ``datasets`` feature declaration that travels with them (the ``huggingface``
schema-metadata key, and the YAML form used by the dataset card), so ``datasets.load_dataset``
decodes ``image``, ``real_image``, ``clean_image`` and ``mask`` as PIL images. The feature
declaration is derived from the Arrow types, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from shards.record import SCHEMA_VERSION

IMAGE_COLUMNS = ("image", "real_image", "clean_image", "mask")
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])  # COCO RLE, counts as text

ARTIFACT_TYPE = pa.struct([
    ("tool", pa.string()),
    ("kernel", pa.string()),
    ("entity", pa.string()),
    ("subentity", pa.string()),
    ("bbox", pa.list_(pa.int32())),
    ("target_bbox", pa.list_(pa.int32())),  # schema 4: the target cells' tight box (null in older shards)
    ("cells", pa.list_(pa.int32())),
    ("reference_cells", pa.list_(pa.int32())),
    ("region", RLE_TYPE),  # the pixels the artifact may change: its label; null when not synthesised
    ("local_explanation", pa.string()),
    ("label", pa.string()),
    ("xaigd_category", pa.string()),
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

# Perception's findings and the planner's mappings. ``kind`` / ``parent`` are set for parts only;
# each tool fills its own ``meta`` fields (the others are null): add ``anchor``/``offset``/``score``,
# remove ``ring_cells``/``background_only``, distort ``moved``/``targets``, fuse ``regions``.
DETECTION_TYPE = pa.struct([
    ("label", pa.string()),
    ("kind", pa.string()),
    ("parent", pa.int32()),
    ("score", pa.float64()),
    ("box", pa.list_(pa.float64())),
    ("mask", RLE_TYPE),
])
FUSE_REGION_TYPE = pa.struct([
    ("seed", pa.int32()),
    ("label", pa.string()),
    ("cells", pa.int32()),
    ("offset", pa.list_(pa.int32())),
    ("fitted", pa.bool_()),
])
MAPPING_META_TYPE = pa.struct([
    ("anchor", pa.int32()),
    ("offset", pa.list_(pa.int32())),
    ("score", pa.float64()),
    ("ring_cells", pa.int32()),
    ("background_only", pa.bool_()),
    ("moved", pa.int32()),
    ("targets", pa.string()),
    ("regions", pa.list_(FUSE_REGION_TYPE)),
])
MAPPING_TYPE = pa.struct([
    ("tool", pa.string()),
    ("kernel", pa.string()),
    ("entity", pa.string()),
    ("subentity", pa.string()),
    ("grid", pa.list_(pa.int32())),
    ("target_cells", pa.list_(pa.int32())),
    ("reference_cells", pa.list_(pa.int32())),
    ("meta", MAPPING_META_TYPE),
])
VOCABULARY_TYPE = pa.struct([("phrase", pa.string()), ("role", pa.string())])
PLAN_TYPE = pa.struct([
    ("vocabulary", pa.list_(VOCABULARY_TYPE)),  # the VLM's phrases and roles (describe)
    ("found", pa.list_(DETECTION_TYPE)),  # grounded + segmented detections, between steps only (plan drops them)
    ("detections", pa.int32()),
    ("entities", pa.list_(DETECTION_TYPE)),
    ("parts", pa.list_(DETECTION_TYPE)),
    ("artifacts", pa.list_(MAPPING_TYPE)),
])

# Where a row comes from: the run (preset, config hash, code version, seed), the model of each role
# (an id or path and revision; never a credential) and the seconds spent per stage.
MODELS_TYPE = pa.struct([(role, pa.string()) for role in
                         ("vlm", "grounding", "segmentation", "flux", "flux_revision", "lpips")])
STAGE_TIMINGS_TYPE = pa.struct([(stage, pa.float64()) for stage in ("decode", "perception", "synthesis", "curation")])
SYNTHESIS_TIMINGS_TYPE = pa.struct([(step, pa.float64()) for step in ("encode", "invert", "denoise", "decode", "total")])
PROVENANCE_TYPE = pa.struct([
    ("preset", pa.string()),
    ("config_hash", pa.string()),
    ("code_version", pa.string()),
    ("seed", pa.int64()),
    ("written_at", pa.string()),
    ("models", MODELS_TYPE),
    ("timings", STAGE_TIMINGS_TYPE),
    ("synthesis_timings", SYNTHESIS_TIMINGS_TYPE),
    ("value_cache_bytes", pa.int64()),
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
    ("negative_explanation", pa.string()),
    ("artifacts", pa.list_(ARTIFACT_TYPE)),
    ("source", SOURCE_TYPE),
    ("plan", PLAN_TYPE),
    ("provenance", PROVENANCE_TYPE),
    ("schema_version", pa.int32()),
])

# A failed sample's what and where: travels between stages to the driver, never stored.
FAILURE_TYPE = pa.struct([("stage", pa.string()), ("type", pa.string()), ("message", pa.string()),
                          ("traceback", pa.string())])

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

# Between Ray Data stages a sample travels in the stored form plus its failure and its encoded prompt
# (when perception encodes it for synthesis); neither is stored.
TRANSPORT_SCHEMA = _FIELDS.append(pa.field("failure", FAILURE_TYPE)).append(pa.field("prompt_embeds", pa.binary()))
