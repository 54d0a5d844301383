"""The tiny Grounding DINO (its BERT tokenizer built offline from ``TINY_VOCABULARY``), SAM and SAM 2:
the production classes from small configs with seeded random weights, and their processors.

The tiny preset loads them and installs the seeded layout hooks (``factory.models.tiny.layout``);
``factory.models.tiny.writer`` writes them with hand-set weights (``factory.models.tiny.perception_weights``)
for the real presets' code path.
"""

from __future__ import annotations

import functools

from transformers import (BertConfig, BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection,
                          GroundingDinoImageProcessor, GroundingDinoProcessor, SamConfig, SamImageProcessor,
                          SamMaskDecoderConfig, SamModel, SamProcessor, SamPromptEncoderConfig, SamVisionConfig,
                          SwinConfig)

from factory.models.common import seeded

TINY_VOCABULARY = (
    "person man woman child astronaut cat dog horse bird car bike bicycle motorcycle rocket cup mug coffee coin "
    "camera tripod bottle chair table plate spoon hand finger ear eye paw tail wheel mirror arm leg head face door "
    "window nose mouth foot handle flag body neck wing"
)


@functools.lru_cache(maxsize=2)
def tiny_grounding(seed: int):
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
    return model, processor


@functools.lru_cache(maxsize=2)
def tiny_sam(seed: int):
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


@functools.lru_cache(maxsize=2)
def tiny_sam2(seed: int):
    """A random SAM 2 (Hiera backbone, FPN neck) on 64-pixel inputs, with its processor."""
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2ImageProcessor, Sam2MaskDecoderConfig,
                              Sam2Model, Sam2Processor, Sam2PromptEncoderConfig, Sam2VisionConfig)

    side = 64
    backbone = Sam2HieraDetConfig(hidden_size=8, image_size=[side, side], blocks_per_stage=[1, 1, 2, 1],
                                  embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
                                  window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
                                  window_positional_embedding_background_size=[4, 4])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=32,
                              backbone_feature_sizes=[[side // 4] * 2, [side // 8] * 2, [side // 16] * 2])
    config = Sam2Config(vision_config=vision,
                        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=32, image_size=side, patch_size=16,
                                                                      mask_input_channels=4),
                        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=4,
                                                                  iou_head_hidden_dim=32))
    with seeded(seed):
        model = Sam2Model(config).eval()
    processor = Sam2Processor(Sam2ImageProcessor(size={"height": side, "width": side},
                                                 mask_size={"height": side // 4, "width": side // 4}))
    return model, processor
