"""The model registry: the only place that knows where weights live.

Each role has one loader taking the typed config; ``kind: tiny`` builds a randomly initialised
model of the production class offline (fixed seed), ``kind: pretrained`` loads real weights from
a local folder or the HF cache. Role modules: ``vlm``, ``perception`` (Grounding DINO, SAM / SAM 2),
``flux`` (transformer, VAE, CLIP-L, T5), ``lpips``; ``tiny_layout`` gives the tiny Grounding DINO
and SAM usable geometry, and ``models.vlm.backend: scripted`` replaces the VLM with templates.
"""

from factory.models.common import ModelNotFoundError, resolve_device, resolve_dtype, seeded

__all__ = ["ModelNotFoundError", "resolve_device", "resolve_dtype", "seeded"]
