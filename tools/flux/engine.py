"""The FLUX engine: invert a photo, then denoise it back while injecting positions and values.

Read top to bottom, ``FluxEngine.run`` is the whole method:

1. VAE-encode the images (``latent_dist.mode()``: deterministic), pack 2×2 into tokens;
2. invert: integrate the latent from σ=0 to σ=1 in fp32 (Euler, or FireFlow's re-used midpoint),
   guidance ``guidance_invert``; value layers write V into the value cache on the steps that the
   denoising will read;
3. denoise from σ=1 back to 0 with ``guidance_denoise``: each target token is rotated with its
   reference token's RoPE for the first ``pe_steps`` steps *of its own artifact* (a per-token gate:
   one image can hold an ``add`` injected for 25 steps and a ``fuse`` for 15), for the first
   ``value_steps`` steps value layers take the cached V of the paired inversion step (reverse
   order) and target tokens the V of their reference — a target whose positional steps ended reads its
   own cached V, as the authors (``value_after_pe: own``); after every step, latents outside the
   dilated target cells are replaced by the inversion trajectory at the same σ (latent paste);
4. decode, and composite onto the *VAE reconstruction* of the input (the decode of its encoded
   latent), never onto camera pixels: outside the change mask (dilated target cells) the output
   *is* that reconstruction, byte for byte. Every pixel of the artifact image then carries the same
   decoder fingerprint — the changed cells cannot be found as "the VAE-decoded blocks" — and every
   pixel that differs from the reconstruction is labelled.

Mappings are per sample: a batch of images of one size with different mappings runs in one
forward. The engine does not know about tools or records: it takes cell index tensors.
``change_mask`` is the one definition of the pixels an injection may change (the label of an
artifact); ``prepare_state`` exposes the per-batch RoPE tables and value cache to tests and
benchmarks. Design: docs/ARCHITECTURE.md, "The FLUX engine".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from tools.flux.latents import image_ids, pack, shifted_sigmas, unpack  # noqa: F401  (re-exported)
from tools.flux.processor import InjectionProcessor, InjectionState, release_ended_targets
from tools.flux.settings import InjectionConfig
from tools.flux.text import encode_captions
from tools.grid import Grid


EMPTY = torch.zeros(0, dtype=torch.long)  # no target cells


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
class PreparedState:
    """One batch's injection tables; the processors' shared ``state`` is installed alongside."""

    stock: tuple[torch.Tensor, torch.Tensor]  # (S, D) cos, sin: every token at its own position
    injected: tuple[torch.Tensor, torch.Tensor]  # (B, S, D) cos, sin: target rows hold their reference's
    txt_ids: torch.Tensor  # (text_len, 3)
    img_ids: torch.Tensor  # (rows * cols, 3)
    cache_bytes: int  # value cache size (the slots the denoising reads)
    state: InjectionState


class FluxEngine:
    """Holds the FLUX modules with our processors installed; ``run`` synthesises a batch."""

    def __init__(self, components, injection: InjectionConfig, device: torch.device | str = "cpu", dtype=torch.float32):
        self.c = components
        self.cfg = injection
        self.device, self.dtype = torch.device(device), dtype
        transformer = components.transformer
        self.pe_double = set(injection.pe_double_blocks.resolve(len(transformer.transformer_blocks)))
        self.pe_single = set(injection.pe_single_blocks.resolve(len(transformer.single_transformer_blocks)))
        self.value_layers = list(injection.value_single_blocks.resolve(len(transformer.single_transformer_blocks)))
        self.state: InjectionState | None = None
        self.processors: dict[str, InjectionProcessor] = {}
        for i in range(len(transformer.transformer_blocks)):
            self.processors[f"transformer_blocks.{i}.attn.processor"] = InjectionProcessor(None, i in self.pe_double)
        for i in range(len(transformer.single_transformer_blocks)):
            slot = self.value_layers.index(i) if i in self.value_layers else None
            self.processors[f"single_transformer_blocks.{i}.attn.processor"] = InjectionProcessor(
                None, i in self.pe_single, slot)
        transformer.set_attn_processor(dict(self.processors))
        self.forward: Callable = transformer.forward  # replace with torch.compile(...) to compile

    # ------------------------------------------------------------------------------ text
    def encode_prompt(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-L pooled embedding and T5 token embeddings of each caption (``tools.flux.text``)."""
        return encode_captions(self.c, captions, self.cfg.max_sequence_length, self.device, self.dtype)

    # ------------------------------------------------------------------------------- VAE
    @torch.no_grad()
    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images).copy()).to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 127.5 - 1.0
        z = self.c.vae.encode(x).latent_dist.mode()
        cfg = self.c.vae.config
        return pack((z.float() - (cfg.shift_factor or 0.0)) * cfg.scaling_factor)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, rows: int, cols: int) -> np.ndarray:
        cfg = self.c.vae.config
        z = unpack(tokens, rows, cols) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        x = self.c.vae.decode(z.to(self.dtype)).sample.float()
        return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    # -------------------------------------------------------------------------- state
    def prepare_state(self, batch: int, text_len: int, rows: int, cols: int,
                      targets: list[torch.Tensor], references: list[torch.Tensor]) -> PreparedState:
        """Build and install the processors' state for a batch: RoPE tables with each target row
        taking its reference's, the value index, the cached rows and an empty value cache."""
        seq = text_len + rows * cols
        ids = torch.cat([torch.zeros(text_len, 3), image_ids(rows, cols)]).to(self.device)
        cos, sin = self.c.transformer.pos_embed(ids)
        index = torch.arange(seq, device=self.device).repeat(batch, 1)
        cached_rows = torch.ones(batch, seq, 1, 1, dtype=torch.bool, device=self.device)
        if self.cfg.cached_value_rows == "background":  # text and targets keep their live V
            cached_rows[:, :text_len] = False
        for b, (t, r) in enumerate(zip(targets, references)):
            if t.numel():
                index[b, text_len + t.to(self.device)] = text_len + r.to(self.device)
                if self.cfg.cached_value_rows == "background":
                    cached_rows[b, text_len + t.to(self.device)] = False
        cos_inj, sin_inj = cos[index], sin[index]  # per-sample tables, reference rows in target rows
        slots = self.cfg.value_steps
        cache: list[torch.Tensor] = []
        if self.value_layers and slots:
            cache_device = self.device if self.cfg.cache_device in ("auto", str(self.device.type)) else torch.device(
                self.cfg.cache_device)
            heads = self.c.transformer.config.num_attention_heads
            head_dim = self.c.transformer.config.attention_head_dim
            pin = self.cfg.pin_memory and cache_device.type == "cpu" and torch.cuda.is_available()
            cache = [torch.zeros(slots + 1, batch, seq, heads, head_dim, dtype=self.dtype, device=cache_device,
                                 pin_memory=pin) for _ in self.value_layers]
        state = InjectionState(
            cos_pe=cos[None].repeat(batch, 1, 1), sin_pe=sin[None].repeat(batch, 1, 1), value_index=index,
            cached_rows=cached_rows, value_gate=torch.zeros(batch, 1, 1, 1, device=self.device),
            write_slot=torch.tensor(slots, device=self.device), read_slot=torch.tensor(0, device=self.device),
            cache=cache)
        self.install(state)
        cache_bytes = sum(layer[:slots].numel() * layer.element_size() for layer in cache)
        return PreparedState((cos, sin), (cos_inj, sin_inj), ids[:text_len], ids[text_len:], cache_bytes, state)

    def install(self, state: InjectionState) -> None:
        """Make ``state`` the one every injection processor reads."""
        for proc in self.processors.values():
            proc.state = state
        self.state = state

    def change_mask(self, cells: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
        """(H, W) bool: the pixels an injection into ``cells`` may change (the cells dilated by
        ``dilation_cells``). ``run`` composites and pastes latents with it; it is an artifact's label."""
        cells = cells.cpu().numpy() if isinstance(cells, torch.Tensor) else np.asarray(cells, dtype=np.int64)
        return Grid.from_image(height, width).pixel_mask(cells, self.cfg.dilation_cells)

    # --------------------------------------------------------------------------- main
    @torch.no_grad()
    def run(self, images: np.ndarray, prompt_embeds: torch.Tensor, pooled: torch.Tensor,
            targets: list[torch.Tensor], references: list[torch.Tensor],
            pe_steps: list[int | torch.Tensor], noise_seeds: list[int] | None = None,
            strength: float = 1.0, plans_per_image: int = 1) -> EngineResult:
        """Synthesise a batch: ``images`` (P, H, W, 3) uint8 of one size, ``plans_per_image`` (k) mappings per
        image, B = P·k samples in image-major order (image i's plans are samples i·k … i·k + k − 1).

        Each image is inverted once: its trajectory and value cache serve all its k plans, so a sample
        costs steps/k + steps transformer passes instead of 2·steps, with the same output as inverting
        it once per plan (up to float rounding of batched kernels). ``prompt_embeds`` / ``pooled`` are per
        sample (B rows; an image's plans share its caption, and the inversion reads the first's).

        ``pe_steps[b]`` is the number of denoising steps with positional injection, one for every
        target cell of sample ``b`` (a tensor aligned with ``targets[b]``) or one for all of them.

        With ``noise_seeds`` (one per sample: repair, not injection), the changed cells restart from a
        fresh Gaussian draw instead of the inverted latent: denoising starts at the first σ ≤
        ``strength`` with those cells at (1 − σ)·z0 + σ·ε (``strength`` 1: pure noise), every other
        cell on the inversion trajectory. Pass targets as their own references, ``pe_steps`` 0 and an
        engine with ``value_steps`` 0 to denoise them afresh with no injection."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        photos, height, width = images.shape[:3]
        plans = plans_per_image
        batch = photos * plans
        if not len(targets) == len(references) == len(pe_steps) == prompt_embeds.shape[0] == batch:
            raise ValueError(f"{photos} images × {plans} plans need {batch} targets, references, pe_steps and prompts")
        grid = Grid.from_image(height, width)
        rows, cols = grid.rows, grid.cols
        steps = self.cfg.num_steps
        sigmas = shifted_sigmas(steps, rows * cols, self.cfg.time_shift).to(self.device)
        z0 = self.encode_images(images)  # (P, N, 64) fp32
        timings["encode"] = time.perf_counter() - start

        prepared = self.prepare_state(batch, prompt_embeds.shape[1], rows, cols, targets, references)
        stock, injected, txt_ids, img_ids = prepared.stock, prepared.injected, prepared.txt_ids, prepared.img_ids
        state = prepared.state
        inverting = state if plans == 1 else self.prepare_state(  # P rows, no mapping: inversion only
            photos, prompt_embeds.shape[1], rows, cols, [EMPTY] * photos, [EMPTY] * photos).state
        changed = np.stack([grid.change_cells(t.cpu().numpy(), self.cfg.dilation_cells) for t in targets])
        keep = torch.from_numpy(~changed.reshape(batch, rows * cols, 1)).to(self.device)  # latent paste

        def transformer(embeds: torch.Tensor, pooled_embeds: torch.Tensor):
            def velocity(z: torch.Tensor, sigma: torch.Tensor, guidance: float) -> torch.Tensor:
                n = z.shape[0]
                out = self.forward(
                    hidden_states=z.to(self.dtype), encoder_hidden_states=embeds, pooled_projections=pooled_embeds,
                    timestep=sigma.expand(n).to(self.dtype), img_ids=img_ids, txt_ids=txt_ids,
                    guidance=torch.full((n,), guidance, device=self.device, dtype=self.dtype)
                    if self.c.transformer.config.guidance_embeds else None,
                    return_dict=False)[0]
                return out.float()
            return velocity

        # ---- inversion, σ: 0 → 1. Denoising step j reads the V of inversion step N-1-j.
        tic = time.perf_counter()
        ascending = sigmas.flip(0)
        inverting.value_gate.zero_()
        inverting.cos_pe.copy_(stock[0].expand_as(inverting.cos_pe))
        inverting.sin_pe.copy_(stock[1].expand_as(inverting.sin_pe))
        velocity = transformer(prompt_embeds[::plans], pooled[::plans])
        trajectory = [z0]
        z = z0.clone()
        carried = None  # FireFlow: the midpoint velocity re-used as the next step's first velocity
        for k in range(steps):
            j = steps - 1 - k
            inverting.write_slot.fill_(j if j < self.cfg.value_steps else self.cfg.value_steps)
            z, carried = self._step(velocity, z, ascending[k], ascending[k + 1], self.cfg.guidance_invert, carried)
            trajectory.append(z)
        z_photos = z0
        if plans > 1:  # every plan of an image starts from its one inversion
            trajectory = [t.repeat_interleave(plans, dim=0) for t in trajectory]
            z0, z = trajectory[0], trajectory[-1].clone()
            for shared, per_plan in zip(inverting.cache, state.cache):
                per_plan.copy_(shared.repeat_interleave(plans, dim=1))
            inverting.cache.clear()  # the shared copy is no longer read
            self.install(state)
        velocity = transformer(prompt_embeds, pooled)
        timings["invert"] = time.perf_counter() - tic

        # ---- denoising, σ: 1 → 0, with injection and latent paste.
        tic = time.perf_counter()
        text_len = prompt_embeds.shape[1]
        pe_limit = torch.zeros(batch, text_len + rows * cols, dtype=torch.long, device=self.device)
        for b, (t, limit) in enumerate(zip(targets, pe_steps)):  # per token: its own artifact's steps
            if t.numel():
                pe_limit[b, text_len + t.to(self.device)] = torch.as_tensor(limit, device=self.device).expand(t.numel())
        state.write_slot.fill_(self.cfg.value_steps)  # scratch: nothing is cached while denoising
        carried, first = None, 0
        if noise_seeds is not None:
            first = int((sigmas[:-1] > strength + 1e-6).sum())
            sigma = sigmas[first]
            fresh = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(int(seed)))
                                 for seed in noise_seeds]).to(self.device)
            z = torch.where(keep, trajectory[steps - first], (1 - sigma) * z0 + sigma * fresh)
        is_target = torch.zeros_like(pe_limit, dtype=torch.bool)  # released once their positional steps end
        for b, t in enumerate(targets if self.cfg.value_after_pe == "own" else []):
            is_target[b, text_len + t.to(self.device)] = True
        injected_rows = (state.value_index.clone(), state.cached_rows.clone())  # while every target injects
        for j in range(first, steps):
            release_ended_targets(state, *injected_rows, is_target & (j >= pe_limit))
            pe_on = (j < pe_limit)[:, :, None]
            state.cos_pe.copy_(torch.where(pe_on, injected[0], stock[0][None]))
            state.sin_pe.copy_(torch.where(pe_on, injected[1], stock[1][None]))
            state.value_gate.fill_(1.0 if j < self.cfg.value_steps else 0.0)
            state.read_slot.fill_(min(j, self.cfg.value_steps))
            z, carried = self._step(velocity, z, sigmas[j], sigmas[j + 1], self.cfg.guidance_denoise, carried)
            if self.cfg.latent_paste:
                z = torch.where(keep, trajectory[steps - 1 - j], z)
        timings["denoise"] = time.perf_counter() - tic

        tic = time.perf_counter()
        raw = self.decode(z, rows, cols)
        clean = np.repeat(self.decode(z_photos, rows, cols), plans, axis=0)
        masks = np.stack([grid.to_pixels(c) for c in changed])  # == change_mask(targets[b], H, W)
        composite = np.where(masks[..., None], raw, clean)
        timings["decode"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - start
        latent_error = float((z - z0).abs().mean())
        return EngineResult(composite, masks, raw, clean, prepared.cache_bytes, latent_error, timings)

    def _step(self, velocity, z, sigma, sigma_next, guidance, carried):
        """One solver step from ``sigma`` to ``sigma_next``; returns (z_next, carried velocity)."""
        dt = sigma_next - sigma
        if self.cfg.solver == "euler":
            return z + dt * velocity(z, sigma, guidance), None
        v = carried if carried is not None else velocity(z, sigma, guidance)
        v_mid = velocity(z + 0.5 * dt * v, sigma + 0.5 * dt, guidance)
        return z + dt * v_mid, v_mid
