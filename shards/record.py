"""The record that flows through every stage: one ``Sample`` per (source image, seed).

Stages fill it in order — perception sets ``real_image``, ``caption``, ``plan``; synthesis sets
``image``, ``clean_image`` and each planned artifact's ``region``; curation sets verdicts, explanations, ``mask``
and the final ``status``. A sample ends ``accepted``, ``rejected`` (the data said no) or
``failed`` (the infrastructure said no: a server down, out of memory, a bug); a failed sample is
never committed to a shard, so it is retried later. Between Ray Data stages a sample travels as a flat row
(``to_row``/``from_row``): ids, status and images as plain columns, nested parts as JSON strings,
so every stage sees the same columns and rejected samples keep flowing with their reason.
The Parquet shard schema (``shards.schema``) is the persisted form of the same record.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Status = Literal["pending", "accepted", "rejected", "failed"]
SCHEMA_VERSION = 2  # 2: clean_image
ARTIFACT_TOOLS = ("add", "remove", "distort", "fuse")  # the values of ``Artifact.tool``
MASK_IGNORE = 255  # ``Sample.mask`` value of a failed artifact's region: neither clean nor artifact
# Which images of a row serve as "no artifacts" examples: the VAE reconstruction, the photo, or both.
NEGATIVE_COLUMNS = {"clean": ("clean_image",), "real": ("real_image",), "both": ("clean_image", "real_image")}


def make_sample_id(source_id: str, seed: int, config_hash: str) -> str:
    """Deterministic id of one unit of work: the same source, seed and config give the same id."""
    digest = hashlib.sha256(f"{source_id}\x00{seed}\x00{config_hash}".encode()).hexdigest()
    return digest[:24]


@dataclass
class SourceInfo:
    uri: str = ""
    width: int = 0  # of the original file, before resizing
    height: int = 0
    sha256: str = ""


@dataclass
class Artifact:
    """One injected artifact. ``cells``/``reference_cells`` are token-cell indices (row * W + col)."""

    tool: str
    kernel: str | None = None
    entity: str = ""
    subentity: str | None = None
    bbox: list[int] = field(default_factory=list)  # [x0, y0, x1, y1] in pixels of the processed image
    cells: list[int] = field(default_factory=list)
    reference_cells: list[int] = field(default_factory=list)
    region: dict | None = None  # COCO RLE of the pixel change region (dilated target cells)
    local_explanation: str = ""
    label: str = ""
    lpips: float | None = None
    vlm_verdict: str | None = None  # raw JSON verdict of the VLM triplet check
    accepted: bool = False
    reject_reason: str = ""


@dataclass
class Sample:
    sample_id: str
    source_id: str
    seed: int
    status: Status = "pending"
    reject_reason: str = ""
    source: SourceInfo = field(default_factory=SourceInfo)
    real_image: bytes = b""  # PNG of the original at the processed size
    clean_image: bytes = b""  # PNG of its VAE reconstruction: ``image`` equals it wherever ``mask == 0``
    image: bytes = b""  # PNG of the artifact image
    mask: bytes = b""  # PNG, uint8: 0 clean, k = artifact k (1-based), 255 = ignore
    caption: str = ""
    global_explanation: str = ""
    plan: dict[str, Any] = field(default_factory=dict)  # perception output (entities, parts, RLEs)
    artifacts: list[Artifact] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] = field(default_factory=dict)  # stage, type, message, traceback; never stored

    # ---------------------------------------------------------------------------------- states
    def reject(self, reason: str) -> Sample:
        """The data says no: mark rejected with a reason; later stages pass it through unchanged."""
        if self.status == "pending":
            self.status = "rejected"
            self.reject_reason = reason
        return self

    def fail(self, stage: str, error: BaseException) -> Sample:
        """The infrastructure says no (or a bug): the sample is retried later, never committed."""
        self.status = "failed"
        self.failure = {
            "stage": stage,
            "type": type(error).__name__,
            "message": str(error)[:1000],
            "traceback": "".join(traceback.format_exception(error))[-8000:],
        }
        return self

    @property
    def is_pending(self) -> bool:
        """Still on its way: neither rejected nor failed nor finished."""
        return self.status == "pending"

    @property
    def is_rejected(self) -> bool:
        return self.status == "rejected"

    # ------------------------------------------------------------------------------- transport
    _JSON_FIELDS = ("source", "plan", "artifacts", "provenance", "failure")

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._JSON_FIELDS:
                if f.name == "source":
                    value = asdict(value)
                elif f.name == "artifacts":
                    value = [asdict(a) for a in value]
                row[f.name] = json.dumps(value, sort_keys=True)
            else:
                row[f.name] = value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        def text(name: str) -> Any:
            value = row.get(name)
            if value is None:
                return None
            return value if isinstance(value, str) else str(value)

        def blob(name: str) -> bytes:
            value = row.get(name)
            return bytes(value) if value is not None else b""

        return cls(
            sample_id=text("sample_id"),
            source_id=text("source_id"),
            seed=int(row["seed"]),
            status=text("status") or "pending",
            reject_reason=text("reject_reason") or "",
            source=SourceInfo(**json.loads(row.get("source") or "{}")),
            real_image=blob("real_image"),
            clean_image=blob("clean_image"),
            image=blob("image"),
            mask=blob("mask"),
            caption=text("caption") or "",
            global_explanation=text("global_explanation") or "",
            plan=json.loads(row.get("plan") or "{}"),
            artifacts=[Artifact(**a) for a in json.loads(row.get("artifacts") or "[]")],
            provenance=json.loads(row.get("provenance") or "{}"),
            failure=json.loads(row.get("failure") or "{}"),
        )


def row_schema():
    """Arrow schema of a ``Sample.to_row()`` row: the transport format between Ray Data stages."""
    import pyarrow as pa

    text = ("sample_id", "source_id", "status", "reject_reason", "source", "caption",
            "global_explanation", "plan", "artifacts", "provenance", "failure")
    types = {name: pa.string() for name in text}
    types.update(seed=pa.int64(), real_image=pa.binary(), clean_image=pa.binary(), image=pa.binary(), mask=pa.binary())
    return pa.schema([(f.name, types[f.name]) for f in fields(Sample)])


def to_transport_table(samples: list[Sample]):
    """Samples → a pyarrow table in the transport schema (a Ray Data ``pyarrow`` batch)."""
    import pyarrow as pa

    return pa.Table.from_pylist([s.to_row() for s in samples], schema=row_schema())


def from_transport_table(table) -> list[Sample]:
    """A transport-schema pyarrow table (a Ray Data batch) → samples."""
    return [Sample.from_row(row) for row in table.to_pylist()]
