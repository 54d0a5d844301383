"""Explain: words for every accepted sample, from the VLM.

Each accepted artifact without one gets a local explanation from its triplet (the VLM check usually
wrote one already); the image gets a global explanation written from each artifact's box
(``target_bbox``) and local explanation, as the authors; and, with ``curation.negative_explanations``,
a negative explanation of why the photo itself is flawless: as the authors, the VLM sees the real photo
and the artifact image and negates the artifact image's explanation (the answer for the clean / real
image a detector and a VLM train on).
"""

from __future__ import annotations

from agents import prompts
from agents.crops import target_mask, triplet_images
from agents.settings import CurationConfig
from agents.step import Pixels
from agents.vlm.base import VLMBackend, VLMRequest
from shards.record import Sample


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
        explained = [(s, [(a.box(), a.local_explanation) for a in s.artifacts if a.accepted]) for s in samples]
        explained = [(s, items) for s, items in explained if items]
        answers = self.vlm.generate_json([VLMRequest(*prompts.global_explanation(items), [pixels.image(s, "image")],
                                                     name="global_explanation", key=s.sample_id)
                                          for s, items in explained])
        for (sample, items), answer in zip(explained, answers):
            sample.global_explanation = answer.value["explanation"] if answer.ok else " ".join(t for _, t in items)

    def negative(self, samples: list[Sample], pixels: Pixels) -> None:
        requests = [VLMRequest(*prompts.negative_explanation(s.caption, s.global_explanation),
                               [pixels.image(s, "real_image"), pixels.image(s, "image")],
                               name="negative_explanation", key=s.sample_id) for s in samples]
        for sample, answer in zip(samples, self.vlm.generate_json(requests)):
            sample.negative_explanation = answer.value["explanation"] if answer.ok else ""
