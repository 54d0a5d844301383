"""The multi-task artifact detector on a transformers backbone (README, "Detector").

``ArtifactDetector`` maps an RGB batch in [0, 1] to an image-level artifact logit, per-pixel mask
logits at input size (a light FPN decoder over the backbone's feature maps) and multi-label
artifact-type logits (add / remove / distort / fuse, then X-AIGD's 7 categories, ``TYPE_NAMES``). ``loss`` combines image BCE, pixel BCE +
Dice (``MASK_IGNORE`` pixels ignored), type BCE and, for ViT-class backbones, the X-AIGD
attention-alignment loss.

Backbones: ``tiny`` (random ConvNeXt, hidden 8-16-32-64, depths 1-1-1-1) and ``tiny-vit`` (random
DINOv2, exposes attentions) for tests, ``pretrained`` (any ``AutoBackbone`` checkpoint — DINOv2,
Swin, ConvNeXt — from a local path or the HF cache, never downloaded). A saved detector is
self-contained: the backbone's config travels in ``config.json`` (the validated ``DetectorConfig``),
its weights in the safetensors.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoBackbone, AutoConfig, ConvNextConfig, Dinov2Config
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING

from shards.record import ARTIFACT_TOOLS as ARTIFACT_TYPES
from shards.taxonomy import CATEGORY_NAMES
from shards.record import MASK_IGNORE as IGNORE

# The type head's multi-label outputs: the tools present, then the X-AIGD categories present.
TYPE_NAMES = (*ARTIFACT_TYPES, *CATEGORY_NAMES)
VIT_TYPES = ("dinov2", "dinov2_with_registers", "vit")  # CLS token first, attentions exposed
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


@dataclass(config=ConfigDict(extra="forbid"))
class DetectorConfig:
    """The detector's architecture and loss weights (a pydantic dataclass: validated on construction)."""

    backbone: Literal["tiny", "tiny-vit", "pretrained"] = "tiny"
    path: str | None = None  # local directory or HF repo id (cache only) for ``pretrained``
    image_size: int = Field(64, gt=0)
    num_types: int = Field(len(TYPE_NAMES), gt=0)  # 4 (tools only) in detectors saved before categories
    decoder_dim: int = Field(32, gt=0)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet statistics
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    image_weight: float = Field(1.0, ge=0)
    pixel_weight: float = Field(1.0, ge=0)
    type_weight: float = Field(0.5, ge=0)
    align_weight: float = Field(0.0, ge=0)  # X-AIGD attention alignment; 0 disables (CNN backbones ignore it)
    align_benign: float = Field(0.1, ge=0)  # λ: target attention mass per benign patch relative to an artifact patch
    backbone_config: dict[str, Any] = field(default_factory=dict)  # filled in by the model; saved with it


CONFIG_ADAPTER = TypeAdapter(DetectorConfig)  # ``config.json`` ⇄ ``DetectorConfig``


class BackboneNotFoundError(FileNotFoundError):
    """A pretrained backbone that is neither a local folder nor in the HF cache; says how to fetch it."""

    def __init__(self, path: str, reason: str):
        fetch = "" if path.startswith(("/", ".")) else f"; fetch it with `hf download {path}`"
        super().__init__(f"detector backbone {path!r} could not be loaded ({reason}){fetch} "
                         "or pass a local folder to --backbone")


def _backbone(cfg: DetectorConfig) -> nn.Module:
    if cfg.backbone_config:  # a saved detector: rebuild the architecture, weights come from safetensors
        config = AutoConfig.for_model(**cfg.backbone_config)
        return AutoBackbone.from_config(config, **_attention_kwargs(config))
    if cfg.backbone == "tiny":
        return AutoBackbone.from_config(ConvNextConfig(
            hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], image_size=cfg.image_size,
            out_features=["stage1", "stage2", "stage3", "stage4"]))
    if cfg.backbone == "tiny-vit":
        return AutoBackbone.from_config(Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8,
            image_size=cfg.image_size, out_features=["stage1", "stage2"], attn_implementation="eager"))
    if not cfg.path:
        raise ValueError("a pretrained backbone needs DetectorConfig.path")
    try:
        config = AutoConfig.from_pretrained(cfg.path, local_files_only=True)
    except OSError as err:
        raise BackboneNotFoundError(cfg.path, str(err).splitlines()[0]) from err
    out_features = config.stage_names[-1:] if config.model_type in VIT_TYPES else config.stage_names[-4:]
    config = AutoConfig.from_pretrained(cfg.path, local_files_only=True, out_features=out_features)
    # The concrete class, not AutoBackbone.from_pretrained: transformers 5.2x asks the Hub whether the
    # name is a repo (to fall back to timm) before loading, which fails offline and on local paths.
    backbone_class = MODEL_FOR_BACKBONE_MAPPING[type(config)]
    return backbone_class.from_pretrained(cfg.path, config=config, local_files_only=True, **_attention_kwargs(config))


def _attention_kwargs(config: Any) -> dict[str, str]:
    """ViT-class backbones run eager attention so the alignment loss can read their attention maps."""
    return {"attn_implementation": "eager"} if config.model_type in VIT_TYPES else {}


class ArtifactDetector(nn.Module):
    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.backbone = _backbone(cfg)
        cfg.backbone_config = self.backbone.config.to_dict()
        self.cfg = cfg
        channels = list(self.backbone.channels)
        d = cfg.decoder_dim
        self.lateral = nn.ModuleList(nn.Conv2d(c, d, 1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.GroupNorm(1, d), nn.GELU(), nn.Conv2d(d, 1, 1))
        self.image_head = nn.Linear(channels[-1] + 1, 1)  # pooled features + the strongest pixel logit
        self.type_head = nn.Linear(channels[-1], cfg.num_types)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @property
    def exposes_attention(self) -> bool:
        """True for ViT-class backbones with eager attention (CLS token first), e.g. DINOv2."""
        return getattr(self.backbone.config, "_attn_implementation", None) == "eager" and \
            self.backbone.config.model_type in VIT_TYPES

    def forward(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixel_values``: (B, 3, H, W) in [0, 1] → image (B,), mask (B, H, W) and types (B, T) logits."""
        x = (pixel_values - self.mean) / self.std
        want_attn = self.cfg.align_weight > 0 and self.exposes_attention and self.training
        out = self.backbone(x, output_attentions=want_attn)
        maps = list(out.feature_maps)
        top = maps[0].shape[-2:]
        fused = sum(F.interpolate(lat(m), size=top, mode="bilinear", align_corners=False)
                    for lat, m in zip(self.lateral, maps))
        mask = F.interpolate(self.fuse(fused), size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
        pooled = maps[-1].mean(dim=(2, 3))
        peak = mask.amax(dim=(2, 3))
        result = {"image": self.image_head(torch.cat([pooled, peak], 1)).squeeze(1), "mask": mask.squeeze(1),
                  "types": self.type_head(pooled)}
        if want_attn:
            result["cls_attention"] = out.attentions[-1][:, :, 0, 1:].mean(dim=1)  # (B, patches), heads averaged
        return result

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch``: ``label`` (B,), ``mask`` (B, H, W; 0/1, ``IGNORE`` ignored), ``types`` (B, T) multi-hot."""
        cfg = self.cfg
        label, mask, types = batch["label"].float(), batch["mask"].long(), batch["types"].float()
        image = F.binary_cross_entropy_with_logits(outputs["image"], label)
        type_loss = F.binary_cross_entropy_with_logits(outputs["types"], types)
        valid = (mask != IGNORE).float()
        target = (mask == 1).float()
        logits = outputs["mask"]
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        bce = (bce * valid).sum() / valid.sum().clamp(min=1)
        prob = torch.sigmoid(logits) * valid
        dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + (target * valid).sum() + 1)
        parts = {"image_loss": image, "pixel_loss": bce + dice, "type_loss": type_loss}
        total = cfg.image_weight * image + cfg.pixel_weight * (bce + dice) + cfg.type_weight * type_loss
        if "cls_attention" in outputs:
            parts["align_loss"] = attention_alignment_loss(outputs["cls_attention"], mask, cfg.align_benign)
            total = total + cfg.align_weight * parts["align_loss"]
        parts["loss"] = total
        return parts


def attention_alignment_loss(attention: torch.Tensor, mask: torch.Tensor, benign: float) -> torch.Tensor:
    """X-AIGD-style alignment: cross-entropy between the last layer's CLS→patch attention and a
    target that gives each artifact patch weight 1 and each benign patch weight λ (``benign``),
    normalised; computed on images with artifact pixels only. Patch membership = fraction of
    artifact pixels in the patch (ignore pixels count as neither)."""
    b, n = attention.shape
    side = int(round(n ** 0.5))
    fg = F.adaptive_avg_pool2d((mask == 1).float().unsqueeze(1), side).flatten(1)
    bg = F.adaptive_avg_pool2d((mask == 0).float().unsqueeze(1), side).flatten(1)
    has_fg = fg.sum(1) > 0
    if not has_fg.any():
        return attention.sum() * 0.0
    target = fg + benign * bg
    target = target / target.sum(1, keepdim=True).clamp(min=1e-8)
    attn = attention / attention.sum(1, keepdim=True).clamp(min=1e-8)
    ce = -(target * torch.log(attn.clamp(min=1e-8))).sum(1)
    return ce[has_fg].mean()


def save_detector(model: ArtifactDetector, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the ``DetectorConfig``) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_bytes(CONFIG_ADAPTER.dump_json(model.cfg, indent=2))
    return directory


def load_detector(directory: str | Path, device: str | torch.device = "cpu") -> ArtifactDetector:
    """Rebuild a detector saved by ``save_detector`` (no backbone download or local weights needed)."""
    directory = Path(directory)
    model = ArtifactDetector(CONFIG_ADAPTER.validate_json((directory / CONFIG_FILE).read_bytes()))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.to(device).eval()
