"""The model registry: the only place that knows where weights live.

Each role has one loader taking the typed config; ``kind: pretrained`` loads real weights from a
local folder or the HF cache, ``kind: tiny`` takes a small model of the production class from
``factory.models.tiny`` (the tiny builders, their layout hooks and the tiny-weights writer live there,
apart). Role modules: ``vlm``, ``perception`` (Grounding DINO, SAM / SAM 2), ``flux`` (transformer,
VAE, CLIP-L, T5), ``lpips``; ``models.vlm.backend: scripted`` replaces the VLM with templates.
"""

from factory.models.common import ModelNotFoundError, resolve_device, resolve_dtype, seeded

__all__ = ["ModelNotFoundError", "resolve_device", "resolve_dtype", "seeded"]
