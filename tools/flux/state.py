"""The engine's data: one batch's injection tables (``PreparedState``: the RoPE tables with each target row
holding its reference's, the value index, the rows that take cached values, an empty value cache, for the
processors' shared ``InjectionState``), its inversion (``Inversion``), what each transformer call reads
besides the latent (``Conditioning``), and the result (``EngineResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tools.flux.latents import image_ids
from tools.flux.processor import InjectionState
from tools.flux.settings import InjectionConfig
from tools.grid import Grid


@dataclass
class PreparedState:
    """One batch's injection tables; the processors' shared ``state`` is installed alongside."""

    stock: tuple[torch.Tensor, torch.Tensor]  # (S, D) cos, sin: every token at its own position
    injected: tuple[torch.Tensor, torch.Tensor]  # (B, S, D) cos, sin: target rows hold their reference's
    txt_ids: torch.Tensor  # (text_len, 3)
    img_ids: torch.Tensor  # (rows * cols, 3)
    cache_bytes: int  # value cache size (the slots the denoising reads)
    state: InjectionState


@dataclass
class EngineResult:
    images: np.ndarray  # (B, H, W, 3) uint8: ``raw`` inside the change mask, ``clean`` outside
    change_masks: np.ndarray  # (B, H, W) bool
    raw: np.ndarray  # (B, H, W, 3) uint8, decoded before compositing
    clean: np.ndarray  # (B, H, W, 3) uint8, the VAE reconstruction of the input (decode of its latent)
    cache_bytes: int
    latent_error: float  # mean |z_denoised − z_input| over all tokens (reconstruction, before decoding)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Inversion:
    """A batch inverted: per sample, the latent after each inversion step, on the denoising schedule."""

    trajectory: list[torch.Tensor]  # steps + 1 latents (B, N, 64): σ = 0 (the input), …, 1
    photos: torch.Tensor  # (P, N, 64): each image's input latent (its clean reconstruction)
    sigmas: torch.Tensor  # (steps + 1,): the denoising schedule, 1 → 0
    grid: Grid


@dataclass
class Conditioning:
    """What every transformer call of one pass reads besides the latent: the prompt and position ids."""

    embeds: torch.Tensor  # (B, text_len, T5 width)
    pooled: torch.Tensor  # (B, CLIP width)
    txt_ids: torch.Tensor
    img_ids: torch.Tensor


def prepare_state(transformer, settings: InjectionConfig, value_layers: list[int], device: torch.device,
                  dtype: torch.dtype, batch: int, text_len: int, rows: int, cols: int,
                  targets: list[torch.Tensor], references: list[torch.Tensor]) -> PreparedState:
    """The tables of a batch of ``batch`` samples with ``text_len`` text tokens on a rows × cols grid:
    sample b's ``targets[b]`` cells take the positions (and values) of its ``references[b]`` cells."""
    seq = text_len + rows * cols
    ids = torch.cat([torch.zeros(text_len, 3), image_ids(rows, cols)]).to(device)
    cos, sin = transformer.pos_embed(ids)
    index = torch.arange(seq, device=device).repeat(batch, 1)
    cached_rows = torch.ones(batch, seq, 1, 1, dtype=torch.bool, device=device)
    if settings.cached_value_rows == "background":  # text and targets keep their live V
        cached_rows[:, :text_len] = False
    for b, (t, r) in enumerate(zip(targets, references)):
        if t.numel():
            index[b, text_len + t.to(device)] = text_len + r.to(device)
            if settings.cached_value_rows == "background":
                cached_rows[b, text_len + t.to(device)] = False
    cos_inj, sin_inj = cos[index], sin[index]  # per-sample tables, reference rows in target rows
    slots = settings.value_steps
    cache: list[torch.Tensor] = []
    if value_layers and slots:
        cache_device = device if settings.cache_device in ("auto", str(device.type)) else torch.device(
            settings.cache_device)
        heads, head_dim = transformer.config.num_attention_heads, transformer.config.attention_head_dim
        pin = settings.pin_memory and cache_device.type == "cpu" and torch.cuda.is_available()
        cache = [torch.zeros(slots + 1, batch, seq, heads, head_dim, dtype=dtype, device=cache_device,
                             pin_memory=pin) for _ in value_layers]
    state = InjectionState(
        cos_pe=cos[None].repeat(batch, 1, 1), sin_pe=sin[None].repeat(batch, 1, 1), value_index=index,
        cached_rows=cached_rows, value_gate=torch.zeros(batch, 1, 1, 1, device=device),
        write_slot=torch.tensor(slots, device=device), read_slot=torch.tensor(0, device=device), cache=cache)
    cache_bytes = sum(layer[:slots].numel() * layer.element_size() for layer in cache)
    return PreparedState((cos, sin), (cos_inj, sin_inj), ids[:text_len], ids[text_len:], cache_bytes, state)
