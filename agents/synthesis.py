"""Synthesis agent: turns each sample's planned artifacts into an artifact image.

A sample's artifacts (target → reference cells, from perception's plan) form one mapping; samples
of the same image size run through the FLUX engine as one batch with per-sample mappings. Each
artifact gets ``region``: the COCO RLE of its own dilated target cells, the pixels it may change.
A sample whose synthesis fails is rejected with the reason; the rest of the batch goes on.
"""

from __future__ import annotations

import json
import traceback
from collections import defaultdict

import numpy as np
import torch
from pycocotools import mask as mask_utils

from shards.images import decode_array, encode_png
from shards.record import Sample
from tools.flux.engine import FluxEngine
from tools.grid import Grid


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


class SynthesisAgent:
    def __init__(self, components, config):
        self.config = config
        transformer = components.transformer
        self.engine = FluxEngine(components, config.injection, device=transformer.device, dtype=transformer.dtype)
        self.provenance = dict(components.provenance)

    def __call__(self, samples: list[Sample]) -> list[Sample]:
        groups: dict[tuple[int, int], list[tuple[Sample, np.ndarray]]] = defaultdict(list)
        for sample in samples:
            if sample.is_rejected:
                continue
            if not sample.artifacts:
                sample.reject("no_artifact_planned")
                continue
            try:
                image = decode_array(sample.real_image)
            except Exception as err:
                sample.reject(f"synthesis_error:unreadable real_image: {type(err).__name__}")
                continue
            groups[image.shape[:2]].append((sample, image))
        for group in groups.values():
            try:
                self._synthesize(group)
            except Exception as err:  # one bad batch rejects its samples, never the job
                traceback.print_exc()
                for sample, _ in group:
                    sample.reject(f"synthesis_error:{type(err).__name__}: {err}"[:300])
        return samples

    def _synthesize(self, group: list[tuple[Sample, np.ndarray]]) -> None:
        inj = self.config.injection
        images = np.stack([image for _, image in group])
        targets, references, pe_steps = [], [], []
        for sample, _ in group:
            targets.append(torch.tensor([c for a in sample.artifacts for c in a.cells], dtype=torch.long))
            references.append(torch.tensor([c for a in sample.artifacts for c in a.reference_cells], dtype=torch.long))
            # One pass per image: positional injection lasts as long as its longest-scheduled tool needs.
            pe_steps.append(max(inj.pe_steps[a.tool] for a in sample.artifacts))
        embeds, pooled = self.engine.encode_prompt([sample.caption or "a photo" for sample, _ in group])
        result = self.engine.run(images, embeds, pooled, targets, references, pe_steps)
        grid = Grid.from_image(*images.shape[1:3])
        for i, (sample, _) in enumerate(group):
            sample.image = encode_png(result.images[i])
            for artifact in sample.artifacts:
                artifact.region = encode_rle(grid.pixel_mask(np.array(artifact.cells), inj.dilation_cells))
            sample.provenance.update({
                **self.provenance,
                "schedule": json.loads(inj.model_dump_json()),
                "value_cache_bytes": result.cache_bytes // len(group),
                "synthesis_timings": {k: round(v / len(group), 4) for k, v in result.timings.items()},
            })
