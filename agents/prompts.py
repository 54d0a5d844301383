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
    "explanation": {"type": "string", "minLength": 1, "maxLength": 240},
    "label": {"type": "string", "minLength": 1, "maxLength": 40},
})
TRIPLET_IN_REGION_SCHEMA = _object({"visible": {"type": "boolean"}, "in_region": {"type": "boolean"},
                                    **{k: v for k, v in TRIPLET_SCHEMA["properties"].items() if k != "visible"}})

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


# One positive and one negative in-context example per tool, described in words (the method's
# authors show example images; we ship no curated example images, so the examples are textual).
TRIPLET_EXAMPLES = {
    "add": ("image 3 shows a second thumb growing from the side of the hand, with its own nail and outline, "
            "where image 2 has one thumb → visible: true, in_region: true",
            "image 3 shows the same hand as image 2, only slightly smoother or blurrier → visible: false"),
    "remove": ("in image 3 the cat has a single ear; where image 2 shows the second ear there is only smooth fur "
               "→ visible: true, in_region: true",
               "in image 3 the wheel is darker than in image 2 but still clearly there → visible: false"),
    "distort": ("in image 3 the arm bends in two places between shoulder and elbow and its outline is broken "
                "→ visible: true, in_region: true",
                "in image 3 the arm has slightly different shading than in image 2 but a plausible shape "
                "→ visible: false"),
    "fuse": ("in image 3 the cup and the hand merge into one surface: the fingers continue into the porcelain "
             "with no edge between them → visible: true, in_region: true",
             "in image 3 the cup touches the hand but a clear edge still separates them → visible: false"),
}


def object_name(entity: str, part: str | None) -> str:
    return f"the {part} of the {entity}" if part else f"the {entity}"


def triplet_check(tool: str, entity: str, part: str | None, in_region: bool = False) -> tuple[str, dict]:
    """The authors' check: (1) the original photo with the edited object blacked out, (2) the real crop,
    (3) the artifact crop, and the object's name; ``in_region`` adds our question whether the flaw lies
    inside the crop."""
    rule = TRIPLET_RULES[tool].format(part=part or entity, entity=entity)
    positive, negative = TRIPLET_EXAMPLES[tool]
    if not in_region:  # the examples' verdicts name only the fields asked for
        positive, negative = positive.replace(", in_region: true", ""), negative
    question = ("'in_region' (does it lie inside the cropped region), " if in_region else "")
    prompt = (
        "You see three images: (1) the original photo with the edited object blacked out, for context; "
        "(2) a tight crop of the real photo at the object; (3) the same crop of the artifact image. "
        f"The object is {object_name(entity, part)}. "
        f"Decide whether this structural flaw is clearly visible: {rule}. "
        f"Example of a flaw that counts: {positive}. Example of one that does not: {negative}. "
        f"Answer 'visible' (is the flaw clearly visible in image 3), {question}a one-sentence 'explanation' of "
        "what is wrong, written for someone looking at image 3 alone, and a short 'label' naming the flaw."
    )
    return prompt, (TRIPLET_IN_REGION_SCHEMA if in_region else TRIPLET_SCHEMA)


def local_explanation(tool: str, entity: str, part: str | None) -> tuple[str, dict]:
    """For artifacts whose check gave no explanation (LPIPS-checked distortions): sees the triplet."""
    prompt = (
        "You see three images: (1) the original photo with the edited object blacked out; (2) a tight crop of "
        f"the real photo; (3) the same crop of the artifact image, where {object_name(entity, part)} has "
        f"a structural flaw ({tool}). In one sentence, written for someone looking at image 3 alone, explain what "
        "is anatomically or physically wrong with it."
    )
    return prompt, EXPLANATION_SCHEMA


def global_explanation(artifacts: list[tuple[list[int], str]]) -> tuple[str, dict]:
    """Sees the artifact image and, as the authors, each artifact's box and description."""
    listed = "\n".join(f"- bbox: {list(box)} description: {text}" for box, text in artifacts)
    prompt = ("The image has these structural flaws (boxes are [x0, y0, x1, y1] in pixels):\n" + listed +
              "\nLooking at the image, write 2 to 3 sentences that explain its flaws to a viewer. "
              "Do not use coordinates.")
    return prompt, EXPLANATION_SCHEMA


def negative_explanation(caption: str, artifact_explanation: str) -> tuple[str, dict]:
    """As the authors: sees (1) the real photo and (2) its artifact image, with the artifact image's
    explanation, and negates it for the photo — the answer a VLM is trained on for the negative images,
    so "no artifacts" is explained as concretely as a flaw."""
    prompt = (f"Image 1 is a real photo ({caption}) with no structural flaws; image 2 is an edited copy with "
              f"flaws, explained as: \"{artifact_explanation}\". Write 1 to 2 sentences that explain to a viewer "
              "why image 1 is structurally plausible, negating that explanation: for each flaw, say that in image "
              "1 the same object and part have the expected count, shape and connections. Do not mention image 2 "
              "or use coordinates.")
    return prompt, EXPLANATION_SCHEMA
