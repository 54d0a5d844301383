"""Three outcomes: the data rejects, the infrastructure fails. Failed samples are never committed,
are retried, and a stage that keeps failing stops the job with one line; the sources stay unused
(a VLM server that goes down mid-run: tests/test_vlm_server.py).
"""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from factory.config import load_config
from factory.failures import Failures
from factory.plan import work_schema
from factory.stages import PoolStage, decode_sources
from shards.record import Sample
from shards.rows import samples_to_table, table_to_samples


# ------------------------------------------------------------------------------ stage semantics
class ScriptedStep:
    """A step with no model: captions its samples, rejects "reject-me", or raises as ``FakeStage`` says."""

    name = "scripted"

    def __call__(self, samples: list[Sample], pixels) -> None:
        FakeStage.calls.append(len(samples))
        if FakeStage.behaviour == "oom" and len(samples) > FakeStage.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if FakeStage.behaviour == "bug":
            raise KeyError("a bug")
        for s in samples:
            if s.sample_id == "reject-me":
                s.reject("no_entities: nothing there")
            else:
                s.caption = "done"


class FakeStage(PoolStage):
    """An actor stage around one scripted step."""

    name = "synthesis"  # a factory stage: its timing has a column
    behaviour = "ok"
    max_batch = 1  # larger batches run out of memory when behaviour == "oom"
    calls: list[int] = []

    def build(self, config, vlm):
        return [ScriptedStep()]


def _batch(*ids: str):
    return samples_to_table([Sample(sample_id=i, source_id=i, seed=0) for i in ids], transport=True)


def _run_stage(behaviour: str, ids: tuple[str, ...], max_batch: int = 1) -> list[Sample]:
    FakeStage.behaviour, FakeStage.max_batch, FakeStage.calls = behaviour, max_batch, []
    stage = FakeStage(load_config("tiny").model_dump_json())
    return table_to_samples(stage(_batch(*ids)))


def test_out_of_memory_halves_the_batch_until_it_fits():
    ids = ("a", "b", "c", "d", "e")
    out = _run_stage("oom", ids, max_batch=2)
    assert [s.sample_id for s in out] == list(ids)
    assert all(s.status == "pending" and s.caption == "done" for s in out)
    assert FakeStage.calls == [5, 2, 3, 1, 2]  # 5 → 2 (fits) + 3 → 3 → 1 + 2


def test_out_of_memory_never_splits_a_photo_group():
    """A photo's seeds share one engine batch (their bits depend on it): halving stops at whole photos."""
    FakeStage.behaviour, FakeStage.max_batch, FakeStage.calls = "oom", 3, []
    stage = FakeStage(load_config("tiny").model_dump_json())
    samples = [Sample(sample_id=f"{photo}{seed}", source_id=photo, seed=seed) for photo in "pq" for seed in range(2)]
    samples += [Sample(sample_id=f"r{seed}", source_id="r", seed=seed) for seed in range(4)]
    out = table_to_samples(stage(samples_to_table(samples, transport=True)))
    assert FakeStage.calls == [8, 2, 6, 2, 4]  # p | q + r, then q | r; r alone (4 > 3) fails whole
    assert [s.status for s in out] == ["pending"] * 4 + ["failed"] * 4


def test_out_of_memory_at_batch_size_one_fails_the_sample():
    out = _run_stage("oom", ("a", "b"), max_batch=0)
    assert [s.status for s in out] == ["failed", "failed"]
    assert out[0].failure["stage"] == "synthesis" and out[0].failure["type"] == "OutOfMemoryError"


def test_an_unexpected_exception_fails_the_batch_with_its_traceback_and_rejections_stay_data():
    ok = _run_stage("ok", ("reject-me", "b"))
    assert [s.status for s in ok] == ["rejected", "pending"]
    bug = _run_stage("bug", ("a", "b"))
    assert all(s.status == "failed" and not s.reject_reason for s in bug)
    assert bug[0].failure["type"] == "KeyError" and "a bug" in bug[0].failure["message"]
    assert "Traceback" in bug[0].failure["traceback"] and 'raise KeyError("a bug")' in bug[0].failure["traceback"]


def test_decode_rejects_bad_files_and_fails_on_storage_errors_once_per_photo(tmp_path, monkeypatch):
    import pyarrow as pa

    import factory.sources

    (tmp_path / "notes.jpg").write_text("not an image")
    Image.fromarray(skdata.chelsea()).save(tmp_path / "cat.png")
    locked = tmp_path / "locked.png"
    Image.fromarray(skdata.coffee()).save(locked)
    locked.chmod(0)
    reads = []
    read_bytes = factory.sources.read_bytes
    monkeypatch.setattr(factory.sources, "read_bytes", lambda item: reads.append(item.uri) or read_bytes(item))
    rows = [{"sample_id": f"{name}@{seed}", "source_id": name, "seed": seed, "uri": str(tmp_path / name), "data": b""}
            for name in ("notes.jpg", "gone.png", "locked.png", "cat.png") for seed in (0, 1)]
    try:
        out = {s.sample_id: s for s in table_to_samples(decode_sources(
            pa.Table.from_pylist(rows, schema=work_schema()), load_config("tiny").model_dump_json()))}
    finally:
        locked.chmod(0o644)
    for seed in (0, 1):  # a photo's seeds in one batch share its outcome
        assert out[f"notes.jpg@{seed}"].status == "rejected"
        assert out[f"notes.jpg@{seed}"].reject_reason.startswith("bad_input:")
        assert out[f"gone.png@{seed}"].reject_reason.startswith("bad_input:missing")
        if os.geteuid() != 0:  # root reads any file
            assert out[f"locked.png@{seed}"].status == "failed"
            assert out[f"locked.png@{seed}"].failure["type"] == "PermissionError"
        assert out[f"cat.png@{seed}"].status == "pending" and out[f"cat.png@{seed}"].seed == seed
    assert out["cat.png@0"].real_image == out["cat.png@1"].real_image
    assert out["cat.png@0"].source == out["cat.png@1"].source and out["cat.png@0"].source is not out["cat.png@1"].source
    assert sorted(reads) == sorted({row["uri"] for row in rows})  # each photo read once


def test_circuit_breaker_needs_enough_failures_of_one_stage_in_the_window():
    policy = load_config("tiny", overrides={"factory.breaker_window": 10, "factory.breaker_min_failures": 4,
                                            "factory.breaker_failure_share": 0.5, "factory.max_attempts": 2}).factory
    failures = Failures(policy)

    def failed(sample_id: str, stage: str) -> Sample:
        return Sample(sample_id=sample_id, source_id="s", seed=0).fail(stage, ConnectionError("refused"))

    for i in range(3):
        failures.record(failed(f"p{i}", "perception"))
    assert failures.tripped() is None  # 3 < min failures
    for _ in range(7):
        failures.finished()
    failures.record(failed("p0", "perception"))
    assert failures.tripped() is None  # p0 left the window: 3 failures in the latest 10
    assert failures.given_up() == {"p0"}  # its second try: not planned again in this run
    for i in range(3):
        failures.record(failed(f"q{i}", "perception"))
    assert failures.tripped() is None  # [finished x6, p0, q0, q1, q2]: 4 of the latest 10, under half
    failures.record(failed("q3", "perception"))
    message = failures.tripped()  # 5 of the latest 10: half
    assert message and "'perception' failed 5 of the latest 10" in message and "ConnectionError: refused" in message
    assert failures.report()["by_stage"] == {"perception": {"ConnectionError": 8}}


def test_a_stream_that_stops_yielding_is_abandoned_after_its_deadline():
    """A stream blocked forever (as Ray's can be after a lost node) raises ``StreamStalled`` in the main
    thread once the deadline passes without a row; rows in time keep it alive; the signal handler is
    restored afterwards; off the main thread the deadline does nothing."""
    import queue
    import signal as signals
    import threading
    import time

    from factory.watchdog import StreamStalled, stall_deadline

    before = signals.getsignal(signals.SIGUSR2)
    blocked: queue.Queue = queue.Queue()
    beats = 0
    with pytest.raises(StreamStalled, match="no row for 1.5 s"):
        with stall_deadline(1.5) as deadline:
            for _ in range(4):  # rows in time: the deadline keeps waiting
                time.sleep(0.5)
                deadline.beat()
                beats += 1
            blocked.get()  # then nothing, ever: only the deadline ends this wait
    assert beats == 4
    assert signals.getsignal(signals.SIGUSR2) == before

    outcome = {}

    def off_main():
        with stall_deadline(0.5):
            time.sleep(2.0)
        outcome["done"] = True

    worker = threading.Thread(target=off_main)
    worker.start()
    worker.join()
    assert outcome == {"done": True}
