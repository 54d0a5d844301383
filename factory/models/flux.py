"""FLUX components: the transformer, the VAE and the two text encoders with their tokenizers.

``kind: pretrained`` loads a diffusers FLUX repo (``transformer/``, ``vae/``, ``text_encoder/``,
``text_encoder_2/``, ``tokenizer/``, ``tokenizer_2/``) from a local folder or the HF cache.
``kind: tiny`` (tests, the demo) and ``kind: random`` (FLUX.1-dev's shapes with random weights,
benchmarks) come from ``factory.models.tiny.flux``. ``float8_transformer`` puts a loaded transformer's
linear layers in float8.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from factory.config import ModelsConfig
from factory.models.common import load_pretrained, resolve_device, resolve_dtype
from tools.flux.components import FluxComponents


def load_flux(models: ModelsConfig, image: bool = True, text: bool = True) -> FluxComponents:
    """The transformer and VAE (``image``) and the text encoders with their tokenizers (``text``)."""
    device, dtype = resolve_device(models), resolve_dtype(models)
    if models.flux.kind == "tiny":
        from factory.models.tiny.flux import tiny_flux

        parts = tiny_flux(models.seed)
    elif models.flux.kind == "random":
        from factory.models.tiny.flux import random_flux_dev

        parts = random_flux_dev(device, dtype, image=image, text=text, seed=models.seed)
    else:
        spec = models.flux

        def sub(cls, name, wanted, **kw):
            return load_pretrained(f"FLUX {name}", spec, cls.from_pretrained, subfolder=name, **kw) if wanted else None

        parts = FluxComponents(
            transformer=sub(FluxTransformer2DModel, "transformer", image, dtype=dtype),
            vae=sub(AutoencoderKL, "vae", image, dtype=dtype),
            text_encoder=sub(CLIPTextModel, "text_encoder", text, dtype=dtype),
            tokenizer=sub(CLIPTokenizer, "tokenizer", text),
            text_encoder_2=sub(T5EncoderModel, "text_encoder_2", text, dtype=dtype),
            tokenizer_2=sub(T5TokenizerFast, "tokenizer_2", text),
            provenance={"flux": spec.path or "", "flux_revision": spec.revision or "main"},
        )
    if not image:
        parts.transformer = parts.vae = None
    if not text:
        parts.text_encoder = parts.tokenizer = parts.text_encoder_2 = parts.tokenizer_2 = None
    for module in (parts.transformer, parts.vae, parts.text_encoder, parts.text_encoder_2):
        if module is not None:
            place(module, device, dtype)
    return parts


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a loaded module to ``device`` in eval mode; cast it only when it is not in ``dtype`` yet.

    Pretrained parts are loaded in ``dtype`` (``from_pretrained(dtype=...)``, which keeps a model's
    float32 modules where it declares any), so only the tiny float32 builds need a cast. Diffusers'
    ``ModelMixin.to`` warns about "modules that should be kept in float32" on every cast with a dtype,
    even for models that declare none, so a model that declares none is cast as a plain module."""
    if module.dtype != dtype:
        if getattr(module, "_keep_in_fp32_modules", None):
            module.to(dtype=dtype)  # the library knows what to keep: let it warn
        else:
            torch.nn.Module.to(module, dtype=dtype)
    module.to(device=device).eval().requires_grad_(False)


def float8_transformer(transformer: FluxTransformer2DModel) -> None:
    """Float8 weights and dynamically scaled float8 activations in every linear layer (torchao), in place.
    Needs a GPU with float8 tensor cores (compute capability 8.9+: H100, L40S) and the ``fp8`` extra."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        raise RuntimeError("factory.synthesis.fp8 needs a CUDA GPU with float8 support (compute capability 8.9+)")
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    except ImportError:
        raise RuntimeError("factory.synthesis.fp8 needs torchao: pip install '.[fp8]'") from None
    quantize_(transformer, Float8DynamicActivationFloat8WeightConfig())
