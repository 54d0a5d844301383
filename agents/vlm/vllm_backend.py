"""vLLM backend (GPU nodes): an offline ``vllm.LLM`` with structured outputs per request.

vLLM is an optional extra (``pip install -e '.[vllm]'`` on GPU nodes only); it is imported lazily.
"""

from __future__ import annotations

from agents.vlm.base import VLMRequest, VLMResult, validate


class VLLMBackend:
    def __init__(self, model_path: str, max_new_tokens: int = 384, temperature: float = 0.0, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("the vllm backend needs vLLM: install the 'vllm' extra on a GPU node "
                              "(pip install -e '.[vllm]'); never into a CPU environment") from err
        self.llm = LLM(model=model_path, limit_mm_per_prompt={"image": 4}, **engine_kwargs)
        self.model_id, self.max_new_tokens, self.temperature = model_path, max_new_tokens, temperature

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        from agents.vlm.openai_backend import data_url

        conversations, params = [], []
        for req in requests:
            content = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in req.images]
            conversations.append([{"role": "user", "content": content + [{"type": "text", "text": req.prompt}]}])
            params.append(SamplingParams(max_tokens=self.max_new_tokens, temperature=self.temperature,
                                         structured_outputs=StructuredOutputsParams(json=req.schema)))
        outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)  # errors are failures
        return [validate(req.schema, out.outputs[0].text) for req, out in zip(requests, outputs)]
