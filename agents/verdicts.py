"""Verdicts: the VLM's triplet check on every add / remove / fuse artifact (``curation.vlm_check_tools``),
then each image's verdict and label mask.

The triplet is the authors' (``agents.crops``): the original photo with the artifact's target cells
blacked out, the tight crops of the real photo and of the artifact image at the target, and the
object's name in the prompt. An artifact passes when the VLM says it is visible (and, with
``curation.triplet_in_region``, inside the cropped region; or whatever it says, with
``require_vlm_label`` off). All or nothing by default, as the method's authors: an image is accepted
only when every artifact in it passes, so no accepted image carries an unlabelled edit; otherwise it
is rejected with each artifact's reason. ``curation.partial`` keeps images where some artifacts
pass, the failed ones becoming ignore regions (mask ``MASK_IGNORE``), for pixel-level users.
"""

from __future__ import annotations

import json

import numpy as np

from agents import prompts
from agents.crops import artifact_regions, target_mask, triplet_images
from agents.settings import CurationConfig
from agents.step import Pixels
from agents.vlm.base import VLMBackend, VLMRequest
from shards.images import encode_png
from shards.record import MASK_IGNORE as IGNORE
from shards.record import Artifact, Sample


class Verdicts:
    name = "verdicts"

    def __init__(self, vlm: VLMBackend, config: CurationConfig):
        self.vlm, self.config = vlm, config

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        cfg = self.config
        shapes = {s.sample_id: pixels.array(s).shape[:2] for s in samples}
        regions = {s.sample_id: artifact_regions(s, shapes[s.sample_id]) for s in samples}
        checks: list[VLMRequest] = []
        checked: list[Artifact] = []
        for sample in samples:
            real, fake = pixels.array(sample), pixels.array(sample, "image")
            for artifact, region in zip(sample.artifacts, regions[sample.sample_id]):
                if artifact.tool in cfg.vlm_check_tools and region.any():
                    prompt, schema = prompts.triplet_check(artifact.tool, artifact.entity, artifact.subentity,
                                                           cfg.triplet_in_region)
                    target = target_mask(artifact, shapes[sample.sample_id])
                    images = triplet_images(real, fake, target, cfg.crop_margin, cfg.triplet_context)
                    checks.append(VLMRequest(prompt, schema, list(images), name=f"triplet_{artifact.tool}"))
                    checked.append(artifact)
        for artifact, verdict in zip(checked, self.vlm.generate_json(checks)):
            self.apply(artifact, verdict)
        for sample in samples:
            self.decide(sample, regions[sample.sample_id], shapes[sample.sample_id])

    def apply(self, artifact: Artifact, verdict) -> None:
        if not verdict.ok:  # an unusable answer (a transport failure raises instead)
            artifact.reject_reason = f"vlm_invalid_answer: {verdict.error}"[:200]
            return
        artifact.vlm_verdict = json.dumps(verdict.value, sort_keys=True)
        artifact.label = verdict.value["label"]
        artifact.local_explanation = verdict.value["explanation"]
        passed = verdict.value["visible"] and verdict.value.get("in_region", True)
        artifact.accepted = passed or not self.config.require_vlm_label
        artifact.reject_reason = "" if artifact.accepted else "vlm_not_visible"

    def decide(self, sample: Sample, regions: list[np.ndarray], shape: tuple[int, int]) -> None:
        """The label mask and the image's verdict: all artifacts pass, or (``partial``) at least one."""
        mask = np.zeros(shape, np.uint8)
        for artifact, region in zip(sample.artifacts, regions):  # failed artifacts: ignore regions
            if not artifact.accepted:
                mask[region] = IGNORE
        for k, (artifact, region) in enumerate(zip(sample.artifacts, regions), start=1):
            if artifact.accepted:
                mask[region] = k
        sample.mask = encode_png(mask)
        passed = [a.accepted for a in sample.artifacts]
        if passed and (all(passed) or (self.config.partial and any(passed))):
            sample.status = "accepted"
            return
        reasons = ";".join(f"{a.tool}:{a.reject_reason}" for a in sample.artifacts if not a.accepted)
        code = "artifact_rejected" if any(passed) else "no_accepted_artifact"
        sample.reject(f"{code}: {reasons}"[:300])
