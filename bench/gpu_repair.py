"""Repair at FLUX.1-dev size, next to synthesis in the same run: random-weight FLUX.1-dev transformer and
FLUX-shaped VAE in bf16 (``bench.gpu_synthesis.build``). Synthesis: one image, 100 target cells, the
flux-dev schedule. Repair (``detector.repair``): K attempts of one image as one batch, the same 100
cells re-synthesised from fresh noise with no injection (an engine with ``value_steps`` 0), the photo
inverted once for all attempts (``plans_per_image``), and, side by side, inverted once per attempt.
Prints seconds per image for both, per attempt for repair, and peak GPU memory. Needs a CUDA GPU.

    python bench/gpu_repair.py [--side 1024] [--steps 25] [--attempts 4] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.flux_shapes import TEXT_TOKENS  # noqa: E402
from bench.gpu_synthesis import build  # noqa: E402
from factory.config import load_config  # noqa: E402
from tools.flux.engine import FluxEngine  # noqa: E402


def timed(run, repeats: int) -> tuple[float, float]:
    """(warm-up seconds, best of ``repeats`` seconds) of ``run()``."""
    torch.cuda.synchronize()
    tic = time.perf_counter()
    run()
    torch.cuda.synchronize()
    warmup = time.perf_counter() - tic
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        tic = time.perf_counter()
        run()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - tic)
    return warmup, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_repair.py needs a CUDA GPU")
    device = "cuda"
    components = build(device)
    injection = load_config("flux-dev", overrides={
        "injection.num_steps": args.steps, "injection.value_steps": min(15, args.steps),
        "injection.pe_steps": {t: min(v, args.steps) for t, v in {"add": 25, "remove": 25, "distort": 15, "fuse": 15}.items()},
    }).injection
    synthesis = FluxEngine(components, injection, device=device, dtype=torch.bfloat16)
    repair = FluxEngine(components, injection.model_copy(update={"value_steps": 0}), device=device, dtype=torch.bfloat16)
    if args.compile:
        synthesis.compile()
        repair.compile()

    from PIL import Image
    from skimage import data

    image = np.asarray(Image.fromarray(data.astronaut()).resize((args.side, args.side)))
    gen = torch.Generator(device).manual_seed(0)
    embeds = torch.randn(1, TEXT_TOKENS, 4096, device=device, dtype=torch.bfloat16, generator=gen)
    pooled = torch.randn(1, 768, device=device, dtype=torch.bfloat16, generator=gen)
    cols = args.side // 16
    block = torch.tensor([r * cols + c for r in range(20, 30) for c in range(20, 30)])  # 100 cells
    k = args.attempts

    def synthesize():
        synthesis.run(image[None], embeds, pooled, [block], [block + 12], [25])

    def repair_attempts(shared: bool):
        def run():
            result = repair.repaint(image[None] if shared else np.repeat(image[None], k, axis=0),
                                    embeds.expand(k, -1, -1), pooled.expand(k, -1), [block] * k,
                                    noise_seeds=list(range(k)), plans_per_image=k if shared else 1)
            outside = ~result.change_masks[0]
            assert all(np.array_equal(im[outside], result.clean[0][outside]) for im in result.images)
        return run

    torch.cuda.reset_peak_memory_stats()
    synth_warmup, synth_seconds = timed(synthesize, args.repeats)
    synth_peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    repair_warmup, repair_seconds = timed(repair_attempts(shared=True), args.repeats)
    repair_peak = torch.cuda.max_memory_allocated() / 2**30
    _, per_attempt_inversion_seconds = timed(repair_attempts(shared=False), args.repeats)
    print(json.dumps({
        "device": torch.cuda.get_device_name(), "side": args.side, "steps": args.steps, "compile": args.compile,
        "synthesis": {"seconds_per_image": round(synth_seconds, 3), "warmup_seconds": round(synth_warmup, 1),
                      "peak_memory_GiB": round(synth_peak, 2)},
        "repair": {"attempts": k, "seconds_per_image": round(repair_seconds, 3),
                   "seconds_per_attempt": round(repair_seconds / k, 3), "warmup_seconds": round(repair_warmup, 1),
                   "peak_memory_GiB": round(repair_peak, 2),
                   "seconds_per_image_inverting_every_attempt": round(per_attempt_inversion_seconds, 3)},
        "ratio_repair_image_over_synthesis_image": round(repair_seconds / synth_seconds, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
