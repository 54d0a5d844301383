"""The tiny preset's VAE, fitted to reconstruct photos so that its reconstructions look like them.

A randomly initialised ``AutoencoderKL`` decodes every latent to the same kind of coloured noise:
the VAE reconstruction of a photo (``clean_image``, onto which the factory composites artifacts)
would look nothing like the photo, and an artifact region would be noise among noise — nothing a
detector could learn, so the tiny preset could not show the detector learning on ``clean_image``
negatives. The tiny VAE therefore takes ``FIT_STEPS`` Adam steps (one-cycle learning rate) of L1
reconstruction on random crops of the bundled photos (``factory.sources.SAMPLE_PHOTOS``, at the
tiny preset's size: long side ``FIT_SIDE``), then its last decoder layer is solved by least squares
on the whole photos. The fit is single-threaded and seeded (the same weights in every process) and
takes a few minutes on one CPU core, once per machine; every other tiny model stays random. Fitted
weights are cached under ``FLAWFORGE_CACHE`` (default ``~/.cache/flawforge``), keyed by the VAE's
config, the seed and the fit settings, and written atomically.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file, save_file

FIT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")  # factory.sources.SAMPLE_PHOTOS
FIT_SIDE = 192  # the photos' long side, as the tiny preset's image.max_side
FIT_CROP = 48
FIT_BATCH = 8
FIT_STEPS = 1500
FIT_LR = 4e-3  # the one-cycle schedule's peak
FIT_RIDGE = 1e-3  # ridge of the least-squares solve of the decoder's output layer


def cache_dir() -> Path:
    return Path(os.environ.get("FLAWFORGE_CACHE", Path.home() / ".cache" / "flawforge"))


def fitted_tiny_vae(vae: AutoencoderKL, seed: int) -> AutoencoderKL:
    """Load the fitted weights of ``vae`` (a freshly built tiny VAE) from the cache, or fit and cache them."""
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}  # "_..." keys vary by process
    key = json.dumps({"config": config, "seed": seed, "photos": FIT_PHOTOS, "side": FIT_SIDE, "crop": FIT_CROP,
                      "batch": FIT_BATCH, "steps": FIT_STEPS, "lr": FIT_LR, "ridge": FIT_RIDGE, "fit": 2},
                     sort_keys=True, default=str)
    path = cache_dir() / f"tiny-vae-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # processes starting together fit once; the others wait for it
            if not path.is_file():
                _fit(vae, seed)
                partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, partial)
                os.replace(partial, path)
                return vae
    vae.load_state_dict(load_file(path))
    return vae


def fit_photos() -> list[torch.Tensor]:
    """The bundled photos as (3, H, W) tensors in [-1, 1], as the tiny preset prepares them: resized to
    long side ``FIT_SIDE``, then centre-cropped to multiples of the 16-px cell."""
    from skimage import data

    out = []
    for name in FIT_PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        scale = FIT_SIDE / max(image.size)
        image = image.resize([round(side * scale) for side in image.size], Image.Resampling.LANCZOS)
        pixels = np.asarray(image)
        top, left = (pixels.shape[0] % 16) // 2, (pixels.shape[1] % 16) // 2
        pixels = pixels[top:top + pixels.shape[0] // 16 * 16, left:left + pixels.shape[1] // 16 * 16]
        out.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1.0)
    return out


def _fit(vae: AutoencoderKL, seed: int) -> None:
    photos = fit_photos()
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float reductions, so the same weights, everywhere
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            optimizer = torch.optim.Adam(vae.parameters(), lr=FIT_LR)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=FIT_LR, total_steps=FIT_STEPS,
                                                           pct_start=0.1)
            vae.train()
            for _ in range(FIT_STEPS):
                crops = []
                for which in torch.randint(0, len(photos), (FIT_BATCH,), generator=generator).tolist():
                    height, width = photos[which].shape[1:]
                    y0 = int(torch.randint(0, height - FIT_CROP + 1, (1,), generator=generator))
                    x0 = int(torch.randint(0, width - FIT_CROP + 1, (1,), generator=generator))
                    crops.append(photos[which][:, y0:y0 + FIT_CROP, x0:x0 + FIT_CROP])
                crop = torch.stack(crops)
                loss = (vae.decode(vae.encode(crop).latent_dist.mode()).sample - crop).abs().mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            vae.eval()
            _solve_output_layer(vae, photos)
    finally:
        torch.set_num_threads(threads)
        vae.eval()


@torch.no_grad()
def _solve_output_layer(vae: AutoencoderKL, photos: list[torch.Tensor]) -> None:
    """Replace the decoder's last convolution by the ridge least-squares fit of its inputs to the photos."""
    conv = vae.decoder.conv_out
    inputs: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda module, args, output: inputs.append(args[0]))
    try:
        for photo in photos:
            vae.decode(vae.encode(photo[None]).latent_dist.mode())
    finally:
        handle.remove()
    columns = torch.cat([F.unfold(x, conv.kernel_size, padding=conv.padding)[0].T for x in inputs]).double()
    columns = torch.cat([columns, torch.ones(len(columns), 1, dtype=torch.float64)], dim=1)
    targets = torch.cat([p.reshape(3, -1).T for p in photos]).double()
    gram = columns.T @ columns
    gram += FIT_RIDGE * len(columns) * torch.eye(len(gram), dtype=torch.float64)
    solution = torch.linalg.solve(gram, columns.T @ targets)  # (in * k * k + 1, 3)
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape).to(conv.weight.dtype))
    conv.bias.copy_(solution[-1].to(conv.bias.dtype))


def main() -> int:
    """``python -m factory.models.tiny.vae``: fit the tiny FLUX VAE into the cache now (``make setup`` does)."""
    from factory.models.tiny.flux import tiny_flux

    tiny_flux(0)
    print(f"tiny VAE fitted and cached in {cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
