"""VLM backends behind one ``generate_json`` call: transformers (+ xgrammar), vLLM, OpenAI-compatible."""

from agents.vlm.base import VLMBackend, VLMRequest, VLMResult, VLMUnavailableError, validate

__all__ = ["VLMBackend", "VLMRequest", "VLMResult", "VLMUnavailableError", "validate"]
