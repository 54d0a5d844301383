"""OpenAI-compatible backend (``vllm serve``, hosted models such as GPT-4o).

Structured output via ``response_format={"type": "json_schema", ...}``; images as base64 data
URLs; at most ``max_concurrency`` requests in flight; retries with exponential backoff and jitter
on 429 / 5xx / timeouts / connection errors (honouring ``Retry-After``). The API key comes from an
environment variable and never appears in logs or error strings.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

from agents.vlm.base import VLMRequest, VLMResult, validate

log = logging.getLogger("flawforge.vlm.openai")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def data_url(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAIBackend:
    def __init__(self, base_url: str | None, model: str, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 4, timeout_s: float = 60.0,
                 max_tokens: int = 384, temperature: float = 0.0, backoff_s: float = 0.5):
        from openai import OpenAI

        self._key = os.environ.get(api_key_env) or "EMPTY"  # local servers accept any key
        self.client = OpenAI(base_url=base_url, api_key=self._key, max_retries=0, timeout=timeout_s)
        self.model_id = model
        self.max_concurrency, self.max_retries = max_concurrency, max_retries
        self.max_tokens, self.temperature, self.backoff_s = max_tokens, temperature, backoff_s

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

        last_error = "no attempt"
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.model_id, messages=self.build_messages(request),
                    response_format=self.response_format(request), max_tokens=self.max_tokens,
                    temperature=self.temperature)
                choice = response.choices[0]
                refusal = getattr(choice.message, "refusal", None)
                if refusal:
                    return VLMResult(None, "", f"refusal: {self._redact(refusal)[:200]}")
                return validate(request.schema, choice.message.content or "")
            except openai.APIStatusError as err:
                last_error = f"http_{err.status_code}"
                if err.status_code not in RETRYABLE_STATUS:
                    break
                retry_after = err.response.headers.get("retry-after") if err.response is not None else None
                delay = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                last_error = type(err).__name__
                delay = None
            except Exception as err:  # malformed response bodies and the like
                last_error = f"{type(err).__name__}: {self._redact(str(err))[:200]}"
                delay = None
            if attempt < self.max_retries:
                wait = delay if delay is not None else self.backoff_s * 2**attempt * (0.5 + random.random())
                log.warning("%s: attempt %d failed (%s); retrying in %.2fs", request.name, attempt + 1, last_error, wait)
                time.sleep(wait)
        return VLMResult(None, "", f"request_failed after {self.max_retries + 1} attempts: {last_error}")
