"""Explain: words for every accepted sample, from the VLM.

Each accepted artifact without one gets a local explanation from its triplet (the VLM check usually
wrote one already); the image gets a global explanation written from its artifacts' local ones; and,
with ``curation.negative_explanations``, a negative explanation of why the photo itself is flawless,
seen on ``clean_image`` (the answer for the clean / real image a detector and a VLM train on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents import prompts
from agents.crops import target_mask, triplet_images
from agents.step import Pixels
from agents.vlm.base import VLMBackend, VLMRequest
from shards.record import Sample

if TYPE_CHECKING:  # the config sections' types; agents never import the factory at run time
    from factory.config import CurationConfig


class Explain:
    name = "explain"
    applies_to = "accepted"

    def __init__(self, vlm: VLMBackend, config: CurationConfig):
        self.vlm, self.config = vlm, config

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        self.local(samples, pixels)
        self.global_(samples, pixels)
        if self.config.negative_explanations:
            self.negative(samples, pixels)

    def local(self, samples: list[Sample], pixels: Pixels) -> None:
        requests, targets = [], []
        for sample in samples:
            real, fake = pixels.array(sample), pixels.array(sample, "image")
            for artifact in sample.artifacts:
                if artifact.accepted and not artifact.local_explanation:
                    prompt, schema = prompts.local_explanation(artifact.tool, artifact.entity, artifact.subentity)
                    images = triplet_images(real, fake, target_mask(artifact, real.shape[:2]), self.config.crop_margin,
                                            self.config.triplet_context)
                    requests.append(VLMRequest(prompt, schema, list(images), name="local_explanation"))
                    targets.append(artifact)
        for artifact, answer in zip(targets, self.vlm.generate_json(requests)):
            artifact.local_explanation = answer.value["explanation"] if answer.ok else ""
            artifact.label = artifact.label or artifact.tool

    def global_(self, samples: list[Sample], pixels: Pixels) -> None:
        explained = [(s, [a.local_explanation for a in s.artifacts if a.accepted]) for s in samples]
        explained = [(s, texts) for s, texts in explained if texts]
        answers = self.vlm.generate_json([VLMRequest(*prompts.global_explanation(texts), [pixels.image(s, "image")],
                                                     name="global_explanation") for s, texts in explained])
        for (sample, texts), answer in zip(explained, answers):
            sample.global_explanation = answer.value["explanation"] if answer.ok else " ".join(texts)

    def negative(self, samples: list[Sample], pixels: Pixels) -> None:
        field = lambda s: "clean_image" if s.clean_image else "real_image"  # noqa: E731
        requests = [VLMRequest(*prompts.negative_explanation(s.caption), [pixels.image(s, field(s))],
                               name="negative_explanation") for s in samples]
        for sample, answer in zip(samples, self.vlm.generate_json(requests)):
            sample.negative_explanation = answer.value["explanation"] if answer.ok else ""
