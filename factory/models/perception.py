"""Grounding DINO (open-vocabulary boxes) and SAM / SAM 2 (masks from boxes), with processors.

``kind: pretrained`` loads the maintained transformers implementations (batched, no custom CUDA
ops) from a local folder or the HF cache. ``kind: tiny`` takes the same classes from
``factory.models.tiny.perception`` and installs forward hooks (``factory.models.tiny.layout``) that
replace their random outputs with a seeded, photo-dependent layout of boxes and ellipse masks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel

from factory.config import ModelsConfig
from factory.models.common import load_pretrained, resolve_device, resolve_dtype


@dataclass
class GroundingModels:
    model: GroundingDinoForObjectDetection
    processor: Any
    model_id: str


@dataclass
class SegmentationModels:
    model: Any  # SamModel or Sam2Model
    processor: Any
    family: str
    model_id: str


def load_grounding(models: ModelsConfig) -> GroundingModels:
    spec = models.grounding
    if spec.kind == "tiny":
        from factory.models.tiny.layout import install_grounding_layout
        from factory.models.tiny.perception import tiny_grounding

        model, processor = tiny_grounding(models.seed)
        model, model_id = copy.deepcopy(model), f"tiny-random-grounding-dino+layout(seed={models.seed})"
        install_grounding_layout(model, processor.tokenizer, models.seed)
    else:
        model = load_pretrained("grounding", spec, GroundingDinoForObjectDetection.from_pretrained,
                                dtype=resolve_dtype(models))
        processor = load_pretrained("grounding", spec, AutoProcessor.from_pretrained)
        model_id = spec.path
    model.to(resolve_device(models), resolve_dtype(models)).eval().requires_grad_(False)
    return GroundingModels(model, processor, model_id)


def load_segmentation(models: ModelsConfig) -> SegmentationModels:
    spec, family = models.segmentation, models.segmentation_family
    if spec.kind == "tiny" and family == "sam2":
        from factory.models.tiny.perception import tiny_sam2

        model, processor = tiny_sam2(models.seed)
        model, model_id = copy.deepcopy(model), f"tiny-random-sam2(seed={models.seed})"
    elif spec.kind == "tiny":
        from factory.models.tiny.layout import install_segmentation_layout
        from factory.models.tiny.perception import tiny_sam

        model, processor = tiny_sam(models.seed)
        model, model_id = copy.deepcopy(model), f"tiny-random-sam+ellipses(seed={models.seed})"
        install_segmentation_layout(model)
    else:
        if family == "sam2":
            from transformers import Sam2Model

            model = load_pretrained("segmentation (SAM 2)", spec, Sam2Model.from_pretrained,
                                    dtype=resolve_dtype(models))
        else:
            model = load_pretrained("segmentation (SAM)", spec, SamModel.from_pretrained, dtype=resolve_dtype(models))
        processor = load_pretrained("segmentation", spec, AutoProcessor.from_pretrained)
        model_id = spec.path
    model.to(resolve_device(models), resolve_dtype(models)).eval().requires_grad_(False)
    return SegmentationModels(model, processor, family, model_id)
