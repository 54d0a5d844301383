"""Curation agent: is each artifact real and visible, and what is wrong? Per artifact, not per image.

* distort (``lpips_check_tools``): passes when LPIPS between real and artifact, averaged over the
  artifact's *change region* (the spatial LPIPS map inside the mask, not its bounding box), lies in
  [lpips_min, lpips_max];
* add / remove / fuse (``vlm_check_tools``): the VLM triplet check on (context with the region
  blacked out, real crop, artifact crop);
* every image: a background-leak check (outside the union of regions, artifact == real).

Accepted artifacts get a local explanation, the image a global one written from them. A failed
artifact stays in the image and its region becomes an ignore region (mask 255); an image with no
accepted artifact is rejected with every artifact's reason.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from agents import prompts
from agents.synthesis import decode_rle
from agents.vlm.base import VLMRequest
from shards.images import decode_array, encode_png
from shards.record import MASK_IGNORE as IGNORE
from shards.record import Sample


def region_bbox(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Box (x0, y0, x1, y1), end exclusive, around the mask, grown by ``margin`` of its size each side."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    dx, dy = round((x1 - x0) * margin), round((y1 - y0) * margin)
    height, width = mask.shape
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def triplet_images(real: np.ndarray, artifact: np.ndarray, region: np.ndarray, margin: float
                   ) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(context: artifact with the region blacked out, real crop, artifact crop); the crops are the
    region's box plus ``margin`` and are resized so their long side equals the image's long side."""
    context = artifact.copy()
    context[region] = 0
    x0, y0, x1, y1 = region_bbox(region, margin)
    long_side = max(real.shape[:2])
    scale = long_side / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    crops = [Image.fromarray(a[y0:y1, x0:x1]).resize(size, Image.Resampling.BICUBIC) for a in (real, artifact)]
    return Image.fromarray(context), crops[0], crops[1]


@torch.no_grad()
def masked_lpips(model, real: np.ndarray, artifact: np.ndarray, region: np.ndarray) -> float:
    """Mean of LPIPS's spatial distance map over the region's pixels."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)

    device = next(model.parameters()).device
    spatial = model.spatial
    model.spatial = True  # LPIPS reads this flag at forward time: per-pixel map instead of the mean
    try:
        distance = model(tensor(real).to(device), tensor(artifact).to(device))[0, 0].cpu().numpy()
    finally:
        model.spatial = spatial
    return float(distance[region].mean())


class CurationAgent:
    def __init__(self, vlm, lpips_model, config):
        self.vlm, self.lpips, self.config = vlm, lpips_model, config

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        cfg = self.config.curation
        work = []  # (sample, real, artifact, regions)
        checks, check_targets = [], []  # VLM triplet requests and their (sample index, artifact index)
        for sample in samples:
            if sample.is_rejected:
                continue
            real, fake = decode_array(sample.real_image), decode_array(sample.image)
            regions = [decode_rle(a.region) if a.region else np.zeros(real.shape[:2], bool) for a in sample.artifacts]
            outside = ~np.logical_or.reduce(regions) if regions else np.ones(real.shape[:2], bool)
            leak = np.abs(real.astype(int) - fake.astype(int))[outside]
            if leak.size and leak.max() > cfg.leak_tolerance:
                sample.reject(f"background_leak: {int((leak > cfg.leak_tolerance).sum())} values changed outside the mask")
                continue
            work.append((sample, real, fake, regions))
            for k, (artifact, region) in enumerate(zip(sample.artifacts, regions)):
                if not region.any():
                    artifact.reject_reason = "empty_region"
                elif artifact.tool in cfg.lpips_check_tools:
                    artifact.lpips = round(masked_lpips(self.lpips, real, fake, region), 5)
                    artifact.accepted = cfg.lpips_min <= artifact.lpips <= cfg.lpips_max
                    artifact.reject_reason = "" if artifact.accepted else "lpips_out_of_window"
                elif artifact.tool in cfg.vlm_check_tools:
                    prompt, schema = prompts.triplet_check(artifact.tool, artifact.entity, artifact.subentity)
                    checks.append(VLMRequest(prompt, schema, list(triplet_images(real, fake, region, cfg.crop_margin)),
                                             name=f"triplet_{artifact.tool}"))
                    check_targets.append((len(work) - 1, k))
                else:
                    artifact.accepted = True
        for (w, k), verdict in zip(check_targets, self.vlm.generate_json(checks)):
            artifact = work[w][0].artifacts[k]
            if not verdict.ok:
                artifact.reject_reason = f"vlm_error: {verdict.error}"[:200]
                continue
            artifact.vlm_verdict = json.dumps(verdict.value, sort_keys=True)
            artifact.label = verdict.value["label"]
            artifact.local_explanation = verdict.value["explanation"]
            passed = verdict.value["visible"] and verdict.value["in_region"]
            artifact.accepted = passed or not cfg.require_vlm_label
            artifact.reject_reason = "" if artifact.accepted else "vlm_not_visible"
        self._explain(work)
        for sample, real, _, regions in work:
            self._finish(sample, real, regions)
        return samples

    def _explain(self, work) -> None:
        """Local explanations for accepted artifacts that have none, then one global explanation each."""
        cfg = self.config.curation
        pending, targets = [], []
        for sample, real, fake, regions in work:
            for artifact, region in zip(sample.artifacts, regions):
                if artifact.accepted and not artifact.local_explanation:
                    prompt, schema = prompts.local_explanation(artifact.tool, artifact.entity, artifact.subentity)
                    pending.append(VLMRequest(prompt, schema, [triplet_images(real, fake, region, cfg.crop_margin)[2]],
                                              name="local_explanation"))
                    targets.append(artifact)
        for artifact, answer in zip(targets, self.vlm.generate_json(pending)):
            artifact.local_explanation = answer.value["explanation"] if answer.ok else ""
            artifact.label = artifact.label or artifact.tool
        explained = [(s, [a.local_explanation for a in s.artifacts if a.accepted]) for s, *_ in work]
        explained = [(s, texts) for s, texts in explained if texts]
        answers = self.vlm.generate_json([VLMRequest(*prompts.global_explanation(t), name="global_explanation")
                                          for _, t in explained])
        for (sample, texts), answer in zip(explained, answers):
            sample.global_explanation = answer.value["explanation"] if answer.ok else " ".join(texts)

    def _finish(self, sample: Sample, real: np.ndarray, regions: list[np.ndarray]) -> None:
        mask = np.zeros(real.shape[:2], np.uint8)
        for artifact, region in zip(sample.artifacts, regions):  # failed artifacts stay: ignore regions
            if not artifact.accepted:
                mask[region] = IGNORE
        for k, (artifact, region) in enumerate(zip(sample.artifacts, regions), start=1):
            if artifact.accepted:
                mask[region] = k
        sample.mask = encode_png(mask)
        if any(a.accepted for a in sample.artifacts):
            sample.status = "accepted"
        else:
            reasons = ";".join(f"{a.tool}:{a.reject_reason}" for a in sample.artifacts)
            sample.reject(f"no_accepted_artifact: {reasons}"[:300])
