"""Synthesize: turns each sample's planned artifacts into an artifact image.

A sample's artifacts (target → reference cells, from perception's plan) form one mapping; samples
of the same image size run through the FLUX engine as one batch with per-sample mappings. Each
artifact gets ``region``: the COCO RLE of the engine's ``change_mask`` of its own target cells
(the cells dilated by ``injection.dilation_cells``): the pixels it may change, and its label. The
union of a sample's regions is exactly the mask the engine composited with.
Nothing here is a data rejection except an empty plan: an exception (out of memory, a bug)
reaches the stage, which fails the batch so it is retried (``factory.stages``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from agents.step import Pixels
from shards.images import encode_png, encode_rle
from shards.record import Sample
from tools.flux.engine import FluxEngine

if TYPE_CHECKING:  # the config sections' types; agents never import the factory at run time
    from factory.config import InjectionConfig


class Synthesize:
    name = "synthesize"

    def __init__(self, components, injection: InjectionConfig):
        self.injection = injection
        transformer = components.transformer
        self.engine = FluxEngine(components, injection, device=transformer.device, dtype=transformer.dtype)
        self.provenance = dict(components.provenance)

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        groups: dict[tuple[int, int], list[tuple[Sample, np.ndarray]]] = defaultdict(list)
        for sample in samples:
            if not sample.artifacts:
                sample.reject("no_artifact_planned")
                continue
            image = pixels.array(sample)
            groups[image.shape[:2]].append((sample, image))
        for group in groups.values():
            self._synthesize(group)

    def _synthesize(self, group: list[tuple[Sample, np.ndarray]]) -> None:
        inj = self.injection
        images = np.stack([image for _, image in group])
        targets, references, pe_steps = [], [], []
        for sample, _ in group:
            targets.append(torch.tensor([c for a in sample.artifacts for c in a.cells], dtype=torch.long))
            references.append(torch.tensor([c for a in sample.artifacts for c in a.reference_cells], dtype=torch.long))
            # One pass per image; each target cell is position-injected for its own tool's steps.
            pe_steps.append(torch.tensor([inj.pe_steps[a.tool] for a in sample.artifacts for _ in a.cells]))
        embeds, pooled = self.engine.encode_prompt([sample.caption or "a photo" for sample, _ in group])
        result = self.engine.run(images, embeds, pooled, targets, references, pe_steps)
        height, width = images.shape[1:3]
        for i, (sample, _) in enumerate(group):
            sample.image = encode_png(result.images[i])
            sample.clean_image = encode_png(result.clean[i])
            for artifact in sample.artifacts:
                artifact.region = encode_rle(self.engine.change_mask(artifact.cells, height, width))
            sample.provenance.setdefault("models", {}).update(self.provenance)
            sample.provenance.update({  # the schedule is the run's config (``config_hash``)
                "value_cache_bytes": result.cache_bytes // len(group),
                "synthesis_timings": {k: round(v / len(group), 4) for k, v in result.timings.items()},
            })
