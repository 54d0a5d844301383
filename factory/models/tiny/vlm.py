"""The tiny Qwen2-VL (the production class family) and its processor: a small config, a byte-level BPE
tokenizer and hand-set weights (``factory.models.tiny.vlm_weights``), a Qwen-style chat template, and the
image processor in the LLaMA-Factory export's frame."""

from __future__ import annotations

import functools

from factory.models.common import seeded
from factory.models.tiny import vlm_weights
from factory.models.tiny.vlm_weights import SPECIAL_TOKENS

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


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


def tiny_qwen2_vl(seed: int):
    """The tiny Qwen2-VL and its processor, with the hand-set weights of ``factory.models.tiny.vlm_weights``
    (a photo-dependent bigram model that answers every request of the agents usably); the other weights
    are random from ``seed``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = vlm_weights.tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    hidden, heads = vlm_weights.hidden_size(), 2
    rotary = hidden // heads // 2
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"], hidden_size=hidden, intermediate_size=16,
                         num_hidden_layers=1, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [rotary - 2 * (rotary // 3), rotary // 3, rotary // 3]}),
        vision_config=dict(depth=1, embed_dim=vlm_weights.VISION_DIM, hidden_size=hidden, num_heads=2,
                           mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False)
    with seeded(seed):
        model = Qwen2VLForConditionalGeneration(config).eval()
    vlm_weights.shape_weights(model, tokenizer)
    processor = Qwen2VLProcessor(image_processor=tiny_image_processor(), tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    return model, processor
