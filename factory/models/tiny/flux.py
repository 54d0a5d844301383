"""The tiny FLUX of the production classes, and FLUX.1-dev's architecture with random weights.

``tiny_flux``: FLUX's shapes (16 latent channels, 8× VAE, 2×2 packing, RoPE over (index, row, col)) at a
tiny width with seeded random weights — the VAE alone is fitted (minutes, once per machine) to
reconstruct photos (``factory.models.tiny.vae``) — and real-format tokenizers
(``factory.models.tiny.text_tokenizers``: CLIP's byte-level BPE from the ``tokenizers`` trainer, T5's
Unigram). ``factory.models.tiny.writer`` writes the same models and tokenizers as a diffusers
FLUX folder. ``random_flux_dev``: the full-size architecture for benchmarks, with the tiny tokenizers.
"""

from __future__ import annotations

import copy
import functools

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from factory.models.common import seeded
from factory.models.tiny.text_tokenizers import (CLIP_BOS, CLIP_EOS, CLIP_MAX_LENGTH, tiny_clip_tokenizer, tiny_clip_vocab,
                                                 tiny_t5_tokenizer)
from factory.models.tiny.vae import fitted_tiny_vae
from tools.flux.components import FluxComponents

# The tiny transformer's output layer is scaled by this at build time. At its random init the
# velocities are so small that inversion and denoising nearly cancel: the re-rendered cells differ
# from the reconstruction by a few grey levels, and the tiny preset's "artifacts" would be invisible
# to any detector. With the gain they are clearly visible re-renderings (still meaningless ones).
TINY_VELOCITY_GAIN = 3.0


def random_flux_dev(device: torch.device, dtype: torch.dtype, image: bool = True, text: bool = True,
                    seed: int = 0) -> FluxComponents:
    """FLUX.1-dev's architecture with random weights, built in place on ``device`` (no download, no
    disk): the 12B transformer (19 double + 38 single blocks), the 16-channel VAE, CLIP-L and T5-XXL,
    with the tiny tokenizers (any token ids fit the real vocabularies). For benchmarks only."""
    parts = FluxComponents(None, None, None, None, None, None, {"flux": f"random FLUX.1-dev shapes (seed={seed})"})
    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if image:
                parts.transformer = FluxTransformer2DModel(guidance_embeds=True)
                parts.vae = AutoencoderKL(
                    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                    layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159,
                    scaling_factor=0.3611)
            if text:
                parts.text_encoder = CLIPTextModel(CLIPTextConfig(
                    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                    projection_dim=768, max_position_embeddings=CLIP_MAX_LENGTH))
                parts.text_encoder_2 = T5EncoderModel(T5Config(
                    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    feed_forward_proj="gated-gelu", is_gated_act=True))
                parts.tokenizer, parts.tokenizer_2 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    finally:
        torch.set_default_dtype(previous)
    for module in (parts.transformer, parts.vae, parts.text_encoder, parts.text_encoder_2):
        if module is not None:
            module.eval().requires_grad_(False)
    return parts


@functools.lru_cache(maxsize=4)
def _tiny_state(seed: int) -> dict:
    vocab, _ = tiny_clip_vocab()
    with seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8))
        with torch.no_grad():
            transformer.proj_out.weight.mul_(TINY_VELOCITY_GAIN)
            transformer.proj_out.bias.mul_(TINY_VELOCITY_GAIN)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(16, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1, norm_num_groups=8, sample_size=64, use_quant_conv=False,
            use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=32,
                                            pad_token_id=vocab[CLIP_EOS], bos_token_id=vocab[CLIP_BOS],
                                            eos_token_id=vocab[CLIP_EOS]))
        t5 = T5EncoderModel(T5Config(vocab_size=len(tiny_t5_tokenizer()), d_model=32, d_kv=8, d_ff=37,
                                     num_layers=2, num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                     eos_token_id=1, decoder_start_token_id=0))
    return {"transformer": transformer, "vae": fitted_tiny_vae(vae, seed), "clip": clip, "t5": t5}


def tiny_flux(seed: int = 0) -> FluxComponents:
    """Tiny FLUX of the production classes (fresh copies of a cached build, so callers may move them), in eval
    mode as ``from_pretrained`` returns models: T5's dropout would otherwise make each prompt row differ."""
    state = _tiny_state(seed)
    parts = FluxComponents(
        transformer=copy.deepcopy(state["transformer"]), vae=copy.deepcopy(state["vae"]),
        text_encoder=copy.deepcopy(state["clip"]), tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=copy.deepcopy(state["t5"]), tokenizer_2=tiny_t5_tokenizer(),
        provenance={"flux": f"tiny-random(seed={seed}, fitted VAE)"})
    for module in (parts.transformer, parts.vae, parts.text_encoder, parts.text_encoder_2):
        module.eval().requires_grad_(False)
    return parts
