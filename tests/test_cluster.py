"""The factory on real Ray clusters: a local head with token authentication via `ray job submit`, and a
simulated multi-node cluster (logical GPUs) that loses a worker node mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from factory.config import load_config
from factory.pipeline import run_factory
from tests.conftest import free_port
from tests.test_factory import assert_valid_run
from tests.test_security import local_head

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_ray_job_submit_on_a_local_head(tmp_path):
    """The README's submit command against a head started as ``ray_cluster.yaml`` starts it (token auth)."""
    from factory.models.tiny.vae import cache_dir

    out = tmp_path / "run"
    with local_head(tmp_path / "home", extra_env={"FLAWFORGE_CACHE": str(cache_dir())}) as head:
        submit = subprocess.run(
            [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={head.url}",
             "--working-dir", str(ROOT),
             "--", "python", "-m", "factory.run", "--n", "4", "--preset", "tiny", "--out", str(out)],
            cwd=ROOT, env=head.client_env(), capture_output=True, text=True, timeout=900)
    assert submit.returncode == 0, (submit.stdout[-3000:], submit.stderr[-3000:])
    assert "succeeded" in (submit.stdout + submit.stderr).lower()
    assert_valid_run(out, 4)


def test_multi_node_cluster_survives_losing_a_worker_node(tmp_path):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    cluster = Cluster(initialize_head=True,  # a free dashboard port: another Ray on the machine may hold 8265
                      head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": free_port()})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    config = load_config("tiny", overrides={
        "factory.perception.num_cpus": 0.25, "factory.curation.num_cpus": 0.25,
        "factory.synthesis.num_gpus": 1.0, "factory.synthesis.num_cpus": 0.25,
        "output.rows_per_file": 1, "output.flush_seconds": 0.01,
        # A lost node can leave a Ray task waiting for an argument that lived only there (no actor left to
        # recreate it): the stream is then abandoned after this long and the rest replanned.
        "factory.stream_stall_s": 120,
    })
    out = tmp_path / "run"
    removed: list[str] = []
    placements: dict[str, set[str]] = {}

    def remove_the_synthesis_node():
        deadline = time.time() + 600
        while time.time() < deadline:
            for actor in list_actors(filters=[("state", "=", "ALIVE")]):
                placements.setdefault(actor.class_name, set()).add(actor.node_id)
            if len(list((out / "data").glob("*.parquet"))) >= 1:
                synth = [a for a in list_actors(filters=[("state", "=", "ALIVE")])
                         if "SynthesisStage" in (a.class_name or "")]
                for node in workers:
                    if synth and node.node_id == synth[0].node_id:
                        cluster.remove_node(node)
                        removed.append(node.node_id)
                        return
            time.sleep(0.3)

    remover = threading.Thread(target=remove_the_synthesis_node, daemon=True)
    remover.start()
    try:
        report = run_factory(16, config, str(out))  # long enough to lose the node mid-run
    finally:
        remover.join(timeout=10)
        ray.shutdown()
        cluster.shutdown()
    assert removed, "the synthesis node was never removed"
    assert report["complete"]
    assert_valid_run(out, 16)
    synth_nodes = set().union(*(v for k, v in placements.items() if "SynthesisStage" in k))
    assert synth_nodes and synth_nodes <= {w.node_id for w in workers}, "GPU stage ran off the GPU nodes"
    print(json.dumps(report["streams"]))


def test_synthesis_pool_grows_to_the_gpu_nodes_added_during_a_run(tmp_path):
    """No config change: the synthesis pool (min 1 actor, no maximum) starts on the one GPU node and
    takes the two GPU nodes that join while the job runs."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "include_dashboard": True, "dashboard_port": free_port()})
    first = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    config = load_config("tiny", overrides={
        "factory.perception.num_cpus": 0.25, "factory.curation.num_cpus": 0.25,
        "factory.synthesis.num_gpus": 1.0, "factory.synthesis.num_cpus": 0.25,
        "factory.synthesis.max_actors": None,  # as flux-dev: every GPU the cluster gives
        "injection.num_steps": 16,  # synthesis is the bottleneck, as on a real cluster
        "factory.seeds_per_image": 48,  # the 6 bundled photos give 288 samples
        "output.rows_per_file": 4, "output.flush_seconds": 0.5,
    })
    out = tmp_path / "run"
    result: dict = {}
    job = threading.Thread(target=lambda: result.update(report=run_factory(96, config, str(out))), daemon=True)
    job.start()
    synthesis_nodes: dict[str, float] = {}  # node id → when a synthesis actor first ran there
    added = []
    start = time.time()
    try:
        while job.is_alive():
            for actor in list_actors(filters=[("state", "=", "ALIVE")]):
                if "SynthesisStage" in (actor.class_name or ""):
                    synthesis_nodes.setdefault(actor.node_id, time.time() - start)
            if synthesis_nodes and not added:  # two GPU nodes join once synthesis runs on the first
                added = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]  # (needs the main thread)
            time.sleep(0.5)
        job.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result["report"]["complete"], json.dumps(result["report"], indent=1)[:3000]
    assert_valid_run(out, 96)
    assert first.node_id in synthesis_nodes
    assert {node.node_id for node in added} & set(synthesis_nodes), \
        f"the synthesis pool did not grow to the added nodes: {synthesis_nodes}"
    print(json.dumps({"synthesis actor first seen (s)": synthesis_nodes}))
