"""Curation agent: is each artifact real and visible, and what is wrong? Per artifact, not per image.

* distort (``lpips_check_tools``): passes when LPIPS between real and artifact lies in
  [lpips_min, lpips_max] — by default on the crops at the artifact's box, as the method's authors
  measure it (``lpips_measure: box_crop``), or the spatial LPIPS map averaged over the change
  region only (``mask_mean``);
* add / remove / fuse (``vlm_check_tools``): the VLM triplet check on (context with the region
  blacked out, real crop, artifact crop);
* every image: a background-leak check (outside the union of regions, artifact == clean, the VAE
  reconstruction the engine composites onto).

All or nothing by default, as the method's authors: an image is accepted only when every artifact
in it passes, so no accepted image carries an unlabelled edit; otherwise it is rejected with each
artifact's reason. ``curation.partial`` keeps images where some artifacts pass, the failed ones
becoming ignore regions (mask ``MASK_IGNORE``), for pixel-level users. Accepted images' artifacts get a local
explanation and the image a global one written from them, plus a negative explanation of why the
photo itself is flawless (the answer for its clean / real image in exports).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from agents import prompts
from agents.synthesis import decode_rle
from agents.vlm.base import VLMRequest
from shards.images import decode_array, decode_image, encode_png
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


def _lpips_map(model, real: np.ndarray, artifact: np.ndarray) -> np.ndarray:
    """LPIPS's spatial distance map (H, W) between two RGB uint8 images of one size."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)

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


def box_lpips(model, real: np.ndarray, artifact: np.ndarray, region: np.ndarray, min_side: int) -> float:
    """LPIPS of the two crops at the region's bounding box (the method authors' measure); crops with
    a side under ``min_side`` are scaled up first (AlexNet needs some extent)."""
    x0, y0, x1, y1 = region_bbox(region, 0.0)
    crops = [a[y0:y1, x0:x1] for a in (real, artifact)]
    scale = max(1.0, min_side / min(x1 - x0, y1 - y0))
    if scale > 1.0:
        size = (round((x1 - x0) * scale), round((y1 - y0) * scale))
        crops = [np.asarray(Image.fromarray(c).resize(size, Image.Resampling.BICUBIC)) for c in crops]
    return float(_lpips_map(model, *crops).mean())


class CurationAgent:
    def __init__(self, vlm, lpips_model, config):
        self.vlm, self.lpips, self.config = vlm, lpips_model, config

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        cfg = self.config.curation
        work = []  # (sample, real, artifact, regions)
        checks, check_targets = [], []  # VLM triplet requests and their (sample index, artifact index)
        for sample in samples:
            if not sample.is_pending:
                continue
            real, fake = decode_array(sample.real_image), decode_array(sample.image)
            clean = decode_array(sample.clean_image)
            regions = [decode_rle(a.region) if a.region else np.zeros(real.shape[:2], bool) for a in sample.artifacts]
            outside = ~np.logical_or.reduce(regions) if regions else np.ones(real.shape[:2], bool)
            leak = np.abs(clean.astype(int) - fake.astype(int))[outside]
            if leak.size and leak.max() > cfg.leak_tolerance:
                sample.reject(f"background_leak: {int((leak > cfg.leak_tolerance).sum())} values changed outside the mask")
                continue
            work.append((sample, real, fake, regions))
            for k, (artifact, region) in enumerate(zip(sample.artifacts, regions)):
                if not region.any():
                    artifact.reject_reason = "empty_region"
                elif artifact.tool in cfg.lpips_check_tools:
                    artifact.lpips = round(self._lpips(real, fake, region), 5)
                    artifact.accepted = cfg.lpips_min <= artifact.lpips <= cfg.lpips_max
                    artifact.reject_reason = "" if artifact.accepted else "lpips_out_of_window"
                elif artifact.tool in cfg.vlm_check_tools:
                    prompt, schema = prompts.triplet_check(artifact.tool, artifact.entity, artifact.subentity)
                    checks.append(VLMRequest(prompt, schema, list(triplet_images(real, fake, region, cfg.crop_margin)),
                                             name=f"triplet_{artifact.tool}"))
                    check_targets.append((len(work) - 1, k))
                else:  # the config validator puts every tool in a check list: this is a bug
                    raise ValueError(f"no curation check is configured for tool {artifact.tool!r}")
        for (w, k), verdict in zip(check_targets, self.vlm.generate_json(checks)):
            artifact = work[w][0].artifacts[k]
            if not verdict.ok:  # an unusable answer (a transport failure raises instead)
                artifact.reject_reason = f"vlm_invalid_answer: {verdict.error}"[:200]
                continue
            artifact.vlm_verdict = json.dumps(verdict.value, sort_keys=True)
            artifact.label = verdict.value["label"]
            artifact.local_explanation = verdict.value["explanation"]
            passed = verdict.value["visible"] and verdict.value["in_region"]
            artifact.accepted = passed or not cfg.require_vlm_label
            artifact.reject_reason = "" if artifact.accepted else "vlm_not_visible"
        for sample, real, _, regions in work:
            self._decide(sample, real, regions)
        self._explain([w for w in work if w[0].status == "accepted"])
        return samples

    def _lpips(self, real: np.ndarray, fake: np.ndarray, region: np.ndarray) -> float:
        cfg = self.config.curation
        if cfg.lpips_measure == "box_crop":
            return box_lpips(self.lpips, real, fake, region, cfg.lpips_min_crop)
        return masked_lpips(self.lpips, real, fake, region)

    def _explain(self, work) -> None:
        """Local explanations for accepted artifacts that have none, then one global explanation each."""
        cfg = self.config.curation
        pending, targets = [], []
        for sample, real, fake, regions in work:
            for artifact, region in zip(sample.artifacts, regions):
                if artifact.accepted and not artifact.local_explanation:
                    prompt, schema = prompts.local_explanation(artifact.tool, artifact.entity, artifact.subentity)
                    pending.append(VLMRequest(prompt, schema, list(triplet_images(real, fake, region, cfg.crop_margin)),
                                              name="local_explanation"))
                    targets.append(artifact)
        for artifact, answer in zip(targets, self.vlm.generate_json(pending)):
            artifact.local_explanation = answer.value["explanation"] if answer.ok else ""
            artifact.label = artifact.label or artifact.tool
        explained = [(s, fake, [a.local_explanation for a in s.artifacts if a.accepted]) for s, _, fake, _ in work]
        explained = [(s, fake, texts) for s, fake, texts in explained if texts]
        answers = self.vlm.generate_json([VLMRequest(*prompts.global_explanation(t), [Image.fromarray(fake)],
                                                     name="global_explanation") for _, fake, t in explained])
        for (sample, _, texts), answer in zip(explained, answers):
            sample.global_explanation = answer.value["explanation"] if answer.ok else " ".join(texts)
        if cfg.negative_explanations:
            self._explain_negatives([sample for sample, *_ in work])

    def _explain_negatives(self, samples: list[Sample]) -> None:
        """Why the photo is flawless, seen on ``clean_image`` (the negative a detector and a VLM train on)."""
        requests = [VLMRequest(*prompts.negative_explanation(s.caption), [decode_image(s.clean_image or s.real_image)],
                               name="negative_explanation") for s in samples]
        for sample, answer in zip(samples, self.vlm.generate_json(requests)):
            sample.negative_explanation = answer.value["explanation"] if answer.ok else ""

    def _decide(self, sample: Sample, real: np.ndarray, regions: list[np.ndarray]) -> None:
        """The label mask and the image's verdict: all artifacts pass, or (``partial``) at least one."""
        mask = np.zeros(real.shape[:2], np.uint8)
        for artifact, region in zip(sample.artifacts, regions):  # failed artifacts: ignore regions
            if not artifact.accepted:
                mask[region] = IGNORE
        for k, (artifact, region) in enumerate(zip(sample.artifacts, regions), start=1):
            if artifact.accepted:
                mask[region] = k
        sample.mask = encode_png(mask)
        passed = [a.accepted for a in sample.artifacts]
        if passed and (all(passed) or (self.config.curation.partial and any(passed))):
            sample.status = "accepted"
            return
        reasons = ";".join(f"{a.tool}:{a.reject_reason}" for a in sample.artifacts if not a.accepted)
        code = "artifact_rejected" if any(passed) else "no_accepted_artifact"
        sample.reject(f"{code}: {reasons}"[:300])
