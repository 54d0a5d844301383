"""A FLUX pipeline's named parts, as diffusers' ``FluxPipeline`` takes them: the transformer, the VAE, and
CLIP-L and T5 with their tokenizers. ``factory.models.flux`` loads them; a part not loaded is None."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextModel, PreTrainedTokenizerBase, T5EncoderModel


@dataclass
class FluxComponents:
    transformer: FluxTransformer2DModel | None
    vae: AutoencoderKL | None
    text_encoder: CLIPTextModel | None
    tokenizer: PreTrainedTokenizerBase | None
    text_encoder_2: T5EncoderModel | None
    tokenizer_2: PreTrainedTokenizerBase | None
    provenance: dict[str, str] = field(default_factory=dict)
