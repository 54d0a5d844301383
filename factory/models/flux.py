"""FLUX components: the transformer, the VAE and the two text encoders with their tokenizers.

``kind: pretrained`` loads a diffusers FLUX repo (``transformer/``, ``vae/``, ``text_encoder/``,
``text_encoder_2/``, ``tokenizer/``, ``tokenizer_2/``) from a local folder or the HF cache.
``kind: tiny`` builds the same classes with random weights and FLUX's shapes (16 latent channels,
8× VAE, 2×2 packing, RoPE over (index, row, col)), and word-level tokenizers built offline.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import (CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast,
                          T5Config, T5EncoderModel)

from factory.config import ModelsConfig
from factory.models.common import load_pretrained, resolve_device, resolve_dtype, seeded

TINY_WORDS = ("a an the of and with in on at photo picture image person man woman astronaut cat dog car bike "
              "rocket cup coffee coin coins camera tripod hand finger ear eye paw tail wheel mirror arm leg head "
              "face door window sky grass table street red blue green white black small large two one")


@dataclass
class FluxComponents:
    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: PreTrainedTokenizerBase
    text_encoder_2: T5EncoderModel
    tokenizer_2: PreTrainedTokenizerBase
    provenance: dict[str, str] = field(default_factory=dict)


def load_flux(models: ModelsConfig) -> FluxComponents:
    device, dtype = resolve_device(models), resolve_dtype(models)
    if models.flux.kind == "tiny":
        parts = tiny_flux(models.seed)
    else:
        spec = models.flux

        def sub(cls, name, **kw):
            return load_pretrained(f"FLUX {name}", spec, cls.from_pretrained, subfolder=name, **kw)

        from transformers import CLIPTokenizer, T5TokenizerFast

        parts = FluxComponents(
            transformer=sub(FluxTransformer2DModel, "transformer", torch_dtype=dtype),
            vae=sub(AutoencoderKL, "vae", torch_dtype=dtype),
            text_encoder=sub(CLIPTextModel, "text_encoder", torch_dtype=dtype),
            tokenizer=sub(CLIPTokenizer, "tokenizer"),
            text_encoder_2=sub(T5EncoderModel, "text_encoder_2", torch_dtype=dtype),
            tokenizer_2=sub(T5TokenizerFast, "tokenizer_2"),
            provenance={"flux": spec.path or "", "flux_revision": spec.revision or "main"},
        )
    for module in (parts.transformer, parts.vae, parts.text_encoder, parts.text_encoder_2):
        module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return parts


@functools.lru_cache(maxsize=4)
def _tiny_state(seed: int) -> dict:
    with seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
            axes_dims_rope=(4, 4, 8))
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1, norm_num_groups=4, sample_size=64, use_quant_conv=False,
            use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611)
        clip = CLIPTextModel(CLIPTextConfig(vocab_size=128, hidden_size=32, intermediate_size=37,
                                            num_hidden_layers=2, num_attention_heads=4,
                                            max_position_embeddings=77, projection_dim=32, pad_token_id=0,
                                            bos_token_id=2, eos_token_id=2))
        t5 = T5EncoderModel(T5Config(vocab_size=128, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8))
    return {"transformer": transformer, "vae": vae, "clip": clip, "t5": t5}


def tiny_flux(seed: int = 0) -> FluxComponents:
    """Random FLUX of the production classes (fresh copies of a cached build, so callers may move them)."""
    state = _tiny_state(seed)
    tokenizer = tiny_word_tokenizer(TINY_WORDS, model_max_length=77)
    return FluxComponents(
        transformer=copy.deepcopy(state["transformer"]), vae=copy.deepcopy(state["vae"]),
        text_encoder=copy.deepcopy(state["clip"]), tokenizer=tokenizer,
        text_encoder_2=copy.deepcopy(state["t5"]), tokenizer_2=tiny_word_tokenizer(TINY_WORDS, 512),
        provenance={"flux": f"tiny-random(seed={seed})"})


def tiny_word_tokenizer(words: str, model_max_length: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built offline (unknown words map to [UNK]); vocab < 128 ids."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    for word in sorted(set(words.split()) | set(".,:;!?'\"-")):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[EOS]", model_max_length=model_max_length)
