"""The VLM: a backend behind ``generate_json`` (see ``agents.vlm``), chosen by ``models.vlm``.

``backend: scripted``: no model, deterministic answers from a lexicon (the tiny preset's VLM).
``tiny``: a tiny Qwen2-VL (the production class family) from a small config, with a byte-level BPE
tokenizer, a Qwen-style chat template and hand-set weights that answer like a very bad but usable VLM
(``factory.models.tiny.vlm_weights``).
``pretrained``: ``backend: transformers`` loads the model + processor from a folder / the HF cache;
``backend: vllm`` starts an offline vLLM engine (GPU nodes); ``backend: openai`` talks to any
OpenAI-compatible server (``base_url``), key from ``api_key_env``.
"""

from __future__ import annotations

import copy

from factory.config import ModelsConfig
from factory.models.common import load_pretrained, resolve_device, resolve_dtype

def load_vlm(models: ModelsConfig):
    vlm = models.vlm
    if vlm.backend == "scripted":
        from agents.vlm.scripted_backend import ScriptedBackend

        return ScriptedBackend(models.seed, vlm.scripted_visible_share)
    if vlm.backend == "openai":
        from agents.vlm.openai_backend import OpenAIBackend

        return OpenAIBackend(vlm.base_url, vlm.openai_model, vlm.api_key_env, vlm.max_concurrency,
                             vlm.max_retries, vlm.timeout_s, vlm.max_new_tokens, vlm.temperature)
    if vlm.model.kind == "tiny":
        from agents.vlm.transformers_backend import TransformersBackend

        from factory.models.tiny.vlm import tiny_qwen2_vl

        model, processor = tiny_qwen2_vl(models.seed)
        return TransformersBackend(copy.deepcopy(model), processor, f"tiny-qwen2-vl(seed={models.seed})",
                                   max_new_tokens=vlm.max_new_tokens)
    if vlm.backend == "vllm":
        from agents.vlm.vllm_backend import VLLMBackend

        return VLLMBackend(vlm.model.path, vlm.max_new_tokens, vlm.temperature,
                           gpu_memory_utilization=vlm.gpu_memory_utilization)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from agents.vlm.transformers_backend import TransformersBackend

    model = load_pretrained("VLM", vlm.model, AutoModelForImageTextToText.from_pretrained,
                            dtype=resolve_dtype(models))
    processor = load_pretrained("VLM", vlm.model, AutoProcessor.from_pretrained)
    return TransformersBackend(model.to(resolve_device(models)).eval(), processor, vlm.model.path,
                               max_new_tokens=vlm.max_new_tokens)
