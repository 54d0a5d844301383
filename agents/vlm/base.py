"""One VLM interface for every backend: ``generate_json(requests) -> results``.

A request is images + prompt + JSON schema; a result is the validated object, or what is wrong
with the model's *answer* (invalid JSON, schema violation, refusal) plus the raw text — a data
outcome, the batch goes on. A backend that cannot answer at all (server unreachable, 5xx or
timeouts after its retries, an engine error) raises ``VLMUnavailableError`` or lets its exception
propagate: that is an infrastructure failure, and the sample is retried, never rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema
from PIL import Image


class VLMUnavailableError(RuntimeError):
    """The VLM could not be reached or did not answer; the message names where and why."""


class VLMConfigError(VLMUnavailableError):
    """The VLM server refused the request itself (an HTTP 4xx: unknown model, bad key, a field it does
    not accept): retrying cannot help, the configuration must change. The message holds the server's text."""


@dataclass
class VLMRequest:
    prompt: str
    schema: dict[str, Any]
    images: list[Image.Image] = field(default_factory=list)
    name: str = "request"  # which prompt, for logs and error messages
    key: str = ""  # what is asked about (a photo, a sample's artifact): seeds the scripted backend; models ignore it


@dataclass
class VLMResult:
    value: dict[str, Any] | None
    raw: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.value is not None


class VLMBackend(Protocol):
    model_id: str

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]: ...


def validate(schema: dict[str, Any], text: str) -> VLMResult:
    """Parse and validate one answer against its schema."""
    try:
        value = json.loads(text, strict=False)  # constrained decoders may emit raw control characters
    except json.JSONDecodeError as err:
        return VLMResult(None, text, f"invalid_json: {err.msg} at {err.pos}")
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as err:
        return VLMResult(None, text, f"schema_violation: {err.message[:200]}")
    return VLMResult(value, text, None)
