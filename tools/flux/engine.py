"""The FLUX engine: invert a photo, then denoise it back while injecting positions and values.

Read top to bottom, ``FluxEngine.run`` is the whole method, in numbered sections:

1. check the inputs and build the injection tables (``tools.flux.state``): per-sample RoPE tables in
   which a target token's row holds its reference token's, the value index and an empty value cache;
2. ``invert``: VAE-encode the images (``latent_dist.mode()``: deterministic), pack 2×2 into tokens, and
   integrate the latent from σ=0 to σ=1 in fp32 (Euler, or FireFlow's re-used midpoint), guidance
   ``guidance_invert``; value layers write V into the value cache on the steps that the denoising
   will read. An image is inverted once for all its plans (``plans_per_image``);
3. ``denoise`` from σ=1 back to 0 with ``guidance_denoise``: each target token is rotated with its
   reference token's RoPE for the first ``pe_steps`` steps *of its own artifact* (a per-token gate:
   one image can hold an ``add`` injected for 25 steps and a ``fuse`` for 15), for the first
   ``value_steps`` steps value layers take the cached V of the paired inversion step (reverse
   order) and target tokens the V of their reference — a target whose positional steps ended reads its
   own cached V, as the authors (``value_after_pe: own``); after every step, latents outside the
   dilated target cells are replaced by the inversion trajectory at the same σ (latent paste);
4. ``composite``: decode, and composite onto the *VAE reconstruction* of the input (the decode of its
   encoded latent), never onto camera pixels: outside the change mask (dilated target cells) the
   output *is* that reconstruction, byte for byte. Every pixel of the artifact image then carries the
   same decoder fingerprint — the changed cells cannot be found as "the VAE-decoded blocks" — and
   every pixel that differs from the reconstruction is labelled.

``repaint`` (the detector's repair) uses the same parts: the cells to repair restart from fresh noise
and are denoised without injection. Mappings are per sample: a batch of images of one size with
different mappings runs in one forward. The engine does not know about tools or records: it takes
cell index tensors. ``change_mask`` is the one definition of the pixels an injection may change (the
label of an artifact). ``compile`` and ``warm_up`` prepare a GPU actor. Design:
docs/ARCHITECTURE.md, "The FLUX engine".
"""

from __future__ import annotations

import time
import numpy as np
import torch

from tools.flux.components import FluxComponents
from tools.flux.latents import decode_tokens, encode_images, shifted_sigmas
from tools.flux.processor import InjectionProcessor, InjectionState, release_ended_targets
from tools.flux.settings import InjectionConfig
from tools.flux.state import Conditioning, EngineResult, Inversion, PreparedState, prepare_state
from tools.flux.text import encode_captions
from tools.grid import Grid

EMPTY = torch.zeros(0, dtype=torch.long)  # no target cells


class FluxEngine:
    """The FLUX transformer with our processors installed, its VAE and text encoders; ``run`` synthesises."""

    def __init__(self, components: FluxComponents, settings: InjectionConfig, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.transformer, self.vae, self.text = components.transformer, components.vae, components
        self.settings = settings
        self.device = torch.device(device) if device is not None else self.transformer.device
        self.dtype = dtype or self.transformer.dtype
        blocks, single = self.transformer.transformer_blocks, self.transformer.single_transformer_blocks
        self.pe_double = set(settings.pe_double_blocks.resolve(len(blocks)))
        self.pe_single = set(settings.pe_single_blocks.resolve(len(single)))
        self.value_layers = list(settings.value_single_blocks.resolve(len(single)))
        self.state: InjectionState | None = None
        self.processors: dict[str, InjectionProcessor] = {}
        for i in range(len(blocks)):
            self.processors[f"transformer_blocks.{i}.attn.processor"] = InjectionProcessor(None, i in self.pe_double)
        for i in range(len(single)):
            slot = self.value_layers.index(i) if i in self.value_layers else None
            self.processors[f"single_transformer_blocks.{i}.attn.processor"] = InjectionProcessor(
                None, i in self.pe_single, slot)
        self.transformer.set_attn_processor(dict(self.processors))
        self.forward = self.transformer.forward  # ``compile`` replaces it

    def compile(self, backend: str = "inductor") -> None:
        """Compile the transformer's forward (the processors' per-step inputs are tensors: one graph)."""
        self.forward = torch.compile(self.transformer.forward, backend=backend)

    def warm_up(self, height: int, width: int, plans: int) -> int:
        """One call on a blank ``height`` × ``width`` photo with ``plans`` one-cell mappings (it compiles a
        compiled transformer); returns the call's peak accelerator memory above what was held before (0 on CPU)."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        config = self.transformer.config
        embeds = torch.zeros(plans, self.settings.max_sequence_length, config.joint_attention_dim,
                             device=self.device, dtype=self.dtype)
        pooled = torch.zeros(plans, config.pooled_projection_dim, device=self.device, dtype=self.dtype)
        self.run(np.full((1, height, width, 3), 127, dtype=np.uint8), embeds, pooled, [torch.tensor([0])] * plans,
                 [torch.tensor([1])] * plans, [1] * plans, plans_per_image=plans)
        if not cuda:
            return 0
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before

    # ----------------------------------------------------------------------- text, VAE
    def encode_prompt(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 token embeddings and CLIP-L pooled embedding of each caption (``tools.flux.text``)."""
        return encode_captions(self.text, captions, self.settings.max_sequence_length, self.device, self.dtype)

    def encode_images(self, images: np.ndarray) -> torch.Tensor:
        return encode_images(self.vae, images, self.device, self.dtype)

    def decode(self, tokens: torch.Tensor, rows: int, cols: int) -> np.ndarray:
        return decode_tokens(self.vae, tokens, rows, cols, self.dtype)

    # -------------------------------------------------------------------------- state
    def prepare_state(self, batch: int, text_len: int, rows: int, cols: int,
                      targets: list[torch.Tensor], references: list[torch.Tensor]) -> PreparedState:
        """Build a batch's injection tables (``tools.flux.state``) and install them in the processors."""
        prepared = prepare_state(self.transformer, self.settings, self.value_layers, self.device, self.dtype, batch,
                                 text_len, rows, cols, targets, references)
        self.install(prepared.state)
        return prepared

    def install(self, state: InjectionState) -> None:
        """Make ``state`` the one every injection processor reads."""
        for proc in self.processors.values():
            proc.state = state
        self.state = state

    def change_mask(self, cells: np.ndarray | torch.Tensor, height: int, width: int) -> np.ndarray:
        """(H, W) bool: the pixels an injection into ``cells`` may change (the cells dilated by
        ``dilation_cells``). ``run`` composites and pastes latents with it; it is an artifact's label."""
        cells = cells.cpu().numpy() if isinstance(cells, torch.Tensor) else np.asarray(cells, dtype=np.int64)
        return Grid.from_image(height, width).pixel_mask(cells, self.settings.dilation_cells)

    # --------------------------------------------------------------------------- main
    @torch.no_grad()
    def run(self, images: np.ndarray, prompt_embeds: torch.Tensor, pooled: torch.Tensor,
            targets: list[torch.Tensor], references: list[torch.Tensor], pe_steps: list[int | torch.Tensor],
            plans_per_image: int = 1) -> EngineResult:
        """Synthesise a batch: ``images`` (P, H, W, 3) uint8 of one size, ``plans_per_image`` (k) mappings per
        image, B = P·k samples in image-major order (image i's plans are samples i·k … i·k + k − 1).

        Each image is inverted once: its trajectory and value cache serve all its k plans, so a sample
        costs steps/k + steps transformer passes instead of 2·steps, with the same output as inverting
        it once per plan (up to float rounding of batched kernels). ``prompt_embeds`` / ``pooled`` are per
        sample (B rows; an image's plans share its caption, and the inversion reads the first's).
        ``pe_steps[b]`` is the number of denoising steps with positional injection, one for every
        target cell of sample ``b`` (a tensor aligned with ``targets[b]``) or one for all of them."""
        timings = {"start": time.perf_counter()}
        # 1. inputs and injection tables
        grid = self._check_inputs(images, prompt_embeds, targets, references, pe_steps, plans_per_image)
        prepared = self.prepare_state(len(targets), prompt_embeds.shape[1], grid.rows, grid.cols, targets, references)
        # 2. inversion, σ: 0 → 1, caching values
        inversion = self.invert(images, prompt_embeds, pooled, prepared, plans_per_image, timings)
        # 3. denoising, σ: 1 → 0, with injection and latent paste
        changed = np.stack([grid.change_cells(t.cpu().numpy(), self.settings.dilation_cells) for t in targets])
        z = self.denoise(inversion, prompt_embeds, pooled, prepared, targets, pe_steps, changed, timings)
        # 4. decode and composite onto the reconstruction
        return self.composite(inversion, z, changed, plans_per_image, prepared.cache_bytes, timings)

    @torch.no_grad()
    def repaint(self, images: np.ndarray, prompt_embeds: torch.Tensor, pooled: torch.Tensor,
                cells: list[torch.Tensor], noise_seeds: list[int], strength: float = 1.0,
                plans_per_image: int = 1) -> EngineResult:
        """Repair: each sample's ``cells`` restart from a fresh Gaussian draw (``noise_seeds``, one per sample)
        instead of the inverted latent. Denoising starts at the first σ ≤ ``strength`` with those cells at
        (1 − σ)·z0 + σ·ε (``strength`` 1: pure noise), every other cell on the inversion trajectory; the cells
        are their own references with no positional steps (an engine with ``value_steps`` 0 injects nothing)."""
        timings = {"start": time.perf_counter()}
        no_pe = [0] * len(cells)
        grid = self._check_inputs(images, prompt_embeds, cells, cells, no_pe, plans_per_image)
        prepared = self.prepare_state(len(cells), prompt_embeds.shape[1], grid.rows, grid.cols, cells, cells)
        inversion = self.invert(images, prompt_embeds, pooled, prepared, plans_per_image, timings)
        changed = np.stack([grid.change_cells(t.cpu().numpy(), self.settings.dilation_cells) for t in cells])
        first = int((inversion.sigmas[:-1] > strength + 1e-6).sum())
        sigma, z0 = inversion.sigmas[first], inversion.trajectory[0]
        fresh = torch.stack([torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(int(seed)))
                             for seed in noise_seeds]).to(self.device)
        keep = self._kept_tokens(changed)
        z = torch.where(keep, inversion.trajectory[self.settings.num_steps - first], (1 - sigma) * z0 + sigma * fresh)
        z = self.denoise(inversion, prompt_embeds, pooled, prepared, cells, no_pe, changed, timings, first, z)
        return self.composite(inversion, z, changed, plans_per_image, prepared.cache_bytes, timings)

    def _check_inputs(self, images: np.ndarray, prompt_embeds: torch.Tensor, targets: list, references: list,
                      pe_steps: list, plans: int) -> Grid:
        photos, height, width = images.shape[:3]
        if not len(targets) == len(references) == len(pe_steps) == prompt_embeds.shape[0] == photos * plans:
            raise ValueError(f"{photos} images × {plans} plans need {photos * plans} targets, references, pe_steps "
                             "and prompts")
        return Grid.from_image(height, width)

    def _kept_tokens(self, changed: np.ndarray) -> torch.Tensor:
        """(B, N, 1) bool: the tokens outside each sample's changed cells (latent paste keeps them)."""
        return torch.from_numpy(~changed.reshape(changed.shape[0], -1, 1)).to(self.device)

    def invert(self, images: np.ndarray, prompt_embeds: torch.Tensor, pooled: torch.Tensor, prepared: PreparedState,
               plans: int, timings: dict[str, float]) -> Inversion:
        """Encode and invert each image once (its first plan's prompt); value layers fill the value cache."""
        tic = time.perf_counter()
        photos, height, width = images.shape[:3]
        grid, steps, value_steps = Grid.from_image(height, width), self.settings.num_steps, self.settings.value_steps
        sigmas = shifted_sigmas(steps, grid.rows * grid.cols, self.settings.time_shift).to(self.device)
        z0 = self.encode_images(images)  # (P, N, 64) fp32
        timings["encode"] = time.perf_counter() - tic
        tic = time.perf_counter()
        state = prepared.state
        inverting = state if plans == 1 else self.prepare_state(  # P rows, no mapping: inversion only
            photos, prompt_embeds.shape[1], grid.rows, grid.cols, [EMPTY] * photos, [EMPTY] * photos).state
        inverting.value_gate.zero_()
        inverting.cos_pe.copy_(prepared.stock[0].expand_as(inverting.cos_pe))
        inverting.sin_pe.copy_(prepared.stock[1].expand_as(inverting.sin_pe))
        condition = Conditioning(prompt_embeds[::plans], pooled[::plans], prepared.txt_ids, prepared.img_ids)
        ascending = sigmas.flip(0)  # denoising step j reads the V of inversion step N-1-j
        trajectory, z, carried = [z0], z0.clone(), None  # carried: FireFlow's re-used midpoint velocity
        for k in range(steps):
            j = steps - 1 - k
            inverting.write_slot.fill_(j if j < value_steps else value_steps)
            z, carried = self._step(z, ascending[k], ascending[k + 1], self.settings.guidance_invert, carried,
                                    condition)
            trajectory.append(z)
        if plans > 1:  # every plan of an image starts from its one inversion
            trajectory = [t.repeat_interleave(plans, dim=0) for t in trajectory]
            for shared, per_plan in zip(inverting.cache, state.cache):
                per_plan.copy_(shared.repeat_interleave(plans, dim=1))
            inverting.cache.clear()  # the shared copy is no longer read
            self.install(state)
        timings["invert"] = time.perf_counter() - tic
        return Inversion(trajectory, z0, sigmas, grid)

    def denoise(self, inversion: Inversion, prompt_embeds: torch.Tensor, pooled: torch.Tensor,
                prepared: PreparedState, targets: list[torch.Tensor], pe_steps: list[int | torch.Tensor],
                changed: np.ndarray, timings: dict[str, float], first: int = 0,
                z: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise from step ``first`` (from ``z``, default the inverted latent) with per-token positional
        injection, value injection for ``value_steps`` steps and latent paste outside ``changed``."""
        tic = time.perf_counter()
        state, steps, settings = prepared.state, self.settings.num_steps, self.settings
        trajectory, sigmas = inversion.trajectory, inversion.sigmas
        text_len, batch = prompt_embeds.shape[1], len(targets)
        keep = self._kept_tokens(changed)
        pe_limit = torch.zeros(batch, state.value_index.shape[1], dtype=torch.long, device=self.device)
        for b, (t, limit) in enumerate(zip(targets, pe_steps)):  # per token: its own artifact's steps
            if t.numel():
                pe_limit[b, text_len + t.to(self.device)] = torch.as_tensor(limit, device=self.device).expand(t.numel())
        state.write_slot.fill_(settings.value_steps)  # scratch: nothing is cached while denoising
        is_target = torch.zeros_like(pe_limit, dtype=torch.bool)  # released once their positional steps end
        for b, t in enumerate(targets if settings.value_after_pe == "own" else []):
            is_target[b, text_len + t.to(self.device)] = True
        injected_rows = (state.value_index.clone(), state.cached_rows.clone())  # while every target injects
        condition = Conditioning(prompt_embeds, pooled, prepared.txt_ids, prepared.img_ids)
        z, carried = trajectory[-1] if z is None else z, None
        for j in range(first, steps):
            release_ended_targets(state, *injected_rows, is_target & (j >= pe_limit))
            pe_on = (j < pe_limit)[:, :, None]
            state.cos_pe.copy_(torch.where(pe_on, prepared.injected[0], prepared.stock[0][None]))
            state.sin_pe.copy_(torch.where(pe_on, prepared.injected[1], prepared.stock[1][None]))
            state.value_gate.fill_(1.0 if j < settings.value_steps else 0.0)
            state.read_slot.fill_(min(j, settings.value_steps))
            z, carried = self._step(z, sigmas[j], sigmas[j + 1], settings.guidance_denoise, carried, condition)
            if settings.latent_paste:
                z = torch.where(keep, trajectory[steps - 1 - j], z)
        timings["denoise"] = time.perf_counter() - tic
        return z

    def composite(self, inversion: Inversion, z: torch.Tensor, changed: np.ndarray, plans: int, cache_bytes: int,
                  timings: dict[str, float]) -> EngineResult:
        """Decode ``z`` and paste it onto the reconstruction inside each sample's change mask."""
        tic = time.perf_counter()
        grid = inversion.grid
        raw = self.decode(z, grid.rows, grid.cols)
        clean = np.repeat(self.decode(inversion.photos, grid.rows, grid.cols), plans, axis=0)
        masks = np.stack([grid.to_pixels(c) for c in changed])  # == change_mask(targets[b], H, W)
        images = np.where(masks[..., None], raw, clean)
        timings["decode"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - timings.pop("start")
        latent_error = float((z - inversion.trajectory[0]).abs().mean())
        return EngineResult(images, masks, raw, clean, cache_bytes, latent_error, timings)

    def velocity(self, z: torch.Tensor, sigma: torch.Tensor, guidance: float, condition: Conditioning) -> torch.Tensor:
        """The transformer's velocity at ``sigma`` (fp32)."""
        n = z.shape[0]
        embedded_guidance = (torch.full((n,), guidance, device=self.device, dtype=self.dtype)
                             if self.transformer.config.guidance_embeds else None)
        out = self.forward(hidden_states=z.to(self.dtype), encoder_hidden_states=condition.embeds,
                           pooled_projections=condition.pooled, timestep=sigma.expand(n).to(self.dtype),
                           img_ids=condition.img_ids, txt_ids=condition.txt_ids, guidance=embedded_guidance,
                           return_dict=False)[0]
        return out.float()

    def _step(self, z, sigma, sigma_next, guidance, carried, condition: Conditioning):
        """One solver step from ``sigma`` to ``sigma_next``; returns (z_next, carried velocity)."""
        dt = sigma_next - sigma
        if self.settings.solver == "euler":
            return z + dt * self.velocity(z, sigma, guidance, condition), None
        v = carried if carried is not None else self.velocity(z, sigma, guidance, condition)
        v_mid = self.velocity(z + 0.5 * dt * v, sigma + 0.5 * dt, guidance, condition)
        return z + dt * v_mid, v_mid
