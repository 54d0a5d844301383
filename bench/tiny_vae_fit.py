"""Fit the tiny FLUX VAE with given settings and print its per-photo reconstruction error and the fit's seconds.

    PYTHONPATH=$PWD .venv/bin/python bench/tiny_vae_fit.py --steps 1500 --crop 48
    PYTHONPATH=$PWD .venv/bin/python bench/tiny_vae_fit.py --cached   # the cached (make setup's) weights

The error is the factory's: mean |photo - round trip| in uint8 grey levels, the round trip being
``encode(...).latent_dist.mode()`` then ``decode``, clamped and rounded to uint8 (tools.flux.latents), one
photo at a time at the tiny preset's size. Single-threaded, like the fit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import factory.models.tiny.flux as tiny_flux_module  # noqa: E402
from factory.models.tiny import vae as tiny_vae  # noqa: E402


def unfitted_vae(seed: int = 0):
    """The tiny FLUX's VAE as ``tiny_flux(seed)`` builds it, before the fit."""
    captured = {}
    original = tiny_flux_module.fitted_tiny_vae
    tiny_flux_module.fitted_tiny_vae = lambda vae, seed: captured.setdefault("vae", vae)
    try:
        tiny_flux_module._tiny_state.__wrapped__(seed)
    finally:
        tiny_flux_module.fitted_tiny_vae = original
    return captured["vae"]


@torch.no_grad()
def photo_errors(vae) -> dict[str, float]:
    out = {}
    for name, photo in zip(tiny_vae.FIT_PHOTOS, tiny_vae.fit_photos()):
        real = ((photo + 1.0) * 127.5).round()
        clean = ((vae.decode(vae.encode(photo[None]).latent_dist.mode()).sample[0].clamp(-1, 1) + 1.0) * 127.5).round()
        out[name] = float((real - clean).abs().mean())
    return out


@torch.no_grad()
def round_trip_seconds(vae, repeats: int = 5) -> float:
    """Best of ``repeats`` encode+decode times of one 192x128 photo (the coffee photo)."""
    photo = tiny_vae.fit_photos()[2][None]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        vae.decode(vae.encode(photo).latent_dist.mode())
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cached", action="store_true", help="measure the cached weights instead of fitting")
    for field in fields(tiny_vae.FitSettings):
        default = getattr(tiny_vae.FIT, field.name)
        kind = (lambda text: text.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)
        parser.add_argument(f"--{field.name}", type=kind, default=default)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = tiny_vae.FitSettings(**{f.name: getattr(args, f.name) for f in fields(tiny_vae.FitSettings)})
    vae = unfitted_vae(args.seed)
    if args.cached:
        vae = tiny_vae.fitted_tiny_vae(vae, args.seed)
        seconds = None
    else:
        seconds = tiny_vae.fit(vae, args.seed, settings)
    errors = photo_errors(vae)
    digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in vae.state_dict().values())).hexdigest()
    print(json.dumps({"settings": asdict(settings), "fit_seconds": seconds, "errors": errors,
                      "mean": sum(errors.values()) / len(errors), "worst": max(errors.values()),
                      "round_trip_seconds": round_trip_seconds(vae), "weights_sha256": digest[:16]}))


if __name__ == "__main__":
    main()
