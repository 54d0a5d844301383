"""End-to-end tests of ``factory.run`` on the tiny preset: exact n, invariants, resume, faults.

These start real Ray (local, 2 CPUs) and run the real agents with tiny random models.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from factory.config import load_config
from factory.output import OutputDir, reason_code
from factory.pipeline import OutputMismatchError, run_factory
from shards.images import decode_array, decode_mask
from shards.reader import iter_samples
from tests.conftest import SAMPLES_N, factory_env

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return factory_env()


def _factory_cmd(out: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "factory.run", "--n", str(n), "--preset", "tiny", "--out", str(out), *extra]


def assert_valid_run(out: Path, n: int) -> list:
    """Exactly n accepted unique ids; ``image == clean_image`` wherever ``mask == 0``, byte for byte;
    every artifact of an accepted image passed (all or nothing); the report matches the shards."""
    samples = list(iter_samples(out))
    ids = [s.sample_id for s in samples]
    assert len(ids) == len(set(ids)), "duplicate sample ids"
    accepted = [s for s in samples if s.status == "accepted"]
    assert len(accepted) == n
    for s in accepted:
        real, image, mask = decode_array(s.real_image), decode_array(s.image), decode_mask(s.mask)
        clean_image = decode_array(s.clean_image)
        assert real.shape == image.shape == clean_image.shape and mask.shape == real.shape[:2]
        assert (mask > 0).any(), "an accepted sample needs a labelled artifact"
        clean = mask == 0
        assert np.array_equal(clean_image[clean], image[clean]), "pixels outside the mask changed"
        assert s.artifacts and all(a.accepted for a in s.artifacts) and not (mask == 255).any()
    for s in samples:
        if s.status == "rejected":
            assert s.reject_reason
        for a in s.artifacts:  # the authors' distortions and labels (issue 25)
            if a.tool == "distort" and a.kernel in ("strips", "permute"):
                assert set(a.reference_cells) <= set(a.cells), "a strips/permute reference outside the part"
            if a.region is not None:  # synthesised: both boxes
                tx0, ty0, tx1, ty1 = a.target_bbox
                x0, y0, x1, y1 = a.bbox
                assert x0 <= tx0 < tx1 <= x1 and y0 <= ty0 < ty1 <= y1, "target_bbox larger than bbox"
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] == n and report["total"] == len(samples)
    assert report["rejected"] == len(samples) - n
    assert sum(report["rejected_by_reason"].values()) == report["rejected"]
    assert report["startup_seconds"] >= 0
    for stream in report["streams"]:  # the wait for the first row is part of its stream
        assert 0 <= stream.get("first_row_seconds", 0) <= stream["seconds"]
    boxes = report["target_vs_changed_boxes"]
    assert boxes["artifacts"] == sum(len(s.artifacts) for s in accepted)
    assert boxes["artifacts"] == 0 or 0 < boxes["mean_iou"] <= boxes["mean_area_ratio"] + 1e-9 <= 1 + 1e-9
    for tool, counts in report["per_tool"].items():  # the dataset's artifacts, per tool
        assert counts["in_dataset"] == sum(a.tool == tool for s in accepted for a in s.artifacts)
    assert (out / "README.md").read_text().startswith("---")
    return samples


def test_tool_shares_for_the_configured_mix_plan_more_of_what_reaches_the_dataset_less():
    from collections import Counter

    from factory.output import rebalanced_tool_shares

    even = {"add": 0.25, "remove": 0.25, "distort": 0.25, "fuse": 0.25}
    assert rebalanced_tool_shares(even, Counter(add=10, remove=10, distort=10, fuse=10)) == even
    # fuse reached the dataset half as often as each other tool: plan it twice as much, relative.
    steered = rebalanced_tool_shares(even, Counter(add=10, remove=10, distort=10, fuse=5))
    assert steered == pytest.approx({"add": 0.2, "remove": 0.2, "distort": 0.2, "fuse": 0.4}, abs=1e-4)
    assert rebalanced_tool_shares(even, Counter(add=10, remove=10, distort=10)) is None  # no fuse yet
    # A tool without a share is left out; the others are steered among themselves.
    assert rebalanced_tool_shares({"add": 0.5, "remove": 0.5, "distort": 0.0, "fuse": 0.0},
                                  Counter(add=30, remove=10)) == pytest.approx({"add": 0.25, "remove": 0.75})


def test_tiny_run_end_to_end(tmp_path):
    """A run whose yield is low (the scripted VLM passes 40 % of triplet checks, all or nothing per image)
    still starts every pool once: one stream over the plan, stopped at the n-th acceptance."""
    out = tmp_path / "run"
    low_yield = ("--set", "models.vlm.scripted_visible_share=0.4")
    proc = subprocess.run(_factory_cmd(out, 6, *low_yield), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_valid_run(out, 6)
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] / report["total"] < 0.5, report["total"]
    assert len(report["streams"]) == 1 and report["actors_started"] == {"perception": 1, "synthesis": 1, "curation": 1}

    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"))["train"]
    row = next(r for r in ds if r["status"] == "accepted")
    assert row["image"].mode == "RGB" and row["real_image"].size == row["image"].size
    assert row["mask"].mode == "L"

    # Same command again: nothing to do, nothing recomputed.
    again = subprocess.run(_factory_cmd(out, 6, *low_yield), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["processed_this_run"] == 0 and report["accepted"] == 6

    # A different config on the same output is refused with a clear message.
    changed = subprocess.run(_factory_cmd(out, 6, *low_yield, "--seed", "7"), cwd=ROOT, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert changed.returncode == 2 and "config" in changed.stderr


def test_resume_after_kill_9_of_the_whole_job(tmp_path, samples_run):
    """kill -9 the driver and everything it started at a random moment after a commit, then the same command:
    exactly n unique accepted, committed shards never rewritten, no temporaries left. The run has two
    actors per pool and a CPU hog beside it, yet commits the plan's prefix: the same rows, byte for byte,
    as the session's quiet one-actor run of the same command."""
    out, n = tmp_path / "run", SAMPLES_N
    two_actors = [f"--set=factory.{pool}.{key}={value}" for pool in ("perception", "synthesis", "curation")
                  for key, value in (("min_actors", 2), ("max_actors", 2), ("num_cpus", 0.3))]
    args = _factory_cmd(out, n, "--source", "samples", "--set", "output.rows_per_file=2",
                        "--set", "output.flush_seconds=0.01", *two_actors)
    rng = random.Random(20261125)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # a busy neighbour: timing changes
    try:
        proc = subprocess.Popen(args, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not list((out / "data").glob("*.parquet")):
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 1.5))  # somewhere after a commit: mid-stream, mid-write, mid-flush
        assert proc.poll() is None, "the run finished before the kill; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        committed = {f.name: f.read_bytes() for f in (out / "data").glob("*.parquet")}
        assert committed
    finally:
        hog.kill()
        hog.wait()
    done_before = {s.sample_id for s in iter_samples(out)}

    resumed = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    samples = assert_valid_run(out, n)
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_with"] == len(done_before)
    # Nothing committed before the kills was recomputed: old files untouched, new rows are new ids.
    for name, data in committed.items():
        assert (out / "data" / name).read_bytes() == data
    assert report["processed_this_run"] == len(samples) - len(done_before)
    for f in (out / "data").iterdir():
        assert f.suffix == ".parquet" and not f.name.startswith("."), f"leftover file {f.name}"
        pq.read_table(f)  # no partial or corrupt file
    assert report["actors_started"] == {"perception": 2, "synthesis": 2, "curation": 2}

    # The same rows as the quiet run, in plan order up to its n-th acceptance: ids, outcomes, bytes.
    quiet = {s.sample_id: s for s in iter_samples(samples_run)}
    ours = {s.sample_id: s for s in samples}
    assert set(quiet) == set(ours), "the two runs committed different rows"
    for sample_id, theirs in quiet.items():
        mine = ours[sample_id]
        assert (mine.status, mine.reject_reason) == (theirs.status, theirs.reject_reason), sample_id
        same_bytes = mine.image == theirs.image and mine.mask == theirs.mask  # outside the assert: no byte diff
        assert same_bytes, f"{sample_id} ({mine.source_id}): other image or mask bytes"
    from factory.plan import candidates

    plan = [w.sample_id for w in candidates(load_config("tiny"))]
    assert set(plan[:len(ours)]) == set(ours), "not the plan's prefix"


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, num_gpus=1,  # a logical GPU for the stuck-stream test (the tiny pools ask for none)
             include_dashboard=True, ignore_reinit_error=True,  # the state API needs it
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


def _bad_input_folder(folder: Path) -> None:
    from PIL import Image
    from skimage import data

    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "good_astronaut.jpg", quality=92)
    Image.fromarray(data.chelsea()).save(folder / "good_chelsea.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image")
    full = (folder / "good_astronaut.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 3])
    Image.new("RGB", (40, 30), "red").save(folder / "tiny.png")
    Image.new("1", (9000, 9000)).save(folder / "bomb.png")  # 81 Mpx, a few KB on disk


def test_bad_inputs_are_rejected_with_reasons_and_the_job_completes(tmp_path, local_ray):
    src = tmp_path / "src"
    _bad_input_folder(src)
    config = load_config("tiny", overrides={"source.uri": str(src), "factory.seeds_per_image": 6})
    report = run_factory(2, config, str(tmp_path / "run"))
    assert report["complete"] and report["accepted"] == 2
    reasons = report["rejected_by_reason"]
    bad = {k for k in reasons if k.startswith("bad_input")}
    expected = {"empty.jpg": "bad_input:empty_file", "notes.jpg": "bad_input:not_an_image",
                "truncated.jpg": "bad_input:truncated_or_corrupt", "tiny.png": "bad_input:too_small",
                "bomb.png": "bad_input:too_many_pixels"}
    samples = list(iter_samples(tmp_path / "run"))
    processed_bad = [s for s in samples if Path(s.source_id).name in expected]
    # every bad file tried is rejected with its own reason, and the report counts exactly those
    assert processed_bad and all(reason_code(s.reject_reason) == expected[Path(s.source_id).name]
                                 for s in processed_bad), [(s.source_id, s.reject_reason) for s in processed_bad]
    assert bad == {expected[Path(s.source_id).name] for s in processed_bad}, reasons
    assert all(s.status == "accepted" or not s.reject_reason.startswith("bad_input") for s in samples
               if Path(s.source_id).name.startswith("good"))


class _Stuck:
    """A pool actor whose first batch never ends (a hung read, a wedged kernel)."""

    def __init__(self, stuck: bool):
        self.stuck = stuck

    def __call__(self, batch):
        while self.stuck:
            time.sleep(1)
        return batch


def test_an_abandoned_streams_actors_are_killed_so_the_next_stream_gets_their_gpu(local_ray):
    """Ray Data only lets go of an abandoned stream's actors; one stuck in a task keeps its GPU, and the
    next stream's pool never starts (after a lost node Ray can keep one for an object's lineage too: the
    job then stalled stream after stream). The driver names each stream's actors (``actor_names``) and
    kills them when it abandons the stream (``kill_actors``): the next stream gets the GPU."""
    import ray

    from factory.stages import actor_names, kill_actors
    from factory.watchdog import StreamStalled, stall_deadline

    def stream(number: int, stuck: bool) -> int:
        ds = ray.data.range(4, override_num_blocks=1).map_batches(
            _Stuck, fn_constructor_kwargs={"stuck": stuck}, compute=ray.data.ActorPoolStrategy(size=1),
            num_gpus=1, batch_size=4, ray_remote_args_fn=actor_names(f"test/stream-{number}/pool-"))
        with stall_deadline(15) as deadline:
            rows = 0
            for batch in ds.iter_batches(batch_size=None):
                deadline.beat()
                rows += len(batch["id"])
        return rows

    with pytest.raises(StreamStalled):
        stream(1, stuck=True)
    time.sleep(2)  # Ray Data let go of the actor; it is still there, holding the GPU
    assert ray.available_resources().get("GPU", 0) == 0
    assert kill_actors("test/stream-1/") == 1
    assert stream(2, stuck=False) == 4  # (without the kill: StreamStalled again)
    assert not [name for name in ray.util.list_named_actors() if name.startswith("test/")]


def test_changed_config_is_refused(tmp_path):
    """An output remembers its config: the same one resumes, another is refused before any work starts
    (the CLI's exit code for it: ``test_tiny_run_end_to_end``)."""
    out = tmp_path / "run"
    OutputDir(str(out)).guard_config(load_config("tiny"))
    OutputDir(str(out)).guard_config(load_config("tiny"))  # the same config: accepted again
    with pytest.raises(OutputMismatchError, match="config"):
        run_factory(1, load_config("tiny", overrides={"injection.num_steps": 3}), str(out))
    assert not list(out.glob("data/*.parquet"))


def test_crashed_actor_is_restarted_and_the_job_completes(tmp_path, local_ray):
    """SIGKILL the synthesis actor's process mid-run: Ray restarts it and the job still ends exact."""
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    killed: list[int] = []

    def kill_synthesis_actor():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            try:
                alive = list_actors(filters=[("state", "=", "ALIVE")])
            except RayStateApiException:  # the state API can be briefly unavailable on a busy machine: ask again
                time.sleep(0.2)
                continue
            for actor in alive:
                if "SynthesisStage" in (actor.class_name or "") and actor.pid:
                    time.sleep(1.0)
                    try:
                        os.kill(actor.pid, signal.SIGKILL)
                        killed.append(actor.pid)
                    except ProcessLookupError:
                        continue
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_synthesis_actor, daemon=True)
    killer.start()
    out = tmp_path / "run"
    report = run_factory(4, load_config("tiny"), str(out))
    killer.join(timeout=5)
    assert killed, "the synthesis actor was never seen alive"
    assert report["complete"]
    assert_valid_run(out, 4)
