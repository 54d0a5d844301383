"""The factory job's driver: one Ray Data stream (decode → perceive → synthesize → curate) over the
plan, committing rows to Parquet shards until exactly ``n`` accepted samples are committed.

**The same command commits the same rows.** Plan order is fixed by the config (``candidates``): a
photo's ``seeds_together`` seeds form a *group* that always runs together. The driver commits the
plan order's contiguous prefix up to and including the n-th accepted sample: rows that finish
early wait in a bounded reorder buffer (``factory.reorder_buffer``) until every row before them has
finished, so actor counts, block sizes, timing, kills and resumes never change which rows are
committed. Ray Data yields rows in block order (``preserve_order``), so the buffer only fills while
an earlier sample waits for its retry.

Resume rests on one rule: **a sample is finished when the shard holding it has been committed**
(written to a temporary name, then renamed). On start the job scans the committed shards of
``--out``; the plan's committed prefix is never planned again, and a group cut by the n-th
acceptance runs whole again (its committed rows are recomputed and dropped), so a sample's pixels
never depend on where a run stopped. A changed config on an existing ``--out`` is refused.

**One stream per job.** The stream covers the rest of the plan, so actor pools, loaded models and
compiled graphs live for the whole job; Ray Data's backpressure keeps only a few blocks in flight
and the driver ends the stream at the n-th acceptance. A new stream (pools started again) is
needed only to retry failed samples once the reorder buffer is full or the stream has ended, or
after the stream itself broke (a lost node).

A sample the infrastructure failed (``status == "failed"``: a server down, out of memory, a bug)
is never committed: its traceback goes to ``OUT/errors.jsonl``, its group is retried in the next
stream (at most ``factory.max_attempts`` tries per run), and when one stage fails a large share of
the latest samples the circuit breaker stops the job with ``StageFailingError`` — the sources stay
unconsumed, and the same command resumes once the cause is fixed. A sample that used up its
attempts blocks the prefix, so the job stops with the same line rather than skip it. The output
folder, ledger and report live in ``factory.output``, the failure bookkeeping in
``factory.failures``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from factory import __version__ as CODE_VERSION
from factory.config import Config
from factory.failures import Failures, StageFailingError
from factory.output import Ledger, OutputDir, OutputMismatchError, ShardBuffer, build_report
from factory.plan import WorkItem, candidates, plan_stream
from factory.actor_starts import ActorStarts
from factory.stages import build_dataset, kill_actors
from factory.vlm_service import VLMClient, start_vlm_service, stop_vlm_service
from factory.watchdog import stall_deadline
from shards.record import Sample
from shards.rows import table_to_samples

__all__ = ["OutputMismatchError", "StageFailingError", "candidates", "run_factory"]
log = logging.getLogger("flawforge.factory")


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
    ctx.execution_options.preserve_order = True  # rows arrive in plan (block) order: see the module doc


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

    job = StreamJob(n, config, output, ledger, list(candidates(config)), Failures(config.factory))
    vlm, startup = None, 0.0
    if ledger.accepted < n:
        import ray

        start = time.perf_counter()
        init_ray(config)
        vlm = start_vlm_service(config)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        job.actors = ray.remote(ActorStarts).options(num_cpus=0, scheduling_strategy=here).remote()  # the
        # driver's node: a worker node lost mid-run must not take the counts with it
        startup = time.perf_counter() - start
        try:
            job.run(vlm)
        finally:
            stop_vlm_service(vlm)
    failures = job.failures
    if job.stopped is None and ledger.accepted < n and failures.given_up():
        stage = max(failures.first_error, key=lambda st: sum(c for (s, _), c in failures.counts.items() if s == st))
        job.stopped = failures.describe(stage, f"{len(failures.given_up())} sample(s) {config.factory.max_attempts} "
                                               "times each")

    report = build_report(n, output, config, job.streams, job.processed, resumed_with, time.time() - started)
    report["startup_seconds"] = round(startup, 2)  # Ray (a local instance, or joining the cluster) and the VLM service
    report["actors_started"] = job.actors_started()
    report["reorder_buffer"] = {"bound": config.factory.reorder_buffer, "peak": job.peak_held}
    report["failed"] = failures.report()
    report["stopped"] = job.stopped
    output.write_json("report.json", report)
    from shards.card import write_dataset_card

    write_dataset_card(output.url, report, config.model_dump(mode="json"), tiny=config.preset == "tiny")
    if job.stopped is not None:
        raise StageFailingError(job.stopped)
    return report


@dataclass
class StreamJob:
    """The driver's state: the plan, the commit cursor and the reorder buffer.

    ``cursor`` is the plan position of the first sample not yet committed; ``held`` holds finished rows
    at or after it, waiting for every row before them (the reorder buffer). Rows are committed in plan
    order only, through the n-th accepted one."""

    n: int
    config: Config
    output: OutputDir
    ledger: Ledger
    plan: list[WorkItem]
    failures: Failures
    actors: Any = None  # the ActorStarts actor
    held: dict[str, Sample] = field(default_factory=dict)
    cursor: int = 0
    streams: list[dict[str, Any]] = field(default_factory=list)
    processed: int = 0
    peak_held: int = 0
    stopped: str | None = None

    def __post_init__(self) -> None:
        self.buffer = ShardBuffer(self.output, self.config, self.ledger)
        self._advance()

    @property
    def done(self) -> bool:
        return self.buffer.accepted >= self.n or self.cursor >= len(self.plan) or self.stopped is not None

    def run(self, vlm: VLMClient | None) -> None:
        """Streams until ``n`` accepted are committed, the plan is used up or the breaker trips."""
        import ray

        factory, stream_errors = self.config.factory, 0
        job_id = ray.get_runtime_context().get_job_id()
        while not self.done and len(self.streams) < factory.max_streams:
            if self.plan[self.cursor].sample_id in self.failures.given_up():
                break  # run_factory names the failing stage: the prefix cannot pass this sample
            items = plan_stream(self.plan, self.cursor, set(self.ledger.status) | set(self.held))
            info = {"stream": len(self.streams) + 1, "planned": len(items), "from_position": self.cursor}
            log.info("stream %d: %d samples planned from plan position %d", info["stream"], len(items), self.cursor)
            actor_prefix = f"flawforge/{job_id}/stream-{info['stream']}/"  # each pool's actors: prefix + pool-i
            dataset = build_dataset(items, self.config, vlm, self.actors, actor_prefix)
            start, before = time.perf_counter(), len(self.ledger.status) + len(self.buffer.rows)
            try:
                self._consume(dataset, info, start)
            except Exception as err:  # agents' errors arrive as failed rows: this is the stream itself (lost node, ...)
                stream_errors += 1
                info["error"] = f"{type(err).__name__}: {err}"[:500]
                # Ray Data only let go of the stream's actors: one stuck in a task (or kept for an object
                # lost with its node) would hold its GPU forever and stall every later stream.
                info["actors_killed"] = kill_actors(actor_prefix)
                log.warning("stream %d failed (%s); replanning from the committed shards (%d/%d)",
                            info["stream"], info["error"], stream_errors, factory.stream_retries)
                if stream_errors > factory.stream_retries:
                    self.buffer.flush()
                    raise
            self.buffer.flush()
            self.output.append_text("ray_data_stats.txt", f"=== stream {info['stream']} ===\n{_stats(dataset)}\n")
            info.update(seconds=round(time.perf_counter() - start, 2),
                        committed=len(self.ledger.status) - before + len(self.buffer.rows),
                        accepted_total=self.ledger.accepted)
            self.streams.append(info)
        if self.cursor >= len(self.plan) and self.buffer.accepted < self.n:
            log.warning("every (source, seed) pair is finished: %d of %d accepted; add sources or raise "
                        "factory.seeds_per_image", self.ledger.accepted, self.n)

    def _consume(self, dataset, info: dict[str, Any], start: float) -> None:
        """Read one stream: hold its rows, commit the plan's finished prefix, stop when the job is done,
        the breaker trips, or the reorder buffer is full while a failed sample blocks the prefix."""
        info["failed"] = 0
        with stall_deadline(self.config.factory.stream_stall_s) as deadline:
            self._read(dataset, info, start, deadline)

    def _read(self, dataset, info: dict[str, Any], start: float, deadline) -> None:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            deadline.beat()
            # Until the first row: the pools' actors start and load their models (compile, warm up).
            info.setdefault("first_row_seconds", round(time.perf_counter() - start, 2))
            for sample in table_to_samples(batch):
                if sample.sample_id in self.ledger.status or sample.sample_id in self.held:
                    continue  # a finished sample of a group that ran whole again
                if sample.status == "failed":  # never committed: its group runs again in the next stream
                    entry = self.failures.record(sample)
                    self.output.append_text("errors.jsonl", json.dumps({"stream": info["stream"], **entry}) + "\n")
                    info["failed"] += 1
                    continue
                self.failures.finished(sample)
                self.held[sample.sample_id] = sample
            self.peak_held = max(self.peak_held, len(self.held))
            self._advance()
            if self.done:
                return  # stops the stream: in-flight work is dropped, nothing half-written
            if stopped := self.failures.tripped():
                log.error("circuit breaker: %s", stopped)
                self.stopped = stopped
                return  # stops the stream; what finished is still committed
            if len(self.held) >= self.config.factory.reorder_buffer:
                log.info("reorder buffer full (%d rows) behind a failed sample: retrying it in a new stream",
                         len(self.held))
                return
            self.buffer.flush_if_due()

    def _advance(self) -> None:
        """Commit held rows while they continue the plan's finished prefix, through the n-th accepted."""
        while self.cursor < len(self.plan) and self.buffer.accepted < self.n:
            sample_id = self.plan[self.cursor].sample_id
            if sample_id in self.ledger.status:  # committed by an earlier run
                self.cursor += 1
            elif sample_id in self.held:
                sample = self.held.pop(sample_id)
                _stamp(sample, self.config)
                self.buffer.add(sample)
                self.processed += 1
                self.cursor += 1
            else:
                return

    def actors_started(self) -> dict[str, int]:
        """Actors each pool started in this run (every stream starts its pools; a crashed actor restarts)."""
        if self.actors is None:
            return {}
        import ray

        try:
            return ray.get(self.actors.counts.remote())
        except ray.exceptions.RayActorError as err:  # the counts are lost, the committed rows are not
            log.warning("actors_started is unknown: %s", err)
            return {}


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
