"""Accepted samples per minute of the tiny factory on simulated clusters of 1, 2 and 4 GPU nodes.

    python bench/factory_nodes.py [--n 32] [--nodes 1 2 4]

Each cluster is Ray's local multi-node simulation (``ray.cluster_utils.Cluster``): a head with the
CPU stages and N worker nodes with one logical GPU each. The synthesis pool is the flux-dev one
(``min_actors`` 1, no ``max_actors``), so it grows to the nodes it finds; the same config runs on
every cluster. All nodes share this machine's cores, so the numbers show the pool's growth and
its overhead, not the speed-up of real GPUs: on a 2-core machine the synthesis work is CPU-bound
whatever the node count. Read the ratios to 1 node, measured in one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time


def run_on_cluster(nodes: int, n: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    from factory.config import load_config
    from factory.pipeline import run_factory

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    config = load_config("tiny", overrides={
        "factory.perception.num_cpus": 0.25, "factory.curation.num_cpus": 0.25,
        "factory.synthesis.num_gpus": 1.0, "factory.synthesis.num_cpus": 0.25, "factory.synthesis.max_actors": None,
        "injection.num_steps": 16, "factory.seeds_per_image": 64,
    })
    synthesis_actors: set[str] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            try:
                synthesis_actors.update(a.actor_id for a in list_actors(filters=[("state", "=", "ALIVE")])
                                        if "SynthesisStage" in (a.class_name or ""))
            except (RayStateApiException, ConnectionError):  # the state API may not answer while the cluster starts
                pass
            time.sleep(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            report = run_factory(n, config, out)
            seconds = time.perf_counter() - start
    finally:
        done.set()
        watcher.join(timeout=5)
        ray.shutdown()
        cluster.shutdown()
    return {"nodes": nodes, "seconds": round(seconds, 1), "accepted": report["accepted"],
            "processed": report["total"], "synthesis_actors": len(synthesis_actors),
            "accepted_per_minute": round(report["accepted"] / seconds * 60, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    results = [run_on_cluster(nodes, args.n) for nodes in args.nodes]
    base = results[0]["accepted_per_minute"]
    for r in results:
        r["ratio_to_first"] = round(r["accepted_per_minute"] / base, 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
