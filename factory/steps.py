"""The factory's step lists as data: what each actor pool runs on a batch, in order.

    perception:  describe → ground + segment → [encode prompt] → plan
    synthesis:   synthesize
    curation:    pixel checks → verdicts → explain

Each ``*_steps(config, models)`` builds the steps (``agents.step``) from models that are already
loaded, so the pools (``factory.stages``, which load the models once per actor) and the tests run
exactly the same lists; ``load_*_models`` is how a pool loads them. Each function imports its own
agents, so an actor loads only its pool's libraries (a perception or curation actor never imports
diffusers; a curation actor never imports Grounding DINO): actors start faster, the driver too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.step import Step
from agents.vlm.base import VLMBackend
from factory.config import Config
from factory.models.common import resolve_dtype

if TYPE_CHECKING:
    from factory.models.flux import FluxComponents
    from factory.models.perception import GroundingModels, SegmentationModels


@dataclass
class PerceptionModels:
    vlm: VLMBackend
    grounding: GroundingModels
    segmentation: SegmentationModels
    text_encoders: FluxComponents | None = None  # set when the prompt is encoded in perception


@dataclass
class CurationModels:
    lpips: Any  # lpips.LPIPS
    vlm: VLMBackend


def load_perception_models(config: Config, vlm: VLMBackend) -> PerceptionModels:
    from factory.models.perception import load_grounding, load_segmentation

    encoders = None
    if config.factory.synthesis.text_encoders_in == "perception":  # FLUX's text encoders (diffusers) only then
        from factory.models.flux import load_flux

        encoders = load_flux(config.models, image=False)
    return PerceptionModels(vlm, load_grounding(config.models), load_segmentation(config.models), encoders)


def perception_steps(config: Config, models: PerceptionModels) -> list[Step]:
    from agents.describe import Describe
    from agents.encode_prompt import EncodePrompt
    from agents.ground import GroundAndSegment
    from agents.planner import PlanArtifacts

    steps: list[Step] = [Describe(models.vlm, config.perception.max_phrases),
                         GroundAndSegment(models.grounding, models.segmentation, config.perception)]
    if models.text_encoders is not None:
        steps.append(EncodePrompt(models.text_encoders, config.injection.max_sequence_length,
                                  resolve_dtype(config.models)))
    return [*steps, PlanArtifacts(config.perception, config.tools)]


def synthesis_steps(config: Config, flux: FluxComponents) -> list[Step]:
    from agents.synthesis import Synthesize

    return [Synthesize(flux, config.injection)]


def load_curation_models(config: Config, vlm: VLMBackend) -> CurationModels:
    from factory.models.lpips import load_lpips

    return CurationModels(load_lpips(config.models), vlm)


def curation_steps(config: Config, models: CurationModels) -> list[Step]:
    from agents.explain import Explain
    from agents.pixel_checks import PixelChecks
    from agents.verdicts import Verdicts

    return [PixelChecks(models.lpips, config.curation),
            Verdicts(models.vlm, config.curation),
            Explain(models.vlm, config.curation)]
