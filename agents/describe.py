"""Describe: one VLM call per photo gives the caption (FLUX's prompt) and an entity vocabulary, each
entity with its peripheral and intermediate parts. The vocabulary goes on ``plan["vocabulary"]`` for
grounding; a photo whose answer names no object is rejected."""

from __future__ import annotations

from agents import prompts
from agents.step import Pixels
from agents.vlm.base import VLMBackend, VLMRequest
from shards.record import Sample

# Parts whose count varies naturally: a missing or extra one is not a structural flaw.
VARIABLE_COUNT_PARTS = {"hair", "hairs", "leaf", "leaves", "petal", "petals", "feather", "feathers", "grass"}


def vocabulary(answer: dict) -> list[dict[str, str]]:
    """The VLM's answer → phrases, each with its role (entity / peripheral / intermediate), first role kept."""
    roles: dict[str, str] = {}
    for entity in answer.get("entities", []):
        name = " ".join(entity["name"].lower().split())
        if name:
            roles.setdefault(name, "entity")
        for kind in ("peripheral", "intermediate"):
            for part in entity.get(kind, []):
                part = " ".join(part.lower().split())
                if part and part not in VARIABLE_COUNT_PARTS:
                    roles.setdefault(part, kind)
    return [{"phrase": phrase, "role": role} for phrase, role in roles.items()]


class Describe:
    name = "describe"
    per_photo = True  # the same answer for every seed of a photo

    def __init__(self, vlm: VLMBackend, max_phrases: int):
        self.vlm, self.max_phrases = vlm, max_phrases

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        answers = self.vlm.generate_json([VLMRequest(*prompts.caption_vocabulary(), images=[pixels.image(s)],
                                                     name="caption_vocabulary", key=s.source_id) for s in samples])
        for sample, answer in zip(samples, answers):
            sample.provenance.setdefault("models", {})["vlm"] = self.vlm.model_id  # who answered, even if badly
            if not answer.ok:  # the model's answer is unusable (a transport failure raises instead)
                sample.reject(f"vlm_invalid_answer:{answer.error}"[:300])
                continue
            words = vocabulary(answer.value)
            sample.caption = answer.value["caption"].strip()
            if not any(w["role"] == "entity" for w in words):
                sample.reject("no_entities: the VLM named no object")
                continue
            sample.plan["vocabulary"] = words[: self.max_phrases]
