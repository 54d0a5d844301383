"""The record that flows through every stage: one ``Sample`` per (source image, seed).

Stages fill it in order — perception sets ``real_image``, ``caption``, ``plan``; synthesis sets
``image``, ``clean_image`` and each planned artifact's ``region``; curation sets verdicts, explanations, ``mask``
and the final ``status``. A sample ends ``accepted``, ``rejected`` (the data said no) or
``failed`` (the infrastructure said no: a server down, out of memory, a bug); a failed sample is
never committed to a shard, so it is retried later. In Arrow — between Ray Data stages and in the
Parquet shards — a sample is one row of typed columns (``shards.schema``), converted by
``shards.rows`` alone; rejected samples keep flowing with their reason.
"""

from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pending", "accepted", "rejected", "failed"]
SCHEMA_VERSION = 4  # 2: clean_image; 3: negative_explanation; 4: artifacts[].target_bbox
BoxKind = Literal["target", "changed"]  # which box of an artifact exports and box metrics use
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
    bbox: list[int] = field(default_factory=list)  # [x0, y0, x1, y1], end exclusive: the changed pixels' box
    target_bbox: list[int] | None = None  # tight box of the target cells: the authors' label (None: schema < 4)
    cells: list[int] = field(default_factory=list)
    reference_cells: list[int] = field(default_factory=list)
    region: dict | None = None  # COCO RLE of the pixel change region (dilated target cells)
    local_explanation: str = ""
    label: str = ""
    xaigd_category: str = ""  # X-AIGD's category of this artifact (``shards.taxonomy``)
    lpips: float | None = None
    vlm_verdict: str | None = None  # raw JSON verdict of the VLM triplet check
    accepted: bool = False
    reject_reason: str = ""

    def box(self, boxes: BoxKind = "target") -> list[int]:
        """The artifact's box: ``target`` the tight box of its target cells (falls back to ``bbox`` for
        rows written before schema 4), ``changed`` the box of every pixel it may change."""
        if boxes == "target" and self.target_bbox and len(self.target_bbox) == 4:
            return list(self.target_bbox)
        return list(self.bbox)


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
    negative_explanation: str = ""  # why the photo itself is flawless: the answer for its clean/real image
    plan: dict[str, Any] = field(default_factory=dict)  # perception output (entities, parts, RLEs)
    artifacts: list[Artifact] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] = field(default_factory=dict)  # stage, type, message, traceback; never stored
    prompt_embeds: bytes = b""  # the caption encoded for FLUX, when perception encodes it; never stored

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
