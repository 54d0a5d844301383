"""The VLM: a backend behind ``generate_json`` (see ``agents.vlm``), chosen by ``models.vlm``.

``backend: scripted``: no model, deterministic answers from a lexicon (the tiny preset's VLM).
``tiny``: a randomly initialised Qwen2-VL (the production class family) from a small config, with
a byte-level BPE tokenizer trained offline on a few JSON strings and a Qwen-style chat template.
``pretrained``: ``backend: transformers`` loads the model + processor from a folder / the HF cache;
``backend: vllm`` starts an offline vLLM engine (GPU nodes); ``backend: openai`` talks to any
OpenAI-compatible server (``base_url``), key from ``api_key_env``.
"""

from __future__ import annotations

import copy
import functools

from factory.config import ModelsConfig
from factory.models.common import load_pretrained, resolve_device, resolve_dtype, seeded

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TOKENIZER_CORPUS = (
    '{"caption": "a photo of a person with a cat", "entities": [{"name": "person", "peripheral": ["hand", "ear", '
    '"eye", "finger"], "intermediate": ["arm", "leg", "head", "face"]}, {"name": "car", "peripheral": ["wheel", '
    '"mirror"], "intermediate": ["door"]}]}',
    '{"visible": true, "in_region": false, "explanation": "the hand has an extra finger", "label": "extra finger"}',
    '{"explanation": "two objects are melted together and the tail is missing.", "label": "missing part"}',
)


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

        model, processor = _tiny_qwen2_vl(models.seed)
        return TransformersBackend(copy.deepcopy(model), processor, f"tiny-random-qwen2-vl(seed={models.seed})",
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


@functools.lru_cache(maxsize=2)
def tiny_image_processor():
    """The tiny Qwen2-VL's image processor, in the LLaMA-Factory export's frame (``shards.export.ModelFrame``:
    Qwen2.5-VL's patch grid and pixel range), so an exported image reaches the tiny model unresized, as it
    reaches a real one."""
    from transformers import Qwen2VLImageProcessor

    from shards.export import ModelFrame

    frame = ModelFrame()
    return Qwen2VLImageProcessor(min_pixels=frame.processor_min_pixels, max_pixels=frame.processor_max_pixels,
                                 patch_size=14, merge_size=2, temporal_patch_size=2)


def _tiny_qwen2_vl(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(list(TOKENIZER_CORPUS) * 10, trainer)  # deterministic for a fixed corpus
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=list(SPECIAL_TOKENS[1:]), padding_side="left")
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    with seeded(seed):
        model = Qwen2VLForConditionalGeneration(config).eval()
    processor = Qwen2VLProcessor(image_processor=tiny_image_processor(), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    return model, processor
