"""Prompts and JSON schemas of every VLM call, in our own words, following the paper's rules.

Every schema is bounded (string lengths, array sizes) so constrained decoding always terminates.
"""

from __future__ import annotations

from typing import Any

PERIPHERAL_EXAMPLES = "hand, finger, ear, eye, paw, tail, wheel, mirror"
INTERMEDIATE_EXAMPLES = "arm, leg, head, face, door"
NAME = {"type": "string", "minLength": 1, "maxLength": 16}  # lowercase is asked for and normalised later


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


CAPTION_VOCABULARY_SCHEMA = _object({
    "caption": {"type": "string", "minLength": 1, "maxLength": 120},
    "entities": {"type": "array", "minItems": 1, "maxItems": 3, "items": _object({
        "name": NAME,
        "peripheral": {"type": "array", "maxItems": 4, "items": NAME},
        "intermediate": {"type": "array", "maxItems": 4, "items": NAME},
    })},
})

TRIPLET_SCHEMA = _object({
    "visible": {"type": "boolean"},
    "in_region": {"type": "boolean"},
    "explanation": {"type": "string", "minLength": 1, "maxLength": 240},
    "label": {"type": "string", "minLength": 1, "maxLength": 40},
})

EXPLANATION_SCHEMA = _object({"explanation": {"type": "string", "minLength": 1, "maxLength": 400}})


def caption_vocabulary() -> tuple[str, dict]:
    prompt = (
        "Look at the photo. Write one sentence describing it, to be used as an image-generation prompt. "
        "Then list up to three clearly visible objects or beings (lowercase nouns). For each, list its parts "
        f"in two groups. 'peripheral': parts with a countable identity that could be duplicated or "
        f"removed ({PERIPHERAL_EXAMPLES}). 'intermediate': larger structural parts that could be warped "
        f"({INTERMEDIATE_EXAMPLES}). Only name parts that are visible and could be outlined; never parts "
        "whose count naturally varies, such as hair, leaves or petals. Use at most 4 lowercase nouns per group."
    )
    return prompt, CAPTION_VOCABULARY_SCHEMA


TRIPLET_RULES = {
    "add": "the artifact image shows a distinct, additional {part} with its own outline that the real photo does not have",
    "remove": "a {part} is missing in the artifact image, and its absence cannot be explained by occlusion or pose",
    "distort": "the {part} is warped or scrambled in a way that no real {entity} could look",
    "fuse": "the two objects ({entity}) are melted together: no continuous boundary separates them any more",
}


def triplet_check(tool: str, entity: str, part: str | None) -> tuple[str, dict]:
    rule = TRIPLET_RULES[tool].format(part=part or entity, entity=entity)
    prompt = (
        "You see three images: (1) the whole artifact image with the edited region blacked out, for context; "
        "(2) a crop of the real photo around the region; (3) the same crop of the artifact image. "
        f"Decide whether this structural flaw is clearly visible: {rule}. "
        "Answer 'visible' (is the flaw clearly visible in image 3), 'in_region' (does it lie inside the cropped "
        "region), a one-sentence 'explanation' of what is wrong, written for someone looking at image 3 alone, "
        "and a short 'label' naming the flaw."
    )
    return prompt, TRIPLET_SCHEMA


def local_explanation(tool: str, entity: str, part: str | None) -> tuple[str, dict]:
    prompt = (f"The crop shows a structural flaw on the {part or entity} of the {entity} ({tool}). "
              "In one sentence, explain what is anatomically or physically wrong.")
    return prompt, EXPLANATION_SCHEMA


def global_explanation(local_explanations: list[str]) -> tuple[str, dict]:
    listed = "\n".join(f"- {text}" for text in local_explanations)
    prompt = ("These structural flaws were found in the image:\n" + listed +
              "\nWrite 2 to 3 sentences that explain the image's flaws to a viewer. Do not use coordinates.")
    return prompt, EXPLANATION_SCHEMA
