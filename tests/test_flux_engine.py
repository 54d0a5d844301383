"""The FLUX engine on a tiny random FLUX of the production classes (CPU, fp32)."""

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor
from PIL import Image
from skimage import data

from factory.config import LayerRange, load_config
from factory.models.tiny.flux import tiny_flux
from tools.flux.engine import FluxEngine
from tools.flux.latents import image_ids

EMPTY = torch.tensor([], dtype=torch.long)


def photo(name="astronaut", size=(128, 96)):
    return np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize(size))


def engine(**overrides) -> FluxEngine:
    return FluxEngine(tiny_flux(0), load_config("tiny", overrides={f"injection.{k}": v for k, v in overrides.items()}).injection)


def transformer_inputs(eng, rows=4, cols=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb, pooled = eng.encode_prompt(["a photo of a cat"])
    return dict(hidden_states=torch.randn(1, rows * cols, 64, generator=g), encoder_hidden_states=emb,
                pooled_projections=pooled, timestep=torch.tensor([0.6]), img_ids=image_ids(rows, cols),
                txt_ids=torch.zeros(emb.shape[1], 3), guidance=torch.tensor([3.5]), return_dict=False)


def test_processor_without_injection_equals_stock():
    eng = engine()
    inputs = transformer_inputs(eng, rows=4, cols=6)
    state = eng.prepare_state(1, inputs["encoder_hidden_states"].shape[1], 4, 6, [EMPTY], [EMPTY]).state  # no mapping
    ours = eng.transformer(**inputs)[0]
    eng.transformer.set_attn_processor(FluxAttnProcessor())
    stock = eng.transformer(**inputs)[0]
    assert state is eng.state and (ours - stock).abs().max() <= 1e-6


@pytest.mark.parametrize("solver", ["euler", "fireflow"])
def test_empty_mapping_is_exact_and_reconstruction_improves_with_steps(solver):
    image = photo()[None]
    errors = []
    for steps in (2, 8, 32):
        eng = engine(num_steps=steps, solver=solver, value_steps=0, latent_paste=False, guidance_denoise=1.0)
        result = eng.run(image, *eng.encode_prompt(["a photo"]), [EMPTY], [EMPTY], [0])
        assert not result.change_masks.any() and np.array_equal(result.images, result.clean)
        errors.append(result.latent_error)
    assert errors[0] > errors[1] > errors[2], errors


def test_mapping_changes_only_inside_the_change_mask_and_composites_onto_the_vae_reconstruction():
    image = photo()[None]
    eng = engine()
    result = eng.run(image, *eng.encode_prompt(["a photo of an astronaut"]), [torch.tensor([8, 9, 14])],
                     [torch.tensor([20, 21, 26])], [4])
    mask = result.change_masks[0]
    # No splice: outside the mask the image is the VAE reconstruction (not the camera pixels), so
    # the decoder's fingerprint is everywhere, and exactly the mask differs from the clean image.
    assert mask.any() and np.array_equal(result.images[0][~mask], result.clean[0][~mask])
    assert not np.array_equal(result.clean[0], image[0])
    assert np.array_equal(result.clean[0], eng.decode(eng.encode_images(image), 6, 8)[0])
    assert (result.images[0][mask] != result.clean[0][mask]).mean() > 0.5


def test_change_mask_is_the_dilated_target_cells_and_the_union_of_per_artifact_masks():
    """``change_mask`` is what ``run`` composites with: per artifact it is the label, and the union
    of a sample's per-artifact masks is the engine's change mask for the whole sample."""
    eng = engine(dilation_cells=1)
    image = photo()[None]  # 96 x 128: 6 x 8 cells
    first, second = torch.tensor([9]), torch.tensor([30, 38])
    mask = eng.change_mask(first, 96, 128)
    expected = np.zeros((96, 128), bool)
    expected[0:48, 0:48] = True  # cell (1, 1) and its 8 neighbours
    assert np.array_equal(mask, expected)
    assert not eng.change_mask(EMPTY, 96, 128).any()
    result = eng.run(image, *eng.encode_prompt(["a photo"]), [torch.cat([first, second])],
                     [torch.tensor([27, 22, 46])], [4])
    union = mask | eng.change_mask(second, 96, 128)
    assert np.array_equal(result.change_masks[0], union)
    assert np.array_equal(result.images[0][~union], result.clean[0][~union])


def test_processor_rope_swap_equals_the_img_ids_route():
    all_layers = {"pe_double_blocks": LayerRange(start=0, stop=1, of=1).model_dump(),
                  "pe_single_blocks": LayerRange(start=0, stop=1, of=1).model_dump()}
    eng = engine(value_steps=0, **all_layers)
    rows, cols = 4, 6
    inputs = transformer_inputs(eng, rows, cols)
    targets, refs = torch.tensor([3, 4, 10]), torch.tensor([13, 19, 20])
    text_len = inputs["encoder_hidden_states"].shape[1]
    prepared = eng.prepare_state(1, text_len, rows, cols, [targets], [refs])
    prepared.state.cos_pe.copy_(prepared.injected[0])
    prepared.state.sin_pe.copy_(prepared.injected[1])
    ours = eng.transformer(**inputs)[0]
    swapped = inputs["img_ids"].clone()
    swapped[targets] = inputs["img_ids"][refs]
    eng.transformer.set_attn_processor(FluxAttnProcessor())
    via_ids = eng.transformer(**{**inputs, "img_ids": swapped})[0]
    assert (ours - via_ids).abs().max() <= 1e-5


def test_determinism_and_batch_equals_separate_runs():
    a, b = photo("astronaut")[None], photo("chelsea")[None]
    maps = [(torch.tensor([8, 9]), torch.tensor([30, 31]), 4), (torch.tensor([40, 41, 47]), torch.tensor([2, 3, 4]), 3)]
    eng = engine()
    emb, pooled = eng.encode_prompt(["a photo of an astronaut", "a photo of a cat"])
    together = eng.run(np.concatenate([a, b]), emb, pooled, [m[0] for m in maps], [m[1] for m in maps],
                       [m[2] for m in maps])
    for i, (image, (t, r, pe)) in enumerate(zip((a, b), maps)):
        alone = eng.run(image, emb[i:i + 1], pooled[i:i + 1], [t], [r], [pe])
        again = eng.run(image, emb[i:i + 1], pooled[i:i + 1], [t], [r], [pe])
        assert np.array_equal(alone.images, again.images)  # same inputs, same bytes
        assert np.abs(alone.images[0].astype(int) - together.images[i].astype(int)).max() <= 1


def test_one_inversion_per_image_equals_inverting_for_every_plan():
    """k plans of one image from one inversion (trajectory and value cache shared) = the image repeated k
    times, each inverted for itself — injection and repair alike."""
    images = np.stack([photo("astronaut"), photo("chelsea")])
    plans = [(torch.tensor([8, 9]), torch.tensor([30, 31]), 4), (torch.tensor([40, 41, 47]), torch.tensor([2, 3, 4]), 2),
             (torch.tensor([20]), torch.tensor([26]), 3)]
    targets, refs, pe = ([p[i] for _ in range(2) for p in plans] for i in range(3))
    eng = engine(value_steps=3)
    emb, pooled = eng.encode_prompt(["a photo of an astronaut"] * 3 + ["a photo of a cat"] * 3)
    shared = eng.run(images, emb, pooled, targets, refs, pe, plans_per_image=3)
    each = eng.run(np.repeat(images, 3, axis=0), emb, pooled, targets, refs, pe)
    assert shared.images.shape == each.images.shape == (6, 96, 128, 3)
    assert np.abs(shared.images.astype(int) - each.images.astype(int)).max() <= 1
    assert np.array_equal(shared.clean, each.clean) and np.array_equal(shared.change_masks, each.change_masks)
    assert not np.array_equal(shared.images[0], shared.images[1])  # the plans differ, not just the copies
    repair = engine(value_steps=0)
    cells = [torch.tensor([10, 11, 18])] * 3
    seeds = [5, 6, 7]
    emb, pooled = repair.encode_prompt(["a photo"] * 3)
    shared = repair.repaint(images[:1], emb, pooled, cells, noise_seeds=seeds, plans_per_image=3)
    each = repair.repaint(np.repeat(images[:1], 3, axis=0), emb, pooled, cells, noise_seeds=seeds)
    assert np.abs(shared.images.astype(int) - each.images.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="2 images × 3 plans need 6"):
        eng.run(images, emb, pooled, cells, cells, [0] * 3, plans_per_image=3)


def test_value_cache_holds_only_injecting_layers_and_steps():
    eng = engine(num_steps=4, value_steps=3)
    image = photo()[None]
    emb, pooled = eng.encode_prompt(["a photo"])
    result = eng.run(image, emb, pooled, [torch.tensor([1])], [torch.tensor([2])], [4])
    cfg = eng.transformer.config
    seq = emb.shape[1] + (96 // 16) * (128 // 16)
    layers = len(eng.value_layers)
    assert layers == 2  # single blocks 20-37 of 38 → 2-3 of 4
    assert result.cache_bytes == layers * 3 * 1 * seq * cfg.num_attention_heads * cfg.attention_head_dim * 4


def test_denoising_loop_compiles_once():
    import torch._dynamo as dynamo

    dynamo.reset()
    eng = engine(num_steps=3, value_steps=2)
    compiled = torch.compile(eng.transformer.forward, backend="eager", dynamic=False)
    eng.forward = compiled
    image = photo()[None]
    emb, pooled = eng.encode_prompt(["a photo"])
    with dynamo.config.patch(error_on_recompile=True):
        eng.run(image, emb, pooled, [torch.tensor([5, 6])], [torch.tensor([7, 8])], [3])
        eng.run(image, emb, pooled, [torch.tensor([9])], [torch.tensor([1])], [2])  # new mapping, same graph


def test_positional_injection_switches_per_token_at_each_tools_step():
    """One image, two artifacts: the add's cells keep the swapped RoPE for 4 steps, the fuse's for 2."""
    eng = engine(num_steps=4, value_steps=2)
    image = photo()[None]
    emb, pooled = eng.encode_prompt(["a photo"])
    add_cells, fuse_cells = torch.tensor([5, 6]), torch.tensor([30, 31])
    targets, refs = torch.cat([add_cells, fuse_cells]), torch.tensor([13, 14, 40, 41])
    seen: list[torch.Tensor] = []
    forward = eng.forward

    def recording_forward(**kwargs):
        seen.append(eng.state.cos_pe.clone())
        return forward(**kwargs)

    eng.forward = recording_forward
    eng.run(image, emb, pooled, [targets], [refs], [torch.tensor([4, 4, 2, 2])])
    text_len = emb.shape[1]
    prepared = eng.prepare_state(1, text_len, 6, 8, [targets], [refs])
    stock, injected = prepared.stock, prepared.injected
    for step, cos in enumerate(seen[-4:]):  # the 4 denoising calls (Euler: one per step)
        for cells, limit in ((add_cells, 4), (fuse_cells, 2)):
            rows = text_len + cells
            expected = injected[0][0, rows] if step < limit else stock[0][rows]
            assert torch.equal(cos[0, rows], expected), (step, limit)
        assert not torch.equal(injected[0][0, text_len + fuse_cells], stock[0][text_len + fuse_cells])


def test_text_and_target_rows_keep_their_live_values_by_default():
    eng = engine()
    state = eng.prepare_state(1, 3, 2, 4, [torch.tensor([1, 2])], [torch.tensor([2, 5])]).state
    rows = state.cached_rows[0, :, 0, 0].tolist()
    assert rows == [False] * 3 + [True, False, False, True, True, True, True, True]  # text, then cells 0..7
    eng = engine(cached_value_rows="all")
    assert eng.prepare_state(1, 3, 2, 4, [torch.tensor([1, 2])], [torch.tensor([2, 5])]).state.cached_rows.all()


def test_schnell_is_sampled_without_the_time_shift():
    from tools.flux.latents import shifted_sigmas

    assert load_config("flux-schnell").injection.time_shift is False
    assert load_config("flux-dev").injection.time_shift is True
    plain = shifted_sigmas(4, 1024, shift=False)
    assert torch.allclose(plain, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert not torch.allclose(shifted_sigmas(4, 1024), plain)


def test_a_target_whose_positional_steps_ended_reads_its_own_cached_value():
    """As the authors' model: an artifact's targets leave the injected set when its positional steps end,
    so from then on they read their own cached V (value index = itself, a cached row), while an artifact
    still injecting keeps its reference's. Here: 4 steps, 3 value steps, add 4 positional steps, fuse 2."""
    add_cells, fuse_cells = torch.tensor([5, 6]), torch.tensor([30, 31])
    add_refs, fuse_refs = torch.tensor([13, 14]), torch.tensor([40, 41])
    targets, refs = torch.cat([add_cells, fuse_cells]), torch.cat([add_refs, fuse_refs])
    image = photo()[None]

    def recorded(value_after_pe):
        eng = engine(num_steps=4, value_steps=3, value_after_pe=value_after_pe)
        emb, pooled = eng.encode_prompt(["a photo"])
        seen, forward = [], eng.forward

        def recording_forward(**kwargs):
            seen.append((eng.state.value_index[0].clone(), eng.state.cached_rows[0, :, 0, 0].clone()))
            return forward(**kwargs)

        eng.forward = recording_forward
        eng.run(image, emb, pooled, [targets], [refs], [torch.tensor([4, 4, 2, 2])])
        return emb.shape[1], seen[-4:]  # the 4 denoising calls

    text_len, steps = recorded("own")
    for step, (index, cached) in enumerate(steps):
        assert index[text_len + add_cells].tolist() == (text_len + add_refs).tolist()  # still injecting
        assert not cached[text_len + add_cells].any()
        if step < 2:  # the fuse's positional steps: its reference's V, live
            assert index[text_len + fuse_cells].tolist() == (text_len + fuse_refs).tolist()
            assert not cached[text_len + fuse_cells].any()
        else:  # ended: its own cached V, like the background
            assert index[text_len + fuse_cells].tolist() == (text_len + fuse_cells).tolist()
            assert cached[text_len + fuse_cells].all()
        assert cached[text_len + 0] and not cached[:text_len].any()  # background cached, text live
    _, ours = recorded("reference")
    assert all(index[text_len + fuse_cells].tolist() == (text_len + fuse_refs).tolist() for index, _ in ours)


def test_released_targets_equal_targets_that_never_had_a_reference():
    """With every row cached and no positional steps, a target released from the start reads exactly
    what a target mapped onto itself reads: the outputs are identical; keeping the reference's V differs."""
    image = photo()[None]
    targets, refs, own = torch.tensor([9, 10, 17]), torch.tensor([33, 34, 35]), torch.tensor([9, 10, 17])

    def output(value_after_pe, references):
        eng = engine(num_steps=3, value_steps=3, cached_value_rows="all", value_after_pe=value_after_pe)
        emb, pooled = eng.encode_prompt(["a photo"])
        return eng.run(image, emb, pooled, [targets], [references], [0]).raw

    released = output("own", refs)
    assert np.array_equal(released, output("own", own))
    assert not np.array_equal(released, output("reference", refs))
