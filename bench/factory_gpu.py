"""The whole factory on one GPU next to synthesis alone, in one run: FLUX.1-dev's architecture with
random weights (``models.flux.kind: random``; bf16, the flux-dev schedule, compiled, a photo's 4 seeds
inverted once), the other roles as random-weight stand-ins (tiny Grounding DINO / SAM / LPIPS, the
scripted VLM), the bundled photos at 1024 on the long side.

    python bench/factory_gpu.py [--n 32] [--side 1024]         # needs a CUDA GPU
    python bench/factory_gpu.py --smoke                        # the same plumbing on CPU, tiny FLUX

1. Synthesis only: the synthesis stage (``factory.stages.SynthesisStage``, the factory's own build:
   compile, warm-up, photos per call from memory) on the photos perception planned, timed after its
   warm-up: synthesised samples per hour.
2. The factory: ``run_factory`` with every pool on this GPU (synthesis 0.8 of it, perception and
   curation 0.1 each), to ``n`` accepted samples. Steady state is read from the shards' own
   timestamps (first to last committed row), so start-up and compilation are reported apart.

Prints both rates, their ratio (the goal: ≥ 0.9), accepted samples per hour, the yield, the
synthesis GPU's busy share (synthesis seconds / steady-state seconds) and transformer passes per
sample (steps·(1/k + 1) with k seeds per inversion).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from factory.config import Config, load_config  # noqa: E402


def bench_config(side: int, smoke: bool) -> Config:
    if smoke:  # CPU: tiny FLUX, the tiny schedule, the same pools and flags
        return load_config("tiny", overrides={
            "factory.seeds_together": 4, "factory.perception.batch_size": 8, "factory.synthesis.batch_size": 8,
            "factory.synthesis.compile": "always", "factory.synthesis.compile_backend": "eager",
            "factory.synthesis.text_encoders_in": "perception"})
    return load_config("flux-dev", overrides={
        "models.flux": {"kind": "random"},
        "models.grounding": {"kind": "tiny"}, "models.segmentation": {"kind": "tiny"},
        "models.lpips": {"kind": "tiny"}, "models.vlm": {"backend": "scripted"},
        "image.min_short_side": min(side, 480), "image.max_side": side,
        "factory.seeds_per_image": 16,
        "factory.vlm": {"actors": 1, "num_gpus": 0},
        "factory.perception": {"min_actors": 1, "max_actors": 1, "batch_size": 8, "num_gpus": 0.1},
        "factory.synthesis.min_actors": 1, "factory.synthesis.max_actors": 1, "factory.synthesis.num_gpus": 0.8,
        "factory.curation": {"min_actors": 1, "max_actors": 1, "batch_size": 8, "num_gpus": 0.1},
    })


def planned_batch(config: Config, photos: int):
    """``photos`` × seeds_together samples through perception (which decodes them), in this process."""
    from factory.plan import candidates, work_schema
    from factory.stages import PerceptionStage

    items = list(candidates(config))[: photos * config.factory.seeds_together]
    config_json = config.model_dump_json()
    table = pa.Table.from_pylist([w.__dict__ for w in items], schema=work_schema())
    perception = PerceptionStage(config_json)
    planned = perception(table)
    del perception  # its T5 leaves the GPU before the synthesis stage loads
    free_memory()
    return planned


def synthesis_only(config: Config, batch, repeats: int) -> dict:
    from factory.stages import SynthesisStage
    from shards.rows import table_to_samples

    tic = time.perf_counter()
    stage = SynthesisStage(config.model_dump_json())  # loads, compiles and warms up as in the factory
    start_up = time.perf_counter() - tic
    pending = sum(s.is_pending for s in table_to_samples(batch))
    stage(batch)  # the first real batch: any shape the warm-up did not compile
    best = float("inf")
    for _ in range(repeats):
        sync()
        tic = time.perf_counter()
        out = stage(batch)
        sync()
        best = min(best, time.perf_counter() - tic)
    synthesized = sum(bool(s.image) for s in table_to_samples(out))
    del stage
    free_memory()
    return {"start_up_seconds": round(start_up, 1), "samples_per_batch": synthesized, "pending_in": pending,
            "seconds_per_batch": round(best, 3), "samples_per_hour": round(synthesized / best * 3600, 1)}


def factory(config: Config, n: int) -> dict:
    from factory.pipeline import run_factory
    from shards.reader import iter_samples

    with tempfile.TemporaryDirectory() as out:
        tic = time.perf_counter()
        report = run_factory(n, config, out)
        elapsed = time.perf_counter() - tic
        rows = list(iter_samples(out))
    stamps = sorted(dt.datetime.fromisoformat(s.provenance["written_at"]).timestamp() for s in rows)
    steady = max(stamps[-1] - stamps[0], 1.0)
    synthesized = [s for s in rows if s.image]
    synthesis_seconds = sum(s.provenance.get("timings", {}).get("synthesis", 0.0) for s in synthesized)
    accepted = report["accepted"]
    return {
        "seconds": round(elapsed, 1), "start_up_seconds": round(elapsed - steady, 1),
        "steady_seconds": round(steady, 1), "committed": len(rows), "synthesized": len(synthesized),
        "accepted": accepted, "yield": round(accepted / max(len(rows), 1), 3),
        "synthesized_per_hour": round((len(synthesized) - 1) / steady * 3600, 1),
        "accepted_per_hour": round((accepted - 1) / steady * 3600, 1),
        "synthesis_busy_share": round(min(synthesis_seconds / steady, 1.0), 3),
        "per_tool": report["per_tool"],
    }


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="accepted samples the factory run makes")
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--photos", type=int, default=2, help="photos per synthesis-only batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny FLUX: check the plumbing, not the speed")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench/factory_gpu.py needs a CUDA GPU (or --smoke)")
    config = bench_config(args.side, args.smoke)
    k, steps = config.factory.seeds_together, config.injection.num_steps
    alone = synthesis_only(config, planned_batch(config, args.photos), args.repeats)
    pipeline = factory(config, args.n)
    print(json.dumps({
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke)",
        "side": config.image.max_side, "steps": steps, "seeds_per_inversion": k,
        "transformer_passes_per_sample": round(steps / k + steps, 2), "without_shared_inversion": 2 * steps,
        "synthesis_only": alone, "factory": pipeline,
        "ratio_factory_over_synthesis_only": round(pipeline["synthesized_per_hour"] / alone["samples_per_hour"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
