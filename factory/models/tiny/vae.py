"""The tiny preset's VAE, fitted to reconstruct photos so that its reconstructions look like them.

A randomly initialised ``AutoencoderKL`` decodes every latent to the same kind of coloured noise:
the VAE reconstruction of a photo (``clean_image``, onto which the factory composites artifacts)
would look nothing like the photo, and an artifact region would be noise among noise — nothing a
detector could learn, so the tiny preset could not show the detector learning on ``clean_image``
negatives. The tiny VAE therefore takes ``FIT_STEPS`` Adam steps of L1 reconstruction on random
crops of a few bundled photos (single-threaded and seeded: the same weights in every process, a
few seconds on a laptop CPU). The result is blurry, but photo-like; every other tiny model stays
random. Fitted weights are cached under ``FLAWFORGE_CACHE`` (default ``~/.cache/flawforge``), keyed
by the VAE's config, the seed and the fit settings, and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file, save_file

FIT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
FIT_SIZE = (192, 128)  # (width, height) the photos are resized to
FIT_CROP = 64
FIT_BATCH = 4
FIT_STEPS = 200
FIT_LR = 3e-3


def cache_dir() -> Path:
    return Path(os.environ.get("FLAWFORGE_CACHE", Path.home() / ".cache" / "flawforge"))


def fitted_tiny_vae(vae: AutoencoderKL, seed: int) -> AutoencoderKL:
    """Load the fitted weights of ``vae`` (a freshly built tiny VAE) from the cache, or fit and cache them."""
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}  # "_..." keys vary by process
    key = json.dumps({"config": config, "seed": seed, "photos": FIT_PHOTOS, "size": FIT_SIZE,
                      "crop": FIT_CROP, "batch": FIT_BATCH, "steps": FIT_STEPS, "lr": FIT_LR},
                     sort_keys=True, default=str)
    path = cache_dir() / f"tiny-vae-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if path.is_file():
        vae.load_state_dict(load_file(path))
        return vae
    _fit(vae, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, partial)
    os.replace(partial, path)  # concurrent builders each write a whole file; the last rename wins
    return vae


def _fit(vae: AutoencoderKL, seed: int) -> None:
    from skimage import data

    photos = np.stack([np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize(FIT_SIZE))
                       for name in FIT_PHOTOS])
    pixels = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float reductions, so the same weights, everywhere
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            optimizer = torch.optim.Adam(vae.parameters(), lr=FIT_LR)
            height, width = pixels.shape[2:]
            vae.train()
            for _ in range(FIT_STEPS):
                which = torch.randint(0, len(photos), (FIT_BATCH,), generator=generator)
                y0 = int(torch.randint(0, height - FIT_CROP + 1, (1,), generator=generator))
                x0 = int(torch.randint(0, width - FIT_CROP + 1, (1,), generator=generator))
                crop = pixels[which, :, y0:y0 + FIT_CROP, x0:x0 + FIT_CROP]
                loss = (vae.decode(vae.encode(crop).latent_dist.mode()).sample - crop).abs().mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
        vae.eval()
