"""Grounding DINO (open-vocabulary boxes) and SAM / SAM 2 (masks from boxes), with processors.

``kind: pretrained`` loads the maintained transformers implementations (batched, no custom CUDA
ops) from a local folder or the HF cache. ``kind: tiny`` builds the same classes from small
configs with random weights; the BERT tokenizer of the tiny Grounding DINO is built offline
from a small word list. A random box head predicts near-zero offsets, so its boxes keep the
proposals' sizes (5-10 % of the image side); the tiny Grounding DINO raises the width/height
offset of its last box head by ``TINY_BOX_SIZE_LOGIT`` so its boxes are object-sized (a quarter to
a half of the image side) and its plans vary from photo to photo.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (AutoProcessor, BertConfig, BertTokenizerFast, GroundingDinoConfig,
                          GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor,
                          SamConfig, SamImageProcessor, SamMaskDecoderConfig, SamModel, SamProcessor,
                          SamPromptEncoderConfig, SamVisionConfig, SwinConfig)

from factory.config import ModelsConfig
from factory.models.common import load_pretrained, resolve_device, resolve_dtype, seeded

TINY_VOCABULARY = (
    "person man woman child astronaut cat dog horse bird car bike bicycle motorcycle rocket cup mug coffee coin "
    "camera tripod bottle chair table plate spoon hand finger ear eye paw tail wheel mirror arm leg head face door "
    "window nose mouth foot handle flag body neck wing"
)
TINY_BOX_SIZE_LOGIT = 2.0  # added to the last decoder box head's (w, h) logits of the tiny Grounding DINO


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
        model, processor = _tiny_grounding(models.seed)
        model, model_id = copy.deepcopy(model), f"tiny-random-grounding-dino(seed={models.seed})"
    else:
        model = load_pretrained("grounding", spec, GroundingDinoForObjectDetection.from_pretrained)
        processor = load_pretrained("grounding", spec, AutoProcessor.from_pretrained)
        model_id = spec.path
    model.to(resolve_device(models)).eval().requires_grad_(False)
    return GroundingModels(model, processor, model_id)


def load_segmentation(models: ModelsConfig) -> SegmentationModels:
    spec, family = models.segmentation, models.segmentation_family
    if spec.kind == "tiny":
        if family != "sam":
            raise ValueError("the tiny preset builds SAM only; set models.segmentation_family=sam "
                             "or point models.segmentation at a SAM 2 checkpoint")
        model, processor = _tiny_sam(models.seed)
        model, model_id = copy.deepcopy(model), f"tiny-random-sam(seed={models.seed})"
    else:
        if family == "sam2":
            from transformers import Sam2Model

            model = load_pretrained("segmentation (SAM 2)", spec, Sam2Model.from_pretrained)
        else:
            model = load_pretrained("segmentation (SAM)", spec, SamModel.from_pretrained)
        processor = load_pretrained("segmentation", spec, AutoProcessor.from_pretrained)
        model_id = spec.path
    model.to(resolve_device(models), resolve_dtype(models) if spec.kind != "tiny" else None).eval().requires_grad_(False)
    return SegmentationModels(model, processor, family, model_id)


@functools.lru_cache(maxsize=2)
def _tiny_grounding(seed: int):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(set(TINY_VOCABULARY.split()))
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True, model_max_length=32)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 98, "longest_edge": 128})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7, image_size=98,
                          out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16, max_position_embeddings=32)
    config = GroundingDinoConfig(backbone_config=backbone, text_config=text.to_dict(), d_model=32,
                                 encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                 decoder_attention_heads=4, encoder_ffn_dim=4, decoder_ffn_dim=4, num_queries=10,
                                 num_feature_levels=4, max_text_len=32, encoder_n_points=2, decoder_n_points=2,
                                 use_timm_backbone=False)
    with seeded(seed):
        model = GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():  # the final boxes are logit(reference) + the last level's offsets
        model.bbox_embed[-1].layers[-1].bias[2:] += TINY_BOX_SIZE_LOGIT
    return model, processor


@functools.lru_cache(maxsize=2)
def _tiny_sam(seed: int):
    config = SamConfig(
        vision_config=SamVisionConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=4, output_channels=32, mlp_dim=64, global_attn_indexes=[1],
                                      window_size=4, num_pos_feats=16),
        prompt_encoder_config=SamPromptEncoderConfig(image_size=64, patch_size=8, hidden_size=32,
                                                     mask_input_channels=4),
        mask_decoder_config=SamMaskDecoderConfig(hidden_size=32, num_multimask_outputs=3, iou_head_hidden_dim=32,
                                                 mlp_dim=64, num_hidden_layers=2, num_attention_heads=4))
    with seeded(seed):
        model = SamModel(config).eval()
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}))
    return model, processor
