"""OpenAI-compatible backend (``vllm serve``, hosted models such as GPT-4o).

Structured output via ``response_format={"type": "json_schema", ...}``; images as base64 data
URLs; at most ``max_concurrency`` requests in flight. Retries are the ``openai`` client's own
(exponential backoff with jitter on connection errors, timeouts, 408 / 409 / 429 / 5xx, honouring
``Retry-After``). When they are used up, or the server answers any other HTTP error, the call
raises ``VLMUnavailableError`` naming the server and the last error: the infrastructure said no,
so the samples are retried later, never rejected. Only the model's *answer* (a refusal, invalid
JSON, a schema violation) becomes a per-request error. The API key comes from an environment
variable and never appears in logs or error strings.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from agents.vlm.base import VLMRequest, VLMResult, VLMUnavailableError, validate

log = logging.getLogger("flawforge.vlm.openai")


def data_url(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIBackend:
    def __init__(self, base_url: str | None, model: str, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 4, timeout_s: float = 60.0,
                 max_tokens: int = 384, temperature: float = 0.0):
        from openai import OpenAI

        self._key = os.environ.get(api_key_env) or "EMPTY"  # local servers accept any key
        self.client = OpenAI(base_url=base_url, api_key=self._key, max_retries=max_retries, timeout=timeout_s)
        self.model_id = model
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.max_tokens, self.temperature = max_tokens, temperature

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_id!r}, base_url={str(self.client.base_url)!r})"

    def build_messages(self, request: VLMRequest) -> list[dict]:
        content = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in request.images]
        content.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": content}]

    def response_format(self, request: VLMRequest) -> dict:
        return {"type": "json_schema", "json_schema": {"name": request.name.replace(" ", "_")[:64] or "answer",
                                                        "schema": request.schema, "strict": True}}

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self._one, requests))

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key != "EMPTY" else text

    def _one(self, request: VLMRequest) -> VLMResult:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model_id, messages=self.build_messages(request),
                response_format=self.response_format(request), max_tokens=self.max_tokens,
                temperature=self.temperature)
        except openai.APIStatusError as err:
            raise VLMUnavailableError(self._unavailable(f"http_{err.status_code}")) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise VLMUnavailableError(self._unavailable(type(err).__name__)) from None
        if not response.choices:
            raise VLMUnavailableError(self._unavailable("a response without choices"))
        message = response.choices[0].message
        if getattr(message, "refusal", None):
            return VLMResult(None, "", f"refusal: {self._redact(message.refusal)[:200]}")
        return validate(request.schema, message.content or "")

    def _unavailable(self, what: str) -> str:
        return (f"VLM server {self.client.base_url} ({self.model_id}) did not answer: {what} "
                f"after {self.max_retries + 1} attempts")
