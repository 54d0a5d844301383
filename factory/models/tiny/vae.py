"""The tiny preset's VAE, fitted to reconstruct photos so that its reconstructions look like them.

A randomly initialised ``AutoencoderKL`` decodes every latent to the same kind of coloured noise:
the VAE reconstruction of a photo (``clean_image``, onto which the factory composites artifacts)
would look nothing like the photo, and an artifact region would be noise among noise — nothing a
detector could learn, so the tiny preset could not show the detector learning on ``clean_image``
negatives. The tiny VAE is therefore fitted to the bundled photos (``factory.sources.SAMPLE_PHOTOS``,
at the tiny preset's size: long side ``FIT_SIDE``), in three parts (``FitSettings``):

1. Every residual branch starts at zero (each resnet's last convolution, the attention's output), so the
   network starts as its shallow, nearly linear path through the up/down-sampling convolutions.
2. The first ``distill`` of ``steps`` Adam steps (one-cycle learning rate, random 8-px-aligned crops)
   fit the encoder and the decoder separately against a linear code: the top 16 principal components of
   the photos' 8x8 RGB patches (one patch per latent cell, each component scaled to ``latent_std`` in
   FLUX's scaled latent units). The encoder regresses the code (squared error), the decoder reconstructs
   the crop from the code (L1). The linear code alone reconstructs the photos within 6.5 grey levels;
   fitted end to end from the start, the network spends its steps finding that subspace.
3. The remaining steps fit the round trip (L1); then the decoder's last layer is solved by ridge least
   squares on the whole photos.

Measured (``bench/tiny_vae_fit.py``, one core of a shared 2-core machine): 175 s of fitting; mean |photo -
round trip| 7.9 grey levels over the six photos (astronaut 11.0, chelsea 6.7, coffee 8.6, rocket 5.2,
camera 7.3, coins 8.4), against 10.8 (astronaut 16.0) for 1500 steps of the round trip alone. At 600
steps: 14.5 round trip alone, 13.6 with zeroed residual branches, 10.2 with the code as well (at std 1.0).
Encode+decode of a 192x128 photo: ~41-47 ms on one thread, as before (the architecture is unchanged).

The fit is single-threaded and seeded (the same weights in every process), once per machine; every other
tiny model stays random. Fitted weights are cached under ``FLAWFORGE_CACHE`` (default
``~/.cache/flawforge``), keyed by the VAE's config, the seed, the fit settings and ``FIT_VERSION``, and
written atomically.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file, save_file

FIT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")  # factory.sources.SAMPLE_PHOTOS
FIT_SIDE = 192  # the photos' long side, as the tiny preset's image.max_side


@dataclass(frozen=True)
class FitSettings:
    """How the tiny VAE is fitted (all of it is part of the cache key)."""

    crop: int = 48  # side of the square random crops of the photos (a multiple of 8)
    batch: int = 8  # crops per Adam step
    steps: int = 1500  # Adam steps
    lr: float = 4e-3  # the one-cycle schedule's peak
    ridge: float = 1e-3  # ridge of the least-squares solve of the decoder's output layer
    zero_residuals: bool = True  # start every residual branch (resnet conv2, attention output) at zero
    distill: int = 750  # the first steps fit encoder and decoder separately to/from the photos' PCA patch code
    distill_weight: float = 8.0  # weight of the encoder's squared error to the code (relative to its variance)
    latent_std: float = 0.6  # std of each code component in FLUX's scaled latent units, (z - shift) * scaling:
    # the previous fit's (0.59), which the tiny preset's velocity gain and LPIPS window were set with (at 1.0
    # the tiny distortions measure LPIPS 0.01-0.02, all under the window)


FIT = FitSettings()
FIT_VERSION = 3  # bump when the fit's procedure changes, so that old caches are not reused


def cache_dir() -> Path:
    return Path(os.environ.get("FLAWFORGE_CACHE", Path.home() / ".cache" / "flawforge"))


def fitted_tiny_vae(vae: AutoencoderKL, seed: int) -> AutoencoderKL:
    """Load the fitted weights of ``vae`` (a freshly built tiny VAE) from the cache, or fit and cache them."""
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}  # "_..." keys vary by process
    key = json.dumps({"config": config, "seed": seed, "photos": FIT_PHOTOS, "side": FIT_SIDE, **asdict(FIT),
                      "fit": FIT_VERSION}, sort_keys=True, default=str)
    path = cache_dir() / f"tiny-vae-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # processes starting together fit once; the others wait for it
            if not path.is_file():
                fit(vae, seed)
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


def fit(vae: AutoencoderKL, seed: int, settings: FitSettings = FIT) -> float:
    """Fit ``vae`` in place to the bundled photos; returns the seconds it took."""
    start = time.perf_counter()
    photos = fit_photos()
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float reductions, so the same weights, everywhere
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if settings.zero_residuals:
                _zero_residual_branches(vae)
            optimizer = torch.optim.Adam(vae.parameters(), lr=settings.lr)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                           total_steps=settings.steps, pct_start=0.1)
            code = PatchCode.fit(photos, vae, settings.latent_std) if settings.distill else None
            vae.train()
            for step in range(settings.steps):
                crop = _random_crops(photos, settings, generator)
                latents = vae.encode(crop).latent_dist.mode()
                if step < settings.distill:  # encoder -> PCA code, PCA code -> decoder -> photo
                    target = code.latents(crop)
                    loss = ((vae.decode(target).sample - crop).abs().mean()
                            + settings.distill_weight * ((latents - target) / code.std).square().mean())
                else:  # the round trip
                    loss = (vae.decode(latents).sample - crop).abs().mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            vae.eval()
            _solve_output_layer(vae, photos, settings.ridge)
    finally:
        torch.set_num_threads(threads)
        vae.eval()
    return time.perf_counter() - start


@dataclass
class PatchCode:
    """The photos' linear patch code: the top principal components of their 8x8 RGB patches (one per latent
    cell), each scaled to std ``latent_std / scaling_factor`` around ``shift_factor`` (in VAE latent units)."""

    mean: torch.Tensor  # (192,)
    basis: torch.Tensor  # (192, C)
    scale: torch.Tensor  # (C,) code units per latent unit
    shift: float
    std: float  # each component's std in latent units

    @classmethod
    @torch.no_grad()
    def fit(cls, photos: list[torch.Tensor], vae: AutoencoderKL, latent_std: float) -> PatchCode:
        patches = torch.cat([F.unfold(p[None], 8, stride=8)[0].T for p in photos]).double()
        mean = patches.mean(0)
        _, vectors = torch.linalg.eigh(torch.cov((patches - mean).T))
        basis = vectors[:, -vae.config.latent_channels:].flip(1)
        std = latent_std / vae.config.scaling_factor
        return cls(mean.float(), basis.float(), (((patches - mean) @ basis).std(0) / std).float(),
                   float(vae.config.shift_factor or 0.0), std)

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, C, H/8, W/8) latents."""
        b, _, h, w = images.shape
        patches = F.unfold(images, 8, stride=8).transpose(1, 2)  # (B, L, 192)
        code = (patches - self.mean) @ self.basis / self.scale + self.shift
        return code.transpose(1, 2).reshape(b, -1, h // 8, w // 8)


@torch.no_grad()
def _zero_residual_branches(vae: AutoencoderKL) -> None:
    """Start each residual block as the identity: its last convolution (resnets) or output projection
    (attention) at zero, so the fit starts from the shallow path through the up/down-sampling convs."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import ResnetBlock2D

    for module in vae.modules():
        last = module.conv2 if isinstance(module, ResnetBlock2D) else module.to_out[0] if isinstance(
            module, Attention) else None
        if last is not None:
            last.weight.zero_()
            last.bias.zero_()


def _random_crops(photos: list[torch.Tensor], settings: FitSettings, generator: torch.Generator) -> torch.Tensor:
    """``batch`` random crops, aligned to the 8-px latent cells (the PCA code's patches)."""
    crops = []
    for which in torch.randint(0, len(photos), (settings.batch,), generator=generator).tolist():
        height, width = photos[which].shape[1:]
        y0 = 8 * int(torch.randint(0, (height - settings.crop) // 8 + 1, (1,), generator=generator))
        x0 = 8 * int(torch.randint(0, (width - settings.crop) // 8 + 1, (1,), generator=generator))
        crops.append(photos[which][:, y0:y0 + settings.crop, x0:x0 + settings.crop])
    return torch.stack(crops)


@torch.no_grad()
def _solve_output_layer(vae: AutoencoderKL, photos: list[torch.Tensor], ridge: float) -> None:
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
    gram += ridge * len(columns) * torch.eye(len(gram), dtype=torch.float64)
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
