"""FLUX's latent layout and schedule: 2x2 token packing, image position ids, the shifted sigmas, and
the VAE round trip between uint8 images and packed latents."""

from __future__ import annotations

import math

import numpy as np
import torch


def shifted_sigmas(num_steps: int, image_tokens: int, shift: bool = True) -> torch.Tensor:
    """FLUX's schedule: linspace(1, 1/N, N), time-shifted by mu (linear in token count) unless
    ``shift`` is off (FLUX.1-schnell is sampled unshifted), then 0."""
    sigmas = torch.linspace(1.0, 1.0 / num_steps, num_steps, dtype=torch.float64)
    if shift:
        mu = 0.5 + (1.15 - 0.5) * (image_tokens - 256) / (4096 - 256)
        sigmas = math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)]).float()


def pack(latents: torch.Tensor) -> torch.Tensor:
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    b, _, c4 = tokens.shape
    return tokens.view(b, rows, cols, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, rows * 2, cols * 2)


def image_ids(rows: int, cols: int) -> torch.Tensor:
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


@torch.no_grad()
def encode_images(vae, images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, N, 64) fp32 packed latents: the VAE's ``latent_dist.mode()`` (deterministic),
    shifted and scaled as FLUX's pipeline does."""
    x = torch.from_numpy(np.ascontiguousarray(images).copy()).to(device).permute(0, 3, 1, 2).to(dtype) / 127.5 - 1.0
    z = vae.encode(x).latent_dist.mode()
    cfg = vae.config
    return pack((z.float() - (cfg.shift_factor or 0.0)) * cfg.scaling_factor)


@torch.no_grad()
def decode_tokens(vae, tokens: torch.Tensor, rows: int, cols: int, dtype: torch.dtype) -> np.ndarray:
    """The inverse of ``encode_images``: packed latents → (B, H, W, 3) uint8."""
    cfg = vae.config
    z = unpack(tokens, rows, cols) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
    x = vae.decode(z.to(dtype)).sample.float()
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
