"""Pixel checks: what the pixels alone can say about each synthesized sample.

* every image: the background-leak check — outside the union of the artifacts' regions the artifact
  image must equal ``clean_image`` (the VAE reconstruction the engine composites onto) within
  ``curation.leak_tolerance``; otherwise the sample is rejected;
* every artifact: an empty change region is rejected (``empty_region``);
* ``curation.lpips_check_tools`` (distort): passes when LPIPS between real and artifact lies strictly
  inside (lpips_min, lpips_max) — by default on the crops at the tight box of the whole part
  (``target_bbox``), as the method's authors measure it (``lpips_measure: box_crop``), or the spatial
  LPIPS map averaged over the change region (``mask_mean``). The other tools wait for the VLM's
  verdict (``agents.verdicts``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from agents.crops import artifact_regions, region_bbox
from agents.settings import CurationConfig
from agents.step import Pixels
from shards.record import Sample


def _lpips_map(model, real: np.ndarray, artifact: np.ndarray) -> np.ndarray:
    """LPIPS's spatial distance map (H, W) between two RGB uint8 images of one size."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)  # a copy: inputs are read-only

    weight = next(model.parameters())  # the metric runs in its weights' device and dtype
    spatial = model.spatial
    model.spatial = True  # LPIPS reads this flag at forward time: per-pixel map instead of the mean
    try:
        with torch.no_grad():
            return model(tensor(real).to(weight.device, weight.dtype),
                         tensor(artifact).to(weight.device, weight.dtype))[0, 0].float().cpu().numpy()
    finally:
        model.spatial = spatial


def masked_lpips(model, real: np.ndarray, artifact: np.ndarray, region: np.ndarray) -> float:
    """Mean of LPIPS's spatial distance map over the region's pixels."""
    return float(_lpips_map(model, real, artifact)[region].mean())


def box_lpips(model, real: np.ndarray, artifact: np.ndarray, box: list[int], min_side: int) -> float:
    """LPIPS of the two crops at ``box`` [x0, y0, x1, y1] (end exclusive; the method authors' measure
    on the part's tight box); crops with a side under ``min_side`` are scaled up first (AlexNet needs
    some extent)."""
    x0, y0, x1, y1 = box
    crops = [a[y0:y1, x0:x1] for a in (real, artifact)]
    scale = max(1.0, min_side / min(x1 - x0, y1 - y0))
    if scale > 1.0:
        size = (round((x1 - x0) * scale), round((y1 - y0) * scale))
        crops = [np.asarray(Image.fromarray(c).resize(size, Image.Resampling.BICUBIC)) for c in crops]
    return float(_lpips_map(model, *crops).mean())


class PixelChecks:
    name = "pixel_checks"

    def __init__(self, lpips_model, config: CurationConfig):
        self.lpips, self.config = lpips_model, config

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        cfg = self.config
        for sample in samples:
            real, fake, clean = (pixels.array(sample, f) for f in ("real_image", "image", "clean_image"))
            regions = artifact_regions(sample, real.shape[:2])
            outside = ~np.logical_or.reduce(regions) if regions else np.ones(real.shape[:2], bool)
            leak = np.abs(clean.astype(int) - fake.astype(int))[outside]
            if leak.size and leak.max() > cfg.leak_tolerance:
                sample.reject(f"background_leak: {int((leak > cfg.leak_tolerance).sum())} values changed outside the mask")
                continue
            for artifact, region in zip(sample.artifacts, regions):
                if not region.any():
                    artifact.reject_reason = "empty_region"
                elif artifact.tool in cfg.lpips_check_tools:
                    artifact.lpips = round(self.measure(real, fake, region, artifact.target_bbox), 5)
                    artifact.accepted = cfg.lpips_min < artifact.lpips < cfg.lpips_max  # strict, as the authors
                    artifact.reject_reason = "" if artifact.accepted else "lpips_out_of_window"
                elif artifact.tool not in cfg.vlm_check_tools:  # the config validator prevents it: a bug
                    raise ValueError(f"no curation check is configured for tool {artifact.tool!r}")

    def measure(self, real: np.ndarray, fake: np.ndarray, region: np.ndarray, target_bbox: list[int] | None = None
                ) -> float:
        """LPIPS of one artifact: on the crops at ``target_bbox`` (the region's box when there is none),
        or averaged over the region (``lpips_measure: mask_mean``)."""
        if self.config.lpips_measure == "box_crop":
            box = list(target_bbox) if target_bbox and len(target_bbox) == 4 else list(region_bbox(region, 0.0))
            return box_lpips(self.lpips, real, fake, box, self.config.lpips_min_crop)
        return masked_lpips(self.lpips, real, fake, region)
