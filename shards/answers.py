"""Taking an exported answer (``shards.export.answer``) apart again: boxes, labels, explanations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NO_ARTIFACTS = "No artifacts: every object and part in this image is structurally plausible."


@dataclass
class ParsedAnswer:
    """A reply in ``answer``'s format, taken apart; ``valid`` is False when its JSON block does not parse."""

    boxes: list[list[int]]
    labels: list[str]
    explanations: list[str]
    global_explanation: str
    valid: bool = True

    @property
    def has_artifacts(self) -> bool:
        return bool(self.boxes)


def parse_answer(text: str) -> ParsedAnswer:
    """The inverse of ``answer`` for a model's reply: a ```json``` list of ``{"bbox_2d", "label",
    "explanation"}`` then the global explanation. A reply without the block (e.g. ``NO_ARTIFACTS``)
    has no boxes; a block that is not a list of such objects makes the reply invalid (no boxes)."""
    match = re.search(r"```json\s*(.*?)\s*```", text, re.S)
    if not match:
        return ParsedAnswer([], [], [], "" if text.strip() == NO_ARTIFACTS else text.strip())
    rest = (text[:match.start()] + text[match.end():]).strip()
    try:
        items = json.loads(match.group(1))
        boxes = [[int(round(float(v))) for v in item["bbox_2d"]] for item in items]
        if any(len(b) != 4 for b in boxes):
            raise ValueError("bbox_2d needs 4 numbers")
        return ParsedAnswer(boxes, [str(item.get("label", "")) for item in items],
                            [str(item.get("explanation", "")) for item in items], rest)
    except (ValueError, TypeError, KeyError, AttributeError):
        return ParsedAnswer([], [], [], rest, valid=False)
