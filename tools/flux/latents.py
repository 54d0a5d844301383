"""FLUX's latent layout and schedule: 2x2 token packing, image position ids, the shifted sigmas."""

from __future__ import annotations

import math

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
