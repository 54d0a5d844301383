"""Our injection processor next to diffusers' stock ``FluxAttnProcessor`` at the same shapes,
with injection fully on (per-sample RoPE tables in every layer of the PE set, value cache write +
read + gather in every value layer). Prints the time ratio ours / stock from one run.

    python bench/processor_overhead.py                 # CPU: a small FLUX
    python bench/processor_overhead.py --device cuda --full --side 1024 [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from factory.config import load_config  # noqa: E402
from tools.flux.engine import FluxEngine  # noqa: E402
from tools.flux.latents import image_ids  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="FLUX.1-dev shapes (GPU)")
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    from diffusers import FluxTransformer2DModel
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    from tools.flux.components import FluxComponents

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        if args.full:
            transformer, text_dim, pooled_dim = FluxTransformer2DModel(guidance_embeds=True), 4096, 768
        else:
            transformer = FluxTransformer2DModel(num_layers=2, num_single_layers=4, attention_head_dim=64,
                                                 num_attention_heads=4, joint_attention_dim=256,
                                                 pooled_projection_dim=64, axes_dims_rope=(16, 24, 24),
                                                 guidance_embeds=True)
            text_dim, pooled_dim = 256, 64
    torch.set_default_dtype(torch.float32)
    transformer.eval().requires_grad_(False)
    injection = load_config("flux-dev").injection
    engine = FluxEngine(FluxComponents(transformer, None, None, None, None, None), injection, args.device, dtype)
    ours = dict(engine.processors)

    rows = cols = args.side // 16
    text = 512 if args.full else 64
    gen = torch.Generator(args.device).manual_seed(0)
    block = torch.tensor([r * cols + c for r in range(2, rows // 2) for c in range(2, cols // 2)])
    prepared = engine.prepare_state(args.batch, text, rows, cols, [block] * args.batch, [block + 1] * args.batch)
    state = prepared.state
    state.cos_pe.copy_(prepared.injected[0])
    state.sin_pe.copy_(prepared.injected[1])
    state.value_gate.fill_(1.0)
    state.write_slot.fill_(0)
    inputs = dict(
        hidden_states=torch.randn(args.batch, rows * cols, 64, device=args.device, dtype=dtype, generator=gen),
        encoder_hidden_states=torch.randn(args.batch, text, text_dim, device=args.device, dtype=dtype, generator=gen),
        pooled_projections=torch.randn(args.batch, pooled_dim, device=args.device, dtype=dtype, generator=gen),
        timestep=torch.full((args.batch,), 0.5, device=args.device, dtype=dtype),
        img_ids=image_ids(rows, cols).to(args.device), txt_ids=torch.zeros(text, 3, device=args.device),
        guidance=torch.full((args.batch,), 3.5, device=args.device, dtype=dtype), return_dict=False)
    forward = torch.compile(transformer.forward) if args.compile else transformer.forward

    def timed(processors) -> float:
        transformer.set_attn_processor(processors)
        with torch.no_grad():
            for _ in range(2):
                forward(**inputs)
            if args.device == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            for _ in range(args.repeats):
                forward(**inputs)
            if args.device == "cuda":
                torch.cuda.synchronize()
        return (time.perf_counter() - tic) / args.repeats

    results = {"stock": [], "ours": []}
    for _ in range(2):  # interleaved, so drift hits both
        results["stock"].append(timed(FluxAttnProcessor()))
        results["ours"].append(timed(dict(ours)))
    stock, mine = min(results["stock"]), min(results["ours"])
    print(json.dumps({"device": args.device, "full_size": args.full, "side": args.side, "batch": args.batch,
                      "compile": args.compile, "stock_s": round(stock, 5), "ours_s": round(mine, 5),
                      "ratio_ours_over_stock": round(mine / stock, 4)}, indent=2))


if __name__ == "__main__":
    main()
