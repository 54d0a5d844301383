"""FLUX's prompt: CLIP-L's pooled embedding and T5's token embeddings of a caption, and their
transport form (one sample's pair as safetensors bytes), so the text encoders can run in another
stage than the transformer (perception, keeping T5-XXL's ~9.5 GB off the synthesis GPU)."""

from __future__ import annotations

from typing import Protocol

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors


class TextEncoders(Protocol):
    """The four text parts of a FLUX pipeline (``tools.flux.components.FluxComponents`` has them)."""

    text_encoder: torch.nn.Module
    tokenizer: object
    text_encoder_2: torch.nn.Module
    tokenizer_2: object


@torch.no_grad()
def encode_captions(encoders: TextEncoders, captions: list[str], max_sequence_length: int,
                    device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, max_sequence_length, T5 width) token embeddings and (B, CLIP width) pooled embeddings."""
    clip_tokenizer = encoders.tokenizer
    clip = clip_tokenizer(captions, padding="max_length", max_length=min(77, clip_tokenizer.model_max_length),
                          truncation=True, return_tensors="pt")
    pooled = encoders.text_encoder(clip.input_ids.to(encoders.text_encoder.device)).pooler_output
    t5 = encoders.tokenizer_2(captions, padding="max_length", max_length=max_sequence_length,
                              truncation=True, return_tensors="pt")
    embeds = encoders.text_encoder_2(t5.input_ids.to(encoders.text_encoder_2.device)).last_hidden_state
    return embeds.to(device, dtype), pooled.to(device, dtype)


def pack_prompt(embeds: torch.Tensor, pooled: torch.Tensor) -> bytes:
    """One caption's (tokens, width) embeddings and (width,) pooled embedding → bytes."""
    return save_tensors({"embeds": embeds.contiguous().cpu(), "pooled": pooled.contiguous().cpu()})


def unpack_prompts(blobs: list[bytes], device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of ``pack_prompt`` for a batch: (B, tokens, width) and (B, width)."""
    parts = [load_tensors(blob) for blob in blobs]
    embeds = torch.stack([p["embeds"] for p in parts]).to(device, dtype)
    pooled = torch.stack([p["pooled"] for p in parts]).to(device, dtype)
    return embeds, pooled
