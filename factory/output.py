"""The run's output folder: committed shards, the ledger read back from them, the shard buffer and
the report.

A sample is finished when the shard holding it has been committed (written to a temporary name,
then renamed); the ``Ledger`` is what the committed shards hold, so resume and the report never
trust anything but the data. ``ShardBuffer`` commits rows by size or age; ``build_report`` counts
from the shards themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow.parquet as pq

from factory import __version__ as CODE_VERSION
from factory.config import TOOLS, Config
from shards.record import Sample
from shards.rows import table_to_samples

log = logging.getLogger("flawforge.factory")
STATE_FILE = "flawforge.json"


class OutputMismatchError(RuntimeError):
    """The output directory holds a run made with a different config."""



@dataclass
class Ledger:
    """What the committed shards hold: the source of truth for resume and for the report."""

    status: dict[str, str] = field(default_factory=dict)  # sample_id -> status
    accepted: int = 0
    reasons: Counter = field(default_factory=Counter)
    planned_by_tool: Counter = field(default_factory=Counter)
    accepted_by_tool: Counter = field(default_factory=Counter)
    in_dataset_by_tool: Counter = field(default_factory=Counter)  # labelled artifacts of accepted images
    stage_seconds: Counter = field(default_factory=Counter)
    stage_rows: Counter = field(default_factory=Counter)
    files: int = 0
    box_pairs: int = 0  # labelled artifacts with both a target box and a changed-pixel box
    box_iou_sum: float = 0.0
    box_area_ratio_sum: float = 0.0  # target box area / changed-pixel box area

    @property
    def rejected(self) -> int:
        return len(self.status) - self.accepted

    def add(self, sample: Sample) -> None:
        if sample.sample_id in self.status:
            log.warning("sample %s appears in two shards; counted once", sample.sample_id)
            return
        self.status[sample.sample_id] = sample.status
        self.accepted += sample.status == "accepted"
        if sample.status == "rejected":
            self.reasons[reason_code(sample.reject_reason)] += 1
        for artifact in sample.artifacts:
            self.planned_by_tool[artifact.tool] += 1
            self.accepted_by_tool[artifact.tool] += artifact.accepted
            self.in_dataset_by_tool[artifact.tool] += artifact.accepted and sample.status == "accepted"
            if artifact.accepted and sample.status == "accepted" and artifact.target_bbox and len(artifact.bbox) == 4:
                iou, ratio = box_overlap(artifact.target_bbox, artifact.bbox)
                self.box_pairs += 1
                self.box_iou_sum += iou
                self.box_area_ratio_sum += ratio
        for stage, seconds in (sample.provenance.get("timings") or {}).items():
            self.stage_seconds[stage] += seconds
            self.stage_rows[stage] += 1


def box_overlap(target: list[int], changed: list[int]) -> tuple[float, float]:
    """(IoU, target area / changed area) of two [x0, y0, x1, y1] boxes (end exclusive)."""
    def area(b):
        return max(0, b[2] - b[0]) * max(0, b[3] - b[1])

    inter = area([max(target[0], changed[0]), max(target[1], changed[1]),
                  min(target[2], changed[2]), min(target[3], changed[3])])
    union = area(target) + area(changed) - inter
    return (inter / union if union else 0.0), (area(target) / area(changed) if area(changed) else 0.0)


def reason_code(reason: str) -> str:
    """``bad_input:truncated: ...`` → ``bad_input:truncated``: the countable part of a reason."""
    parts = reason.split(":")
    return ":".join(p.strip() for p in parts[:2]) if parts[0] == "bad_input" else parts[0].strip()


class OutputDir:
    """The run's folder (local or any fsspec URL): ``data/*.parquet``, state, report and card."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.fs.makedirs(f"{self.root}/data", exist_ok=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def remove_stale_temporaries(self) -> int:
        """Delete half-written shards left by a killed writer (hidden ``.*.tmp`` files)."""
        stale = self.fs.glob(self.path("data", ".*.tmp"))
        for path in stale:
            self.fs.rm(path)
        return len(stale)

    def shard_files(self) -> list[str]:
        files = self.fs.glob(self.path("data", "*.parquet"))
        return sorted(f for f in files if not f.rsplit("/", 1)[-1].startswith("."))

    def guard_config(self, config: Config) -> None:
        """Record the config on first use; refuse a different one later."""
        state_path = self.path(STATE_FILE)
        ours = {"config_hash": config.config_hash(), "preset": config.preset,
                "config": config.model_dump(mode="json"), "code_version": CODE_VERSION}
        if self.fs.exists(state_path):
            with self.fs.open(state_path, "r") as f:
                theirs = json.load(f)
            if theirs.get("config_hash") != ours["config_hash"]:
                raise OutputMismatchError(
                    f"{self.url} holds a run with config {theirs.get('config_hash')} "
                    f"(preset {theirs.get('preset')}), but this run's config is {ours['config_hash']} "
                    f"(preset {config.preset}). Use a new --out, or the same preset/config/seed to resume.")
            return
        with self.fs.open(state_path, "w") as f:
            json.dump(ours, f, indent=2)

    def scan(self) -> Ledger:
        """The ledger of the committed shards, read without their image columns."""
        ledger = Ledger()
        columns = ["sample_id", "source_id", "seed", "status", "reject_reason", "artifacts", "provenance",
                   "schema_version"]
        for path in self.shard_files():
            ledger.files += 1
            for sample in table_to_samples(pq.read_table(path, columns=columns, filesystem=self.fs)):
                ledger.add(sample)
        return ledger

    def commit(self, samples: list[Sample], config: Config) -> str:
        """Write one shard atomically; its name is a digest of its sample ids (unique, stable)."""
        from shards.writer import write_shard

        digest = hashlib.sha256("".join(s.sample_id for s in samples).encode()).hexdigest()[:16]
        target = f"{self.url}/data/part-{digest}.parquet"
        write_shard(samples, target, row_group_size=config.output.row_group_size,
                    compression=config.output.compression)
        return target

    def append_text(self, name: str, text: str) -> None:
        with self.fs.open(self.path(name), "a") as f:
            f.write(text)

    def write_json(self, name: str, data: Any) -> None:
        with self.fs.open(self.path(name), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)


@dataclass
class ShardBuffer:
    """Rows waiting to be committed; flushed by size or age."""

    out: OutputDir
    config: Config
    ledger: Ledger
    rows: list[Sample] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)

    @property
    def accepted(self) -> int:
        """Accepted samples committed plus those waiting in the buffer."""
        return self.ledger.accepted + sum(s.status == "accepted" for s in self.rows)

    def add(self, sample: Sample) -> None:
        self.rows.append(sample)
        if len(self.rows) >= self.config.output.rows_per_file:
            self.flush()

    def flush_if_due(self) -> None:
        if self.rows and time.monotonic() - self.last_flush >= self.config.output.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.out.commit(self.rows, self.config)
            for sample in self.rows:  # finished only now that their shard is committed
                self.ledger.add(sample)
            self.rows = []
        self.last_flush = time.monotonic()


def rebalanced_tool_shares(shares: dict[str, float], in_dataset_by_tool: Counter) -> dict[str, float] | None:
    """Plan shares that steer the dataset's artifacts (the labelled artifacts of accepted images)
    toward the configured mix: each tool's share scaled by its target share over its share of the
    dataset so far, then normalised (one step of a fixed-point iteration: a tool that passes curation
    less often, or finds fewer candidates, is planned more). None until every tool with a share has
    an artifact in the dataset.

    A run never steers itself: a sample's plan is a function of the config and its seed alone, so a
    resumed or repeated run reproduces it. The next run takes these shares through ``--set``."""
    planned = {tool: share for tool, share in shares.items() if share > 0}
    total = sum(in_dataset_by_tool[tool] for tool in planned)
    if not planned or any(in_dataset_by_tool[tool] == 0 for tool in planned):
        return None
    target = {tool: share / sum(planned.values()) for tool, share in planned.items()}
    steered = {tool: target[tool] * target[tool] / (in_dataset_by_tool[tool] / total) for tool in planned}
    return {tool: round(value / sum(steered.values()), 4) for tool, value in steered.items()}


def build_report(n: int, output: OutputDir, config: Config, streams: list[dict], processed: int,
                 resumed_with: int, elapsed: float) -> dict[str, Any]:
    """Counts from the committed shards themselves, so the report always matches the data."""
    ledger = output.scan()
    per_tool = {
        tool: {"planned": ledger.planned_by_tool[tool], "accepted": ledger.accepted_by_tool[tool],
               "in_dataset": ledger.in_dataset_by_tool[tool],
               "acceptance": round(ledger.accepted_by_tool[tool] / ledger.planned_by_tool[tool], 4)
               if ledger.planned_by_tool[tool] else None}
        for tool in TOOLS
    }
    shares = rebalanced_tool_shares(config.perception.tool_shares, ledger.in_dataset_by_tool)
    per_stage = {
        stage: {"samples": ledger.stage_rows[stage],
                "seconds_per_sample": round(ledger.stage_seconds[stage] / ledger.stage_rows[stage], 4)}
        for stage in ledger.stage_rows
    }
    return {
        "requested": n,
        "accepted": ledger.accepted,
        "rejected": ledger.rejected,
        "total": len(ledger.status),
        "rejected_by_reason": dict(sorted(ledger.reasons.items())),
        "per_tool": per_tool,
        # For the dataset's artifacts to follow perception.tool_shares in the next run (rebalanced_tool_shares).
        "tool_shares_for_the_configured_mix": shares,
        "set_tool_shares": None if shares is None else
        "perception.tool_shares={" + ", ".join(f"{tool}: {share}" for tool, share in shares.items()) + "}",
        "per_stage": per_stage,
        # How much the authors' label (target cells' box, exports' default) differs from every changed pixel's box.
        "target_vs_changed_boxes": {
            "artifacts": ledger.box_pairs,
            "mean_iou": round(ledger.box_iou_sum / ledger.box_pairs, 4) if ledger.box_pairs else None,
            "mean_area_ratio": round(ledger.box_area_ratio_sum / ledger.box_pairs, 4) if ledger.box_pairs else None,
        },
        "shards": ledger.files,
        "streams": streams,
        "processed_this_run": processed,
        "resumed_with": resumed_with,
        "elapsed_seconds": round(elapsed, 2),
        "preset": config.preset,
        "config_hash": config.config_hash(),
        "complete": ledger.accepted >= n,
    }
