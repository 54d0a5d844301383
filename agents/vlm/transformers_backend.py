"""transformers backend: any image-text-to-text model + processor, batched, greedy, and
constrained to each request's JSON schema by xgrammar, so even a random model answers valid JSON."""

from __future__ import annotations

import json

import torch
import xgrammar as xgr
from xgrammar.contrib.hf import LogitsProcessor

from agents.tensors import model_inputs
from agents.vlm.base import VLMRequest, VLMResult, validate


class TransformersBackend:
    def __init__(self, model, processor, model_id: str, max_new_tokens: int = 384, batch_size: int = 8):
        self.model, self.processor, self.model_id = model, processor, model_id
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        vocab_size = max(model.config.get_text_config().vocab_size, len(tokenizer))
        self.stop_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=self.stop_ids or None)
        self.compiler = xgr.GrammarCompiler(info)
        self._grammars: dict[str, xgr.CompiledGrammar] = {}

    def _grammar(self, schema: dict) -> xgr.CompiledGrammar:
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self.compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        results: list[VLMResult] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            results += self._generate(chunk)  # out of memory or a bug propagates to the stage: a failure
        return results

    @torch.no_grad()
    def _generate(self, requests: list[VLMRequest]) -> list[VLMResult]:
        texts, images = [], []
        for req in requests:
            content = [{"type": "image"} for _ in req.images] + [{"type": "text", "text": req.prompt}]
            texts.append(self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                            add_generation_prompt=True, tokenize=False))
            images += req.images
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        inputs = model_inputs(inputs, self.model)
        grammars = [self._grammar(req.schema) for req in requests]
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     logits_processor=[LogitsProcessor(grammars)],
                                     eos_token_id=self.stop_ids or None,
                                     pad_token_id=self.processor.tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        results = []
        for req, row in zip(requests, new_tokens):
            text = self.processor.tokenizer.decode(row, skip_special_tokens=True)
            result = validate(req.schema, text)
            if result.error and len(row) >= self.max_new_tokens:
                result.error = f"max_new_tokens reached before the JSON closed ({result.error})"
            results.append(result)
        return results
