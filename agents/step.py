"""What every step of the factory shares: the ``Step`` protocol, ``Pixels`` (each sample's images
decoded once per batch) and ``run_steps``, which runs steps in order on the samples still pending.

A step is a small callable class with one job (describe, ground + segment, plan, synthesize, pixel
checks, VLM verdicts, explain). It loads or receives its models in ``__init__`` and takes only the
config sections it reads; ``__call__`` fills in or rejects the samples it is given, in place: those
still pending, or, for a step whose ``applies_to`` is "accepted" (explain), those already accepted.
Infrastructure errors are raised, never turned into rejections (``factory.stages`` fails the batch).

A step whose answer depends only on the photo (describe, ground + segment, encode prompt) sets ``per_photo``:
``call_step`` runs it once per photo of the batch and gives that photo's other samples (its other
seeds) the same answer, so perceiving a photo costs the same for one seed as for k.
"""

from __future__ import annotations

import copy
from typing import Callable, Literal, Protocol

import numpy as np
from PIL import Image

from shards.images import decode_array
from shards.record import Sample, Status

ImageField = Literal["real_image", "clean_image", "image"]


class Pixels:
    """Each sample's images decoded once and shared, read-only, by the steps of one batch.

    A cached array is reused only while the sample still holds the very bytes it was decoded from, so
    a step that replaces an image (synthesis) is never served a stale one."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[bytes, np.ndarray]] = {}

    def array(self, sample: Sample, field: ImageField = "real_image") -> np.ndarray:
        """(H, W, 3) uint8, read-only."""
        data = getattr(sample, field)
        key = (sample.sample_id, field)
        cached = self._cache.get(key)
        if cached is None or cached[0] is not data:
            array = decode_array(data)
            array.setflags(write=False)
            cached = self._cache[key] = (data, array)
        return cached[1]

    def image(self, sample: Sample, field: ImageField = "real_image") -> Image.Image:
        return Image.fromarray(self.array(sample, field))


class Step(Protocol):
    name: str
    applies_to: Status  # the status of the samples it works on ("pending" unless it says otherwise)
    # per_photo: bool — optional; True when the answer depends only on the photo, not the seed

    def __call__(self, samples: list[Sample], pixels: Pixels) -> None: ...


def run_steps(steps: list[Step], samples: list[Sample], pixels: Pixels | None = None,
              call: Callable[[Step, list[Sample], Pixels], None] | None = None) -> list[Sample]:
    """Each step in order on the samples it applies to after the previous one; returns ``samples``.
    ``call`` runs one step on its samples (default ``call_step``; a pool adds its failure handling)."""
    pixels, call = pixels or Pixels(), call or call_step
    for step in steps:
        if batch := applicable(step, samples):
            call(step, batch, pixels)
    return samples


def call_step(step: Step, samples: list[Sample], pixels: Pixels) -> None:
    """``step`` on ``samples``; a ``per_photo`` step runs on one sample per photo and its answer (status,
    reason, caption, plan, encoded prompt, models) is copied to the photo's other samples. Per-photo steps
    come before any per-seed step (the plan), so the copied answer holds nothing seed-specific."""
    if not getattr(step, "per_photo", False):
        step(samples, pixels)
        return
    first: dict[tuple[str, bytes], Sample] = {}
    for sample in samples:
        first.setdefault(photo_key(sample), sample)
    step(list(first.values()), pixels)
    for sample in samples:
        answered = first[photo_key(sample)]
        if sample is not answered:
            copy_photo_answer(answered, sample)


def photo_key(sample: Sample) -> tuple[str, bytes]:
    """The samples of one photo: the same source decoded to the same pixels."""
    return sample.source_id, sample.real_image


def copy_photo_answer(answered: Sample, sample: Sample) -> None:
    if answered.status != "pending":
        sample.reject(answered.reject_reason)
    sample.caption = answered.caption
    sample.plan = copy.deepcopy(answered.plan)
    sample.prompt_embeds = answered.prompt_embeds
    if models := answered.provenance.get("models"):
        sample.provenance.setdefault("models", {}).update(models)


def applicable(step: Step, samples: list[Sample]) -> list[Sample]:
    """The samples ``step`` works on: those whose status is its ``applies_to`` (default "pending")."""
    status = getattr(step, "applies_to", "pending")
    return [s for s in samples if s.status == status]
