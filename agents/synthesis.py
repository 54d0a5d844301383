"""Synthesize: turns each sample's planned artifacts into an artifact image.

A sample's artifacts (target → reference cells, from perception's plan) form one mapping. The
samples of one photo (its seeds: the same pixels and caption) share one inversion: the engine
inverts the photo once and denoises its k mappings from that trajectory and value cache, the same
output as inverting once per seed at (steps/k + steps) instead of 2·steps transformer passes.
Each photo group (the seeds planned together) is one engine call, never batched with other photos:
batched kernels round differently, and a sample's pixels must not depend on its neighbours. Each
artifact gets ``region``: the COCO RLE of the engine's ``change_mask`` of its own target cells
(the cells dilated by ``injection.dilation_cells``): the pixels it may change, and its label. The
union of a sample's regions is exactly the mask the engine composited with; ``bbox`` becomes the region's
box (``target_bbox``, the target cells' tight box, stays the authors' label).
Nothing here is a data rejection except an empty plan: an exception (out of memory, a bug)
reaches the stage, which fails the batch so it is retried (``factory.stages``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from agents.step import Pixels, photo_key
from shards.images import encode_png, encode_rle
from shards.record import Sample
from tools.flux.components import FluxComponents
from tools.flux.engine import FluxEngine
from tools.flux.settings import InjectionConfig
from tools.flux.text import unpack_prompts


def pixel_box(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] (end exclusive) around a boolean mask's pixels; [] when it is empty."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if ys.size else []


class Synthesize:
    name = "synthesize"

    def __init__(self, components: FluxComponents, injection: InjectionConfig):
        self.injection = injection
        self.engine = FluxEngine(components, injection)  # on the transformer's device, in its dtype
        self.provenance = dict(components.provenance)

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None:
        photos: dict[tuple, list[Sample]] = defaultdict(list)  # one photo's seeds, in batch order
        for sample in samples:
            if not sample.artifacts:
                sample.reject("no_artifact_planned")
                continue
            photos[photo_key(sample), sample.caption].append(sample)
        # One engine call per photo group: a sample's pixels never depend on which other photos shared
        # its batch (batched kernels round differently), so the same plan gives the same bytes.
        for seeds in photos.values():
            self._synthesize([seeds], len(seeds), pixels)

    def _synthesize(self, photos: list[list[Sample]], plans: int, pixels: Pixels) -> None:
        inj = self.injection
        images = np.stack([pixels.array(seeds[0]) for seeds in photos])
        group = [sample for seeds in photos for sample in seeds]  # image-major: the engine's order
        targets, references, pe_steps = [], [], []
        for sample in group:
            targets.append(torch.tensor([c for a in sample.artifacts for c in a.cells], dtype=torch.long))
            references.append(torch.tensor([c for a in sample.artifacts for c in a.reference_cells], dtype=torch.long))
            # One pass per image; each target cell is position-injected for its own tool's steps.
            pe_steps.append(torch.tensor([inj.pe_steps[a.tool] for a in sample.artifacts for _ in a.cells]))
        if all(seeds[0].prompt_embeds for seeds in photos):  # encoded in perception
            embeds, pooled = unpack_prompts([seeds[0].prompt_embeds for seeds in photos], self.engine.device,
                                            self.engine.dtype)
        else:
            embeds, pooled = self.engine.encode_prompt([seeds[0].caption or "a photo" for seeds in photos])
        embeds, pooled = embeds.repeat_interleave(plans, 0), pooled.repeat_interleave(plans, 0)  # per sample
        result = self.engine.run(images, embeds, pooled, targets, references, pe_steps, plans_per_image=plans)
        height, width = images.shape[1:3]
        for i, sample in enumerate(group):
            sample.prompt_embeds = b""  # used up: the rest of the way it would only weigh on the transport
            sample.image = encode_png(result.images[i])
            sample.clean_image = encode_png(result.clean[i])
            for artifact in sample.artifacts:
                change = self.engine.change_mask(artifact.cells, height, width)
                artifact.region = encode_rle(change)
                artifact.bbox = pixel_box(change) or artifact.bbox  # the changed pixels' box
            sample.provenance.setdefault("models", {}).update(self.provenance)
            sample.provenance.update({  # the schedule is the run's config (``config_hash``)
                "value_cache_bytes": result.cache_bytes // len(group),
                "synthesis_timings": {k: round(v / len(group), 4) for k, v in result.timings.items()},
            })
