"""Encode prompt: the photo's caption through FLUX's text encoders (CLIP-L, T5), once per photo,
on the perception actor's GPU; the embeddings travel with the sample to synthesis
(``Sample.prompt_embeds``), so the synthesis GPUs never hold T5-XXL. Used when
``factory.synthesis.text_encoders_in`` is "perception"; otherwise synthesis encodes the caption."""

from __future__ import annotations

import torch

from agents.step import Pixels
from shards.record import Sample
from tools.flux.text import TextEncoders, encode_captions, pack_prompt


class EncodePrompt:
    name = "encode_prompt"
    per_photo = True  # the caption is the photo's

    def __init__(self, encoders: TextEncoders, max_sequence_length: int, dtype: torch.dtype):
        self.encoders, self.max_sequence_length, self.dtype = encoders, max_sequence_length, dtype

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        device = self.encoders.text_encoder_2.device
        embeds, pooled = encode_captions(self.encoders, [s.caption or "a photo" for s in samples],
                                         self.max_sequence_length, device, self.dtype)
        for i, sample in enumerate(samples):
            sample.prompt_embeds = pack_prompt(embeds[i], pooled[i])
