"""Qwen2.5-VL grounding replies (``bbox_2d`` items) taken apart the way ArtiAgent's evaluation does.

A reply holds fenced JSON blocks: a list of ``{"bbox_2d": [x1, y1, x2, y2], "label" | "explanation": ...}``
items, then either a second block ``{"explanation": ...}`` (ArtifactBench's prompt) or plain text
(``shards.export``'s answers); a reply without a block (``shards.export.NO_ARTIFACTS``) is plain text.
Per item, as the official parser: coordinates must be 4 numbers, are truncated to integers
(``int``), clipped to the image when its size is known, and the box is dropped when it is empty
(x2 ≤ x1 or y2 ≤ y1); a malformed item is dropped on its own, the rest of the reply is kept. A block
that is not valid JSON (or a fence left open) makes the reply invalid: no boxes, empty explanation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.S)


@dataclass
class Reply:
    boxes: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # each kept box's text ("explanation", else "label")
    explanation: str = ""  # the global explanation
    valid: bool = True
    malformed_items: int = 0
    degenerate_boxes: int = 0

    @property
    def has_artifacts(self) -> bool:
        return bool(self.boxes)


def _box(item: object, width: int | None, height: int | None) -> list[int] | None | str:
    """The item's truncated, clipped box; None when malformed, "degenerate" when empty."""
    if not isinstance(item, dict) or "bbox_2d" not in item:
        return None
    bbox = item["bbox_2d"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        return None
    try:
        x1, y1, x2, y2 = (int(v) for v in bbox)
    except (ValueError, OverflowError):  # NaN, infinity
        return None
    if width is not None and height is not None:
        x1, x2 = (max(0, min(width, v)) for v in (x1, x2))
        y1, y2 = (max(0, min(height, v)) for v in (y1, y2))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else "degenerate"


def _text(item: dict) -> str:
    value = item.get("explanation", item.get("label", ""))
    return value if isinstance(value, str) else json.dumps(value)


def parse_reply(text: str, width: int | None = None, height: int | None = None) -> Reply:
    """``text`` → boxes (in pixels of an image ``width`` × ``height`` when given), box texts, global explanation."""
    if not isinstance(text, str):
        return Reply(valid=False)
    matches = list(FENCE.finditer(text))
    if text.count("```") % 2:
        return Reply(valid=False)
    if not matches:
        return Reply(explanation=text.strip())
    try:
        blocks = [json.loads(m.group(1)) for m in matches]
    except json.JSONDecodeError:
        return Reply(valid=False)
    items: list = []
    explanation = ""
    if isinstance(blocks[0], list):
        items = blocks[0]
        if len(blocks) > 1:
            second = blocks[1]
            explanation = second.get("explanation", "") if isinstance(second, dict) else ""
        else:
            explanation = (text[:matches[0].start()] + text[matches[0].end():]).strip()
    elif isinstance(blocks[0], dict):
        explanation = blocks[0].get("explanation", "")
    else:
        return Reply(valid=False)
    reply = Reply(explanation=explanation if isinstance(explanation, str) else json.dumps(explanation))
    for item in items:
        box = _box(item, width, height)
        if box is None:
            reply.malformed_items += 1
        elif box == "degenerate":
            reply.degenerate_boxes += 1
        else:
            reply.boxes.append(box)
            reply.texts.append(_text(item))
    return reply
