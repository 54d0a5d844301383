"""Tiny models for tests, the demo and the real presets' code path on a CPU — apart from the real loaders.

``flux`` (the tiny FLUX: transformer, VAE fitted by ``vae``, CLIP-L and T5 with tokenizers from the
``tokenizers`` library's trainers), ``perception`` (Grounding DINO, SAM, SAM 2), ``vlm`` (Qwen2-VL),
``lpips``; ``layout`` (the tiny preset's seeded perception hooks); ``perception_weights`` and
``vlm_weights`` (the hand-set weights ``writer`` gives the models it writes for ``kind: pretrained``).

    python -m factory.models.tiny --out DIR     # writes them all, plus DIR/cpu.yaml (``writer``)
"""
