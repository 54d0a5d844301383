"""Synthesis at FLUX.1-dev size: a random-weight FLUX.1-dev transformer (19 double + 38 single
blocks, 24 × 128 heads) and a FLUX-shaped VAE in bf16, one image inverted and denoised with
injection (25 + 25 steps by default, the paper's schedule). Prints seconds per image, the
transformer's achieved TFLOP/s and MFU, and peak GPU memory. Needs a CUDA GPU.

    python bench/gpu_synthesis.py [--side 1024] [--steps 25] [--batch 1] [--compile] [--fp8] [--cache-device cpu]
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

from bench.flux_shapes import H100_BF16_DENSE_TFLOPS, TEXT_TOKENS, forward_flop  # noqa: E402
from factory.config import load_config  # noqa: E402
from tools.flux.engine import FluxEngine  # noqa: E402


def build(device: str):
    """FLUX.1-dev's transformer and VAE with random weights, bf16, on ``device``."""
    from factory.models.tiny.flux import random_flux_dev

    return random_flux_dev(torch.device(device), torch.bfloat16, text=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--solver", default="euler", choices=["euler", "fireflow"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fp8", action="store_true", help="float8 linear layers (torchao; pip install '.[fp8]')")
    parser.add_argument("--cache-device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_synthesis.py needs a CUDA GPU")
    device = "cuda"
    components = build(device)
    if args.fp8:
        from factory.models.flux import float8_transformer

        float8_transformer(components.transformer)
    injection = load_config("flux-dev", overrides={
        "injection.num_steps": args.steps, "injection.solver": args.solver,
        "injection.value_steps": min(15, args.steps), "injection.cache_device": args.cache_device,
        "injection.pe_steps": {t: min(v, args.steps) for t, v in {"add": 25, "remove": 25, "distort": 15, "fuse": 15}.items()},
    }).injection
    engine = FluxEngine(components, injection, device=device, dtype=torch.bfloat16)
    if args.compile:
        engine.compile()

    from PIL import Image
    from skimage import data

    image = np.asarray(Image.fromarray(data.astronaut()).resize((args.side, args.side)))
    images = np.stack([image] * args.batch)
    gen = torch.Generator(device).manual_seed(0)
    embeds = torch.randn(args.batch, TEXT_TOKENS, 4096, device=device, dtype=torch.bfloat16, generator=gen)
    pooled = torch.randn(args.batch, 768, device=device, dtype=torch.bfloat16, generator=gen)
    cols = args.side // 16
    block = torch.tensor([r * cols + c for r in range(20, 30) for c in range(20, 30)])  # 100 target cells
    targets, refs = [block] * args.batch, [block + 12] * args.batch

    tic = time.perf_counter()
    engine.run(images, embeds, pooled, targets, refs, [25] * args.batch)  # warm-up (and compilation)
    torch.cuda.synchronize()
    warmup = time.perf_counter() - tic
    torch.cuda.reset_peak_memory_stats()
    times, transformer_times = [], []
    for _ in range(args.repeats):
        torch.cuda.synchronize()
        tic = time.perf_counter()
        result = engine.run(images, embeds, pooled, targets, refs, [25] * args.batch)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
        transformer_times.append(result.timings["invert"] + result.timings["denoise"])
    forwards = 2 * args.steps if args.solver == "euler" else 2 * (args.steps + 1)
    flop = forwards * forward_flop(args.side, args.batch)
    seconds = min(times)
    achieved = flop / min(transformer_times) / 1e12
    print(json.dumps({
        "device": torch.cuda.get_device_name(), "side": args.side, "batch": args.batch, "steps": args.steps,
        "solver": args.solver, "compile": args.compile, "fp8": args.fp8, "cache_device": args.cache_device,
        "seconds_per_image": round(seconds / args.batch, 3), "warmup_seconds": round(warmup, 1),
        "transformer_forwards": forwards, "transformer_TFLOP_per_image": round(flop / args.batch / 1e12, 1),
        "achieved_TFLOPs": round(achieved, 1), "MFU_vs_989": round(achieved / H100_BF16_DENSE_TFLOPS, 3),
        "peak_memory_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "value_cache_GiB": round(result.cache_bytes / 2**30, 2),
        "timings": {k: round(v, 3) for k, v in result.timings.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
