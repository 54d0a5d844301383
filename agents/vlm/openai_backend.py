"""OpenAI-compatible backend (``vllm serve``, hosted models such as GPT-4o).

Structured output via ``response_format={"type": "json_schema", ...}``; images as base64 data
URLs; at most ``max_concurrency`` requests in flight. Retries are the ``openai`` client's own
(exponential backoff with jitter on connection errors, timeouts, 408 / 409 / 429 / 5xx, honouring
``Retry-After``). When they are used up the call raises ``VLMUnavailableError`` naming the server,
the last error and the true number of attempts: the infrastructure said no, so the samples are
retried later, never rejected. Any other HTTP 4xx (an unknown model, a bad key, a field the server
refuses) is not retried: ``VLMConfigError`` carries the server's own error text. Only the model's
*answer* (a refusal, invalid JSON, a schema violation) becomes a per-request error. Without a model
name (``models.vlm.openai_model`` unset) the backend asks the server's ``/v1/models`` and uses the
one model it serves. The API key comes from an environment variable and never appears in logs or
error strings.
"""

from __future__ import annotations

import base64
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from agents.vlm.base import VLMConfigError, VLMRequest, VLMResult, VLMUnavailableError, validate

log = logging.getLogger("flawforge.vlm.openai")


def data_url(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def retried(status: int) -> bool:
    """HTTP statuses the ``openai`` client retries (the rest of 4xx are answered once)."""
    return status in (408, 409, 429) or status >= 500


def server_text(err) -> str:
    """The server's own error text of an ``openai.APIStatusError`` (OpenAI-style or FastAPI-style body)."""
    body = err.body
    if isinstance(body, dict):
        text = body.get("message") or body.get("detail") or body
    else:
        text = body or err.message
    return " ".join(str(text).split())[:300]


class OpenAIBackend:
    def __init__(self, base_url: str | None, model: str | None, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 4, timeout_s: float = 60.0,
                 max_tokens: int = 384, temperature: float = 0.0):
        from openai import OpenAI

        self._key = os.environ.get(api_key_env) or "EMPTY"  # local servers accept any key
        self.client = OpenAI(base_url=base_url, api_key=self._key, max_retries=max_retries, timeout=timeout_s)
        self._model = model
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.max_tokens, self.temperature = max_tokens, temperature

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self._model!r}, base_url={str(self.client.base_url)!r})"

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    @property
    def model_id(self) -> str:
        """The model name sent to the server: the configured one, else the one model it serves."""
        if self._model is None:
            self._model = self.served_model()
        return self._model

    def served_model(self) -> str:
        """The one model ``/v1/models`` lists; ``VLMConfigError`` when it lists none or several."""
        import openai

        try:
            names = [m.id for m in self.client.models.list()]
        except openai.APIStatusError as err:
            raise self._error(f"GET /models: http_{err.status_code}", err) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise VLMUnavailableError(self._unavailable(f"GET /models: {type(err).__name__}",
                                                        self.max_retries + 1)) from None
        if len(names) != 1:
            raise VLMConfigError(f"VLM server {self.base_url} serves {len(names)} models "
                                 f"({', '.join(names[:5]) or 'none'}): set models.vlm.openai_model to the one to use")
        return names[0]

    def build_messages(self, request: VLMRequest) -> list[dict]:
        content = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in request.images]
        content.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": content}]

    def response_format(self, request: VLMRequest) -> dict:
        return {"type": "json_schema", "json_schema": {"name": request.name.replace(" ", "_")[:64] or "answer",
                                                        "schema": request.schema, "strict": True}}

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        if requests:
            self.model_id  # noqa: B018 — resolved once, before the requests go out in parallel
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
            raise self._error(f"http_{err.status_code}", err) from None
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise VLMUnavailableError(self._unavailable(type(err).__name__, self.max_retries + 1)) from None
        if not response.choices:
            raise VLMUnavailableError(self._unavailable("a response without choices", 1))
        message = response.choices[0].message
        if getattr(message, "refusal", None):
            return VLMResult(None, "", f"refusal: {self._redact(message.refusal)[:200]}")
        return validate(request.schema, message.content or "")

    def _error(self, what: str, err) -> VLMUnavailableError:
        """An HTTP error answer: retried by the client (5xx, 429, ...) or, any other 4xx, a configuration fault."""
        text = self._redact(server_text(err))
        if retried(err.status_code):
            return VLMUnavailableError(self._unavailable(what, self.max_retries + 1, text))
        return VLMConfigError(self._unavailable(what, 1, text))

    def _unavailable(self, what: str, attempts: int, server_says: str = "") -> str:
        return (f"VLM server {self.base_url} ({self._model or 'openai_model unset'}) did not answer: {what} after {attempts} "
                f"attempt{'s' if attempts != 1 else ''}" + (f"; the server said: {server_says}" if server_says else ""))
