"""Accepted samples per minute: ``factory.run`` (Ray Data, actor pools, streaming) next to a
sequential single-process loop over the same agents at batch size 1 (one image at a time).

    python bench/factory_throughput.py --n 48 [--preset tiny] [--source samples] [--seeds-per-image 48]

Both are measured in one run, from cold start (model loading included) to n accepted samples;
the ratio is what to read. Ray Data's per-stage stats of the factory run are printed after.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from factory.config import load_config
from factory.pipeline import run_factory
from factory.plan import candidates, work_schema
from factory.stages import STAGES
from shards.rows import table_to_samples


def sequential(n: int, config) -> tuple[float, int, int]:
    """One process, one image at a time, every agent in turn (models loaded once): (seconds, samples
    processed, accepted)."""
    start = time.perf_counter()
    config_json = config.model_dump_json()
    stages = [cls(config_json) for cls in STAGES.values()]
    accepted = processed = 0
    for item in candidates(config):
        table = pa.Table.from_pylist([item.__dict__], schema=work_schema())  # the perception stage decodes it
        for stage in stages:
            table = stage(table)
        processed += 1
        accepted += sum(s.status == "accepted" for s in table_to_samples(table))
        if accepted >= n:
            break
    return time.perf_counter() - start, processed, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--source", default="samples")
    parser.add_argument("--seeds-per-image", type=int, default=None,
                        help="more (source, seed) pairs for a large --n (the bundled source has 6 photos)")
    args = parser.parse_args()
    overrides = {"source.uri": args.source}
    if args.seeds_per_image:
        overrides["factory.seeds_per_image"] = args.seeds_per_image
    config = load_config(args.preset, overrides=overrides)

    seq_seconds, seq_processed, seq_accepted = sequential(args.n, config)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = run_factory(args.n, config, tmp)
        ray_seconds = time.perf_counter() - start
        stats = (Path(tmp) / "ray_data_stats.txt").read_text()

    seq_rate, ray_rate = seq_accepted / seq_seconds * 60, report["accepted"] / ray_seconds * 60
    print(json.dumps({
        "n": args.n, "preset": args.preset,
        "sequential": {"seconds": round(seq_seconds, 2), "processed": seq_processed, "accepted": seq_accepted,
                       "accepted_per_minute": round(seq_rate, 2)},
        "factory": {"seconds": round(ray_seconds, 2), "processed": report["total"], "accepted": report["accepted"],
                    "accepted_per_minute": round(ray_rate, 2),
                    # where the factory's time went: Ray's start, then per stream the wait for the first
                    # row (actors starting, importing, loading models) and the whole stream
                    "startup_seconds": report["startup_seconds"],
                    "streams": [{k: r.get(k) for k in ("stream", "planned", "first_row_seconds", "seconds")}
                                for r in report["streams"]],
                    "per_stage": report["per_stage"]},
        "ratio_factory_over_sequential": round(ray_rate / seq_rate, 3),
    }, indent=2))
    print("\nRay Data per-stage stats of the factory run:\n" + stats)


if __name__ == "__main__":
    main()
