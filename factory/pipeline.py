"""The factory job's driver: rounds of Ray Data streaming (decode → perceive → synthesize → curate) until
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
unconsumed, and the same command resumes once the cause is fixed. The output folder, ledger and
report live in ``factory.output``, the failure bookkeeping in ``factory.failures``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from factory import __version__ as CODE_VERSION
from factory.config import Config
from factory.failures import Failures, StageFailingError
from factory.output import Ledger, OutputDir, OutputMismatchError, ShardBuffer, build_report
from factory.stages import STAGES, decode_sources, sample_seed, work_schema
from factory.vlm_service import VLMClient, start_vlm_service, stop_vlm_service
from shards.record import Sample, make_sample_id
from shards.rows import table_to_samples

__all__ = ["OutputMismatchError", "StageFailingError", "candidates", "plan_round", "run_factory"]
log = logging.getLogger("flawforge.factory")


@dataclass
class WorkItem:
    sample_id: str
    source_id: str
    seed: int
    uri: str
    data: bytes = b""


# ---------------------------------------------------------------------------------- planning
def candidates(config: Config) -> Iterator[WorkItem]:
    """All (source, seed) pairs in plan order, a photo's ``seeds_together`` seeds next to each other:
    every source at seed indices 0 … k−1, then every source at k … 2k−1, ... (k = 1: one seed of every
    photo before any photo's second)."""
    from factory.sources import list_sources

    items = list_sources(config.source)
    if not items:
        raise ValueError(f"source {config.source.uri!r} holds no images")
    config_hash = config.config_hash()
    per_image, together = config.factory.seeds_per_image, config.factory.seeds_together
    for first in range(0, per_image, together):
        for item in items:
            for seed_index in range(first, min(first + together, per_image)):
                seed = sample_seed(config.factory.seed, item.source_id, seed_index)
                yield WorkItem(make_sample_id(item.source_id, seed, config_hash), item.source_id, seed,
                               item.uri, item.data)


def plan_round(pool: list[WorkItem], done: set[str], needed: int, yield_estimate: float,
               overplan: float) -> list[WorkItem]:
    """The next round: enough unfinished pairs to reach ``needed`` accepted at the estimated yield, and
    the rest of the last photo's seeds that are planned together with it.

    ``done`` holds the committed samples and those that failed too often in this run."""
    size = max(math.ceil(needed / max(yield_estimate, 0.05) * overplan), 1)
    todo = [w for w in pool if w.sample_id not in done]
    while 0 < size < len(todo) and todo[size].source_id == todo[size - 1].source_id:
        size += 1
    return todo[:size]


def photo_blocks(items: list[WorkItem], rows: int) -> list[tuple[int, int]]:
    """(start, stop) of blocks of about ``rows`` items that never split a photo's consecutive seeds."""
    blocks, start = [], 0
    for i in range(1, len(items) + 1):
        if i == len(items) or (i - start >= rows and items[i].source_id != items[i - 1].source_id):
            blocks.append((start, i))
            start = i
    return blocks


def build_dataset(items: list[WorkItem], config: Config, vlm: VLMClient | None = None):
    """The streaming graph of one round: decode tasks, then one actor pool per agent; the agents
    that ask a VLM share the run's ``vlm`` service."""
    import ray

    config_json = config.model_dump_json()
    # Blocks are cut on the driver (no read or repartition tasks, which would each need a whole
    # CPU beside the actor pools: the deadlock of a pool that holds every CPU).
    # A block holds whole photos (their seeds share perception and inversion) and about one batch of
    # the largest stage, so every actor gets work as soon as the round starts (a huge round: at most
    # about factory.max_blocks blocks).
    table = pa.Table.from_pylist([w.__dict__ for w in items], schema=work_schema())
    largest_batch = max(getattr(config.factory, name).batch_size for name in STAGES)
    rows = max(largest_batch, math.ceil(len(items) / config.factory.max_blocks))
    ds = ray.data.from_arrow([table.slice(start, stop - start) for start, stop in photo_blocks(items, rows)])
    # Decoding asks for the perception actors' resources, so Ray Data fuses it into them: no task
    # workers that each import torch and the agents just to decode a few photos.
    first = config.factory.perception
    ds = ds.map_batches(decode_sources, fn_kwargs={"config_json": config_json}, batch_format="pyarrow",
                        batch_size=None, num_cpus=first.num_cpus, num_gpus=first.num_gpus or None)
    for name, stage_cls in STAGES.items():
        stage = getattr(config.factory, name)
        ds = ds.map_batches(
            stage_cls,
            fn_constructor_kwargs={"config_json": config_json, "vlm": vlm},
            batch_format="pyarrow",
            batch_size=stage.batch_size,
            compute=stage.compute(),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus or None,
        )  # Ray Data restarts crashed actors and retries their tasks by default (max_restarts=-1)
    return ds


# --------------------------------------------------------------------------------------- driver
def init_ray(config: Config) -> None:
    import ray

    if not ray.is_initialized():
        # No address: join the cluster of `ray job submit` (RAY_ADDRESS) or start a local instance
        # (with Ray's dashboard where factory.ray_dashboard says so; joining a cluster ignores it).
        ray.init(address=config.factory.ray_address, log_to_driver=True,
                 include_dashboard=config.factory.ray_dashboard)
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
    failures = Failures(config.factory)
    rounds: list[dict[str, Any]] = []
    processed, stopped, vlm, startup = 0, None, None, 0.0
    if ledger.accepted < n:
        start = time.perf_counter()
        init_ray(config)
        vlm = start_vlm_service(config)
        startup = time.perf_counter() - start
        try:
            rounds, processed, stopped = _run_rounds(n, config, output, ledger, pool, failures, vlm)
        finally:
            stop_vlm_service(vlm)
    if stopped is None and ledger.accepted < n and failures.given_up():
        stage = max(failures.first_error, key=lambda st: sum(c for (s, _), c in failures.counts.items() if s == st))
        stopped = failures.describe(stage, f"{len(failures.given_up())} sample(s) {config.factory.max_attempts} times each")

    report = build_report(n, output, config, rounds, processed, resumed_with, time.time() - started)
    report["startup_seconds"] = round(startup, 2)  # Ray (a local instance, or joining the cluster) and the VLM service
    report["failed"] = failures.report()
    report["stopped"] = stopped
    output.write_json("report.json", report)
    from shards.card import write_dataset_card

    write_dataset_card(output.url, report, config.model_dump(mode="json"), tiny=config.preset == "tiny")
    if stopped is not None:
        raise StageFailingError(stopped)
    return report


def _run_rounds(n: int, config: Config, output: OutputDir, ledger: Ledger, pool: list[WorkItem],
                failures: Failures, vlm: VLMClient | None) -> tuple[list[dict[str, Any]], int, str | None]:
    """Stream rounds until ``n`` accepted samples are committed, the pool is used up or the breaker trips;
    returns the rounds' summaries, the samples processed and the breaker's line (or None)."""
    rounds: list[dict[str, Any]] = []
    processed = stream_errors = 0
    stopped: str | None = None
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
        dataset = build_dataset(items, config, vlm)
        failed_this_round = 0
        round_start = time.perf_counter()
        try:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                # Until the first row: the pools' actors start and load their models (compile, warm up).
                round_info.setdefault("first_row_seconds", round(time.perf_counter() - round_start, 2))
                for sample in table_to_samples(batch):
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
        round_info["seconds"] = round(time.perf_counter() - round_start, 2)
        round_info["finished"] = len(ledger.status) - finished
        round_info["failed"] = failed_this_round
        round_info["accepted_total"] = ledger.accepted
        rounds.append(round_info)
    return rounds, processed, stopped


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
