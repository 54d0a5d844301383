"""The agents' settings: perception's thresholds and plan, curation's checks and explanations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tools.settings import TOOLS, Strict, ToolName


class PerceptionConfig(Strict):
    box_threshold: float = Field(0.3, ge=0, le=1)
    text_threshold: float = Field(0.25, ge=0, le=1)
    nms_iou: float = Field(0.5, ge=0, le=1)
    containment: float = Field(0.9, ge=0, le=1, description="|part ∩ parent| / |part| to link a part")
    min_entity_fraction: float = Field(0.01, ge=0, le=1, description="entity mask share of the image")
    max_part_fraction: float = Field(0.5, ge=0, le=1, description="part mask share of the image")
    min_part_pixels: int = Field(512, ge=0, description="parts must cover more pixels than this")
    max_artifacts: int = Field(3, ge=1)
    max_phrases: int = Field(24, ge=1, description="cap on vocabulary phrases sent to grounding")
    tool_shares: dict[ToolName, float] = Field(
        default_factory=lambda: {"add": 0.25, "remove": 0.25, "distort": 0.25, "fuse": 0.25},
        description="target share of each tool in the plan (type balancing)",
    )
    sam_multimask: bool = True
    clip_masks_to_box: bool = Field(True, description="drop mask pixels outside the prompt box")


class CurationConfig(Strict):
    lpips_min: float = Field(0.1, ge=0)
    lpips_max: float = Field(0.5, ge=0)
    lpips_measure: Literal["box_crop", "mask_mean"] = Field(
        "box_crop", description="LPIPS of the crops at the part's tight box, target_bbox (the authors'; passes "
                                "when lpips_min < LPIPS < lpips_max), or the spatial LPIPS map averaged over the "
                                "change region")
    lpips_min_crop: int = Field(64, ge=16, description="box crops with a shorter side are scaled up to it")
    vlm_check_tools: list[ToolName] = ["add", "remove", "fuse"]
    lpips_check_tools: list[ToolName] = ["distort"]
    leak_tolerance: int = Field(0, ge=0, description="pixel value difference allowed outside the mask")
    crop_margin: float = Field(0.0, ge=0, description="margin around an artifact's target crop (the authors': 0, "
                                                      "tight)")
    triplet_context: Literal["real", "artifact"] = Field(
        "real", description="image 1 of the triplet: the original photo (the authors') or the artifact image, "
                            "with the target cells blacked out")
    triplet_in_region: bool = Field(False, description="also ask whether the flaw lies inside the crop (ours; "
                                                       "the authors ask only whether it is visible)")
    require_vlm_label: bool = Field(True, description="the VLM verdict must say the artifact is visible")
    partial: bool = Field(False, description="accept images where only some artifacts pass (the failed ones "
                                             "become ignore regions); default: all or nothing")
    negative_explanations: bool = Field(True, description="accepted samples also get a VLM explanation of why "
                                                          "the photo itself is flawless (the negatives' answer)")

    @model_validator(mode="after")
    def _window(self) -> CurationConfig:
        if self.lpips_min >= self.lpips_max:
            raise ValueError("lpips_min must be smaller than lpips_max")
        unchecked = set(TOOLS) - set(self.vlm_check_tools) - set(self.lpips_check_tools)
        if unchecked:
            raise ValueError(f"every tool needs a check: add {sorted(unchecked)} to vlm_check_tools or lpips_check_tools")
        return self
