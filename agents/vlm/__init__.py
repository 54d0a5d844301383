"""VLM backends behind one ``generate_json`` call: transformers (+ xgrammar), vLLM, OpenAI-compatible."""

from agents.vlm.base import VLMBackend, VLMConfigError, VLMRequest, VLMResult, VLMUnavailableError, validate

__all__ = ["VLMBackend", "VLMConfigError", "VLMRequest", "VLMResult", "VLMUnavailableError", "validate"]
