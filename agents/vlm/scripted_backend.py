"""Scripted backend: deterministic, schema-valid answers without a model (the tiny preset's VLM).

It answers each request by its ``name`` — ``caption_vocabulary``, ``triplet_<tool>``,
``local_explanation``, ``global_explanation``, ``negative_explanation`` (see ``agents.prompts``) — from a fixed lexicon and
templates, choosing with a generator seeded by ``seed`` and a hash of the request: its name, prompt,
``key`` (what is asked about: the photo, the sample and artifact) and each image's size — never the
pixels' values, so an answer cannot hinge on the last bit of a float (another CPU, another batch): the
same photo always gets the same vocabulary and the same artifact the same verdict. A ``visible_share`` of triplet checks say visible and in the region; the rest fail one or
both, so curation rejects some artifacts. Every answer is validated against the request's schema.
The lexicon is also what the tiny Grounding DINO layout (``factory.models.tiny.layout``) reads to
tell entities from parts.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from agents.vlm.base import VLMRequest, VLMResult, validate

# entity -> (peripheral parts, intermediate parts); every word is in the tiny Grounding DINO's vocabulary
LEXICON: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "person": (("hand", "ear", "eye"), ("arm", "head")),
    "cat": (("ear", "paw", "tail"), ("leg", "head")),
    "dog": (("ear", "paw", "tail"), ("leg", "head")),
    "horse": (("ear", "eye", "tail"), ("leg", "neck")),
    "bird": (("eye", "wing", "tail"), ("head", "neck")),
    "car": (("wheel", "mirror"), ("door",)),
}
ROLES: dict[str, str] = {
    **{part: "peripheral" for peripheral, _ in LEXICON.values() for part in peripheral},
    **{part: "intermediate" for _, intermediate in LEXICON.values() for part in intermediate},
    **{entity: "entity" for entity in LEXICON},
}
ENTITY_COUNTS = (1, 2, 2, 3)  # drawn uniformly: two entities most often
MAX_PERIPHERAL = 2  # per entity; keeps a 3-entity caption within the tiny tokenizer's 32 tokens
MAX_INTERMEDIATE = 1

TRIPLET_TEXTS: dict[str, tuple[tuple[str, str], ...]] = {  # tool -> (explanation, label) choices
    "add": (("An extra part grows out of the body where none should be.", "extra part"),
            ("A duplicated part with its own outline sits next to the original.", "duplicated part")),
    "remove": (("A part that should be there is missing, with no occluder to explain it.", "missing part"),
               ("The part has vanished and the background continues through its place.", "missing part")),
    "distort": (("The part is warped into a shape no real body could take.", "warped part"),
                ("The part is scrambled into misaligned pieces.", "scrambled part")),
    "fuse": (("The two objects melt into each other with no boundary between them.", "fused objects"),
             ("The outlines of the two objects merge into one body.", "merged objects")),
}
FAILED_VERDICTS = ((False, True), (True, False), (False, False))  # (visible, in_region) of a failed check
LOCAL_TEXTS = ("The part has a shape and count that no real object of this kind has.",
               "The structure of this part breaks the anatomy or mechanics of the object.",
               "This region shows a part that is duplicated, missing or deformed.")
GLOBAL_TEXTS = ("The image contains structural flaws: parts that are duplicated, missing, warped or melted together. "
                "They break the anatomy or mechanics a real photo would show.",
                "Some objects in this image are not physically plausible. Their parts are deformed, duplicated "
                "or missing, or two objects merge into one.")
NEGATIVE_TEXTS = ("Every object in this photo has the parts it should have, in the expected number and shape, "
                  "joined where they belong.",
                  "The objects are structurally plausible: no part is duplicated, missing, warped or merged with "
                  "another object.")


class ScriptedBackend:
    """``generate_json`` from a lexicon and templates; deterministic in (seed, request)."""

    def __init__(self, seed: int = 0, visible_share: float = 0.7):
        self.seed, self.visible_share = seed, visible_share
        self.model_id = f"scripted-vlm(seed={seed}, visible_share={visible_share}; not a model)"

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        return [self._answer(request) for request in requests]

    def _answer(self, request: VLMRequest) -> VLMResult:
        rng = np.random.default_rng(self._request_seed(request))
        if request.name == "caption_vocabulary":
            value = self._caption_vocabulary(rng)
        elif request.name.startswith("triplet_") and request.name.removeprefix("triplet_") in TRIPLET_TEXTS:
            value = self._triplet(request.name.removeprefix("triplet_"), rng,
                                  "in_region" in request.schema.get("properties", {}))
        elif request.name == "local_explanation":
            value = {"explanation": LOCAL_TEXTS[rng.integers(len(LOCAL_TEXTS))]}
        elif request.name == "global_explanation":
            value = {"explanation": GLOBAL_TEXTS[rng.integers(len(GLOBAL_TEXTS))]}
        elif request.name == "negative_explanation":
            value = {"explanation": NEGATIVE_TEXTS[rng.integers(len(NEGATIVE_TEXTS))]}
        else:
            return VLMResult(None, "", f"unknown_request: the scripted backend has no answer for {request.name!r}")
        return validate(request.schema, json.dumps(value))

    def _request_seed(self, request: VLMRequest) -> list[int]:
        sizes = [image.size for image in request.images]
        digest = hashlib.sha256(f"{request.name}\n{request.prompt}\n{request.key}\n{sizes}".encode())
        return [self.seed, int.from_bytes(digest.digest()[:8], "little")]

    def _caption_vocabulary(self, rng: np.random.Generator) -> dict:
        names = list(LEXICON)
        count = int(rng.choice(ENTITY_COUNTS))
        chosen = [names[i] for i in rng.choice(len(names), size=count, replace=False)]
        entities = []
        for name in chosen:
            peripheral, intermediate = LEXICON[name]
            k = int(rng.integers(1, min(MAX_PERIPHERAL, len(peripheral)) + 1))
            m = min(MAX_INTERMEDIATE, len(intermediate))
            entities.append({"name": name, "peripheral": _subset(peripheral, k, rng),
                             "intermediate": _subset(intermediate, m, rng)})
        listed = [f"a {name}" for name in chosen]
        objects = listed[0] if count == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]
        return {"caption": f"a photo of {objects}", "entities": entities}

    def _triplet(self, tool: str, rng: np.random.Generator, in_region_asked: bool = True) -> dict:
        explanation, label = TRIPLET_TEXTS[tool][rng.integers(len(TRIPLET_TEXTS[tool]))]
        if rng.random() < self.visible_share:
            visible, in_region = True, True
        else:
            visible, in_region = FAILED_VERDICTS[rng.integers(len(FAILED_VERDICTS))]
        if not in_region_asked:  # a flaw seen outside the region reads as not visible
            return {"visible": visible and in_region, "explanation": explanation, "label": label}
        return {"visible": visible, "in_region": in_region, "explanation": explanation, "label": label}


def _subset(words: tuple[str, ...], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct words, in lexicon order."""
    return [words[i] for i in sorted(rng.choice(len(words), count, replace=False))]
