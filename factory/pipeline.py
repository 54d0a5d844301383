"""The factory job: rounds of Ray Data streaming (decode → perceive → synthesize → curate) until
exactly ``n`` accepted samples are committed to Parquet shards.

Resume and exactness rest on one rule: **a sample is finished when the shard holding it has been
committed** (written to a temporary name, then renamed). On start the job scans the committed
shards of ``--out``; those sample ids, accepted or rejected, are never planned again. Work is
planned in rounds of (source image, seed) pairs sized from the yield measured so far; the driver
streams finished rows from Ray Data, commits them in shards, and stops the stream the moment the
n-th accepted row is committed (surplus rows in flight are dropped, not written, so they are not
"finished" and nothing is duplicated). A changed config on an existing ``--out`` is refused.

A sample the infrastructure failed (``status == "failed"``: a server down, out of memory, a bug)
is never committed: its traceback goes to ``OUT/errors.jsonl``, it is planned again in a later
round (at most ``factory.max_attempts`` tries per run), and when one stage fails a large share of
the latest samples the circuit breaker stops the job with ``StageFailingError`` — the sources stay
unconsumed, and the same command resumes once the cause is fixed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from factory.config import TOOLS, Config, FactoryConfig
from factory.stages import STAGES, decode_sources, sample_seed, work_schema
from shards.record import Sample, from_transport_table, make_sample_id

log = logging.getLogger("flawforge.factory")
CODE_VERSION = "0.1.0"
STATE_FILE = "flawforge.json"


class OutputMismatchError(RuntimeError):
    """The output directory holds a run made with a different config."""


class StageFailingError(RuntimeError):
    """A stage keeps failing (infrastructure or a bug); the message is the one line to show."""


@dataclass
class WorkItem:
    sample_id: str
    source_id: str
    seed: int
    uri: str
    data: bytes = b""


@dataclass
class Ledger:
    """What the committed shards hold: the source of truth for resume and for the report."""

    status: dict[str, str] = field(default_factory=dict)  # sample_id -> status
    accepted: int = 0
    reasons: Counter = field(default_factory=Counter)
    planned_by_tool: Counter = field(default_factory=Counter)
    accepted_by_tool: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)
    stage_rows: Counter = field(default_factory=Counter)
    files: int = 0

    @property
    def rejected(self) -> int:
        return len(self.status) - self.accepted

    def add(self, sample_id: str, status: str, reason: str, artifacts: list[dict], provenance: dict) -> None:
        if sample_id in self.status:
            log.warning("sample %s appears in two shards; counted once", sample_id)
            return
        self.status[sample_id] = status
        self.accepted += status == "accepted"
        if status == "rejected":
            self.reasons[reason_code(reason)] += 1
        for art in artifacts:
            self.planned_by_tool[art["tool"]] += 1
            self.accepted_by_tool[art["tool"]] += bool(art.get("accepted"))
        for stage, seconds in (provenance.get("timings") or {}).items():
            self.stage_seconds[stage] += float(seconds)
            self.stage_rows[stage] += 1


def reason_code(reason: str) -> str:
    """``bad_input:truncated: ...`` → ``bad_input:truncated``: the countable part of a reason."""
    parts = reason.split(":")
    return ":".join(p.strip() for p in parts[:2]) if parts[0] == "bad_input" else parts[0].strip()


@dataclass
class Failures:
    """This run's failed samples: attempts per sample, counts per stage and error, the breaker.

    The breaker watches the latest ``breaker_window`` samples that came back (finished or failed):
    once one stage failed at least ``breaker_min_failures`` of them and at least
    ``breaker_failure_share`` of the window, the job must stop.
    """

    policy: FactoryConfig
    attempts: Counter = field(default_factory=Counter)  # sample_id -> failed tries this run
    counts: Counter = field(default_factory=Counter)  # (stage, error type) -> failures this run
    first_error: dict[str, str] = field(default_factory=dict)  # stage -> first "Type: message"
    window: deque = field(default_factory=deque)  # failing stage, or None for a finished sample

    def record(self, sample: Sample) -> dict[str, Any]:
        """Count one failed sample; return its ``errors.jsonl`` entry."""
        stage, kind = sample.failure.get("stage", "unknown"), sample.failure.get("type", "Error")
        self.attempts[sample.sample_id] += 1
        self.counts[(stage, kind)] += 1
        self.first_error.setdefault(stage, f"{kind}: {sample.failure.get('message', '')}"[:300])
        self._observe(stage)
        return {"sample_id": sample.sample_id, "source_id": sample.source_id, "seed": sample.seed,
                "attempt": self.attempts[sample.sample_id], **sample.failure}

    def finished(self) -> None:
        self._observe(None)

    def _observe(self, stage: str | None) -> None:
        self.window.append(stage)
        while len(self.window) > self.policy.breaker_window:
            self.window.popleft()

    def given_up(self) -> set[str]:
        """Samples that failed ``max_attempts`` times: not planned again in this run (nor committed)."""
        return {sid for sid, k in self.attempts.items() if k >= self.policy.max_attempts}

    def tripped(self) -> str | None:
        """The one-line reason to stop, when a stage fails too much of the latest samples."""
        failing = Counter(stage for stage in self.window if stage is not None)
        for stage, count in failing.most_common(1):
            if count >= self.policy.breaker_min_failures and count >= self.policy.breaker_failure_share * len(self.window):
                return self.describe(stage, f"{count} of the latest {len(self.window)} samples")
        return None

    def describe(self, stage: str, how_many: str) -> str:
        return (f"stage '{stage}' failed {how_many} (first error: {self.first_error.get(stage, '?')}); "
                "no source was used up: fix the cause and re-run the same command to resume "
                "(tracebacks in errors.jsonl)")

    def report(self) -> dict[str, Any]:
        by_stage: dict[str, dict[str, int]] = {}
        for (stage, kind), count in sorted(self.counts.items()):
            by_stage.setdefault(stage, {})[kind] = count
        return {"total": sum(self.counts.values()), "by_stage": by_stage, "samples": len(self.attempts),
                "given_up": len(self.given_up())}


# ------------------------------------------------------------------------------------ output dir
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
        ledger = Ledger()
        columns = ["sample_id", "status", "reject_reason", "artifacts", "provenance"]
        for path in self.shard_files():
            table = pq.read_table(path, columns=columns, filesystem=self.fs)
            ledger.files += 1
            for row in table.to_pylist():
                provenance = row["provenance"]
                provenance = json.loads(provenance) if isinstance(provenance, str) else (provenance or {})
                ledger.add(row["sample_id"], row["status"], row["reject_reason"] or "",
                           row["artifacts"] or [], provenance)
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


# ---------------------------------------------------------------------------------- planning
def candidates(config: Config) -> Iterator[WorkItem]:
    """All (source, seed) pairs in plan order: every source at seed index 0, then 1, ..."""
    from factory.sources import list_sources

    items = list_sources(config.source)
    if not items:
        raise ValueError(f"source {config.source.uri!r} holds no images")
    config_hash = config.config_hash()
    for seed_index in range(config.factory.seeds_per_image):
        for item in items:
            seed = sample_seed(config.factory.seed, item.source_id, seed_index)
            yield WorkItem(make_sample_id(item.source_id, seed, config_hash), item.source_id, seed,
                           item.uri, item.data)


def plan_round(pool: list[WorkItem], done: set[str], needed: int, yield_estimate: float,
               overplan: float) -> list[WorkItem]:
    """The next round: enough unfinished pairs to reach ``needed`` accepted at the estimated yield.

    ``done`` holds the committed samples and those that failed too often in this run."""
    size = math.ceil(needed / max(yield_estimate, 0.05) * overplan)
    return [w for w in pool if w.sample_id not in done][:max(size, 1)]


def build_dataset(items: list[WorkItem], config: Config):
    """The streaming graph of one round: decode tasks, then one actor pool per agent."""
    import ray

    config_json = config.model_dump_json()
    # Blocks are cut on the driver (no read or repartition tasks, which would each need a whole
    # CPU beside the actor pools: the deadlock of a pool that holds every CPU).
    table = pa.Table.from_pylist([w.__dict__ for w in items], schema=work_schema())
    block_rows = max(1, math.ceil(len(items) / 64), min(4, len(items) // 4))
    blocks = [table.slice(i, block_rows) for i in range(0, len(items), block_rows)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(decode_sources, fn_kwargs={"config_json": config_json}, batch_format="pyarrow",
                        batch_size=None, num_cpus=0.25)
    for name, stage_cls in STAGES.items():
        stage = getattr(config.factory, name)
        ds = ds.map_batches(
            stage_cls,
            fn_constructor_kwargs={"config_json": config_json},
            batch_format="pyarrow",
            batch_size=stage.batch_size,
            compute=ray.data.ActorPoolStrategy(size=stage.actors),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus or None,
        )  # Ray Data restarts crashed actors and retries their tasks by default (max_restarts=-1)
    return ds


# --------------------------------------------------------------------------------------- driver
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
            for s in self.rows:  # finished only now that their shard is committed
                self.ledger.add(s.sample_id, s.status, s.reject_reason,
                                [{"tool": a.tool, "accepted": a.accepted} for a in s.artifacts], s.provenance)
            self.rows = []
        self.last_flush = time.monotonic()


def init_ray(config: Config) -> None:
    import ray

    if not ray.is_initialized():
        # No address: join the cluster of `ray job submit` (RAY_ADDRESS) or start a local instance.
        ray.init(address=config.factory.ray_address, log_to_driver=True,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


def run_factory(n: int, config: Config, out: str) -> dict[str, Any]:
    """Run (or resume, or extend) the job until ``n`` accepted samples are committed to ``out``.

    Raises ``StageFailingError`` (after committing what finished and writing the report) when a
    stage keeps failing; nothing it failed is committed, so the same call resumes after the fix.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    started = time.time()
    output = OutputDir(out)
    output.guard_config(config)
    if removed := output.remove_stale_temporaries():
        log.info("removed %d half-written shard(s) of an interrupted run", removed)
    ledger = output.scan()
    resumed_with = len(ledger.status)
    log.info("output %s: %d committed samples (%d accepted)", out, resumed_with, ledger.accepted)

    pool = list(candidates(config))
    rounds: list[dict[str, Any]] = []
    failures = Failures(config.factory)
    processed = stream_errors = 0
    stopped: str | None = None
    if ledger.accepted < n:
        init_ray(config)
    while ledger.accepted < n and len(rounds) < config.factory.max_rounds and stopped is None:
        finished = len(ledger.status)
        estimate = ledger.accepted / finished if finished >= 4 else config.factory.expected_yield
        items = plan_round(pool, set(ledger.status) | failures.given_up(), n - ledger.accepted, estimate,
                           config.factory.overplan)
        if not items:
            log.warning("every (source, seed) pair is finished: %d of %d accepted; add sources or raise "
                        "factory.seeds_per_image", ledger.accepted, n)
            break
        round_info = {"round": len(rounds) + 1, "planned": len(items), "yield_estimate": round(estimate, 4)}
        log.info("round %d: %d samples planned (yield estimate %.2f)", round_info["round"], len(items), estimate)
        buffer = ShardBuffer(output, config, ledger)
        dataset = build_dataset(items, config)
        failed_this_round = 0
        try:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                for sample in from_transport_table(batch):
                    if sample.status == "failed":  # never committed: planned again in a later round
                        entry = failures.record(sample)
                        output.append_text("errors.jsonl", json.dumps({"round": round_info["round"], **entry}) + "\n")
                        failed_this_round += 1
                        continue
                    failures.finished()
                    if sample.status == "accepted" and buffer.accepted >= n:
                        continue  # surplus: never committed, so never finished; a larger --n may redo it
                    _stamp(sample, config)
                    buffer.add(sample)
                    processed += 1
                if buffer.accepted >= n:
                    break  # stops the stream: in-flight work is dropped, nothing half-written
                if stopped := failures.tripped():
                    log.error("circuit breaker: %s", stopped)
                    break  # stops the stream; what finished is still committed below
                buffer.flush_if_due()
        except Exception as err:  # agents' errors arrive as failed rows: this is the stream itself (lost node, ...)
            stream_errors += 1
            round_info["error"] = f"{type(err).__name__}: {err}"[:500]
            log.warning("round %d failed (%s); replanning from the committed shards (%d/%d)",
                        round_info["round"], round_info["error"], stream_errors, config.factory.round_retries)
            if stream_errors > config.factory.round_retries:
                buffer.flush()
                raise
        buffer.flush()
        output.append_text("ray_data_stats.txt", f"=== round {round_info['round']} ===\n{_stats(dataset)}\n")
        round_info["finished"] = len(ledger.status) - finished
        round_info["failed"] = failed_this_round
        round_info["accepted_total"] = ledger.accepted
        rounds.append(round_info)
    if stopped is None and ledger.accepted < n and failures.given_up():
        stage = max(failures.first_error, key=lambda st: sum(c for (s, _), c in failures.counts.items() if s == st))
        stopped = failures.describe(stage, f"{len(failures.given_up())} sample(s) {config.factory.max_attempts} times each")

    report = build_report(n, output, config, rounds, processed, resumed_with, time.time() - started)
    report["failed"] = failures.report()
    report["stopped"] = stopped
    output.write_json("report.json", report)
    from shards.card import write_dataset_card

    write_dataset_card(output.url, report, config.model_dump(mode="json"), tiny=config.preset == "tiny")
    if stopped is not None:
        raise StageFailingError(stopped)
    return report


def _stats(dataset) -> str:
    try:
        return dataset.stats()
    except Exception as err:  # stats of a stream stopped early may be unavailable
        return f"(no stats: {type(err).__name__})"


def _stamp(sample: Sample, config: Config) -> None:
    sample.provenance.update({
        "preset": config.preset,
        "config_hash": config.config_hash(),
        "seed": sample.seed,
        "code_version": CODE_VERSION,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })


def build_report(n: int, output: OutputDir, config: Config, rounds: list[dict], processed: int,
                 resumed_with: int, elapsed: float) -> dict[str, Any]:
    """Counts from the committed shards themselves, so the report always matches the data."""
    ledger = output.scan()
    per_tool = {
        tool: {"planned": ledger.planned_by_tool[tool], "accepted": ledger.accepted_by_tool[tool],
               "acceptance": round(ledger.accepted_by_tool[tool] / ledger.planned_by_tool[tool], 4)
               if ledger.planned_by_tool[tool] else None}
        for tool in TOOLS
    }
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
        "per_stage": per_stage,
        "shards": ledger.files,
        "rounds": rounds,
        "processed_this_run": processed,
        "resumed_with": resumed_with,
        "elapsed_seconds": round(elapsed, 2),
        "preset": config.preset,
        "config_hash": config.config_hash(),
        "complete": ledger.accepted >= n,
    }
