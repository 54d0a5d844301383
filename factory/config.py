"""The one typed configuration tree of FlawForge (its presets: ``factory.presets``).

Every threshold, schedule and size the stages use lives here, with the ArtiAgent paper's values
as defaults (arXiv 2602.20951). A run's config is a preset, then an
optional YAML file, then CLI overrides (``section.field=value``), validated by pydantic so a bad
value names its field. ``config_hash`` is the identity of the work a config describes: it goes
into every ``sample_id`` and guards an output directory against a changed config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from factory.presets import PRESETS, ConfigError, config_tree, format_validation_error
from shards.record import ARTIFACT_TOOLS
from tools.grid import CELL

__all__ = ["PRESETS", "TOOLS", "Config", "ConfigError", "load_config"]
ToolName = Literal["add", "remove", "distort", "fuse"]
TOOLS: tuple[ToolName, ...] = ARTIFACT_TOOLS  # type: ignore[assignment]


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# ---------------------------------------------------------------------------------------- sources
class SourceConfig(Strict):
    uri: str = Field("samples", description="'samples', a folder, a glob, an fsspec URI or a Parquet file/dir")
    image_column: str = Field("image", description="image column when the source is Parquet")
    id_column: str | None = Field(None, description="column holding a stable id when the source is Parquet")
    min_side: int = Field(64, ge=16, description="smaller images are rejected")
    max_pixels: int = Field(50_000_000, ge=1, description="larger images are rejected (decompression bombs)")
    max_bytes: int = Field(200 * 2**20, ge=1, description="larger files are rejected before decoding")


# ----------------------------------------------------------------------------------------- models
class ModelSpec(Strict):
    """Where one model comes from. ``tiny`` builds a random model of the production class offline;
    ``random`` (FLUX only, for benchmarks) builds the production-size architecture with random weights."""

    kind: Literal["tiny", "pretrained", "random"] = "tiny"
    path: str | None = Field(None, description="local folder or Hugging Face id (pretrained only)")
    revision: str | None = None
    local_files_only: bool = Field(True, description="never download at run time unless asked")

    @model_validator(mode="before")
    @classmethod
    def _a_section_not_a_name(cls, data: Any) -> Any:
        if isinstance(data, str):  # `--set models.vlm.model=NAME`: say which field takes a name
            raise ValueError(f"a model is a section (kind, path, revision, local_files_only), not a name: set its "
                             f".path={data} (with .kind=pretrained); a VLM behind an OpenAI-compatible server "
                             "takes its name in models.vlm.openai_model")
        return data

    @model_validator(mode="after")
    def _pretrained_needs_path(self) -> ModelSpec:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("a pretrained model needs 'path' (a local folder or a Hugging Face id)")
        return self


class VLMConfig(Strict):
    backend: Literal["transformers", "vllm", "openai", "scripted"] = Field(
        "transformers", description="'scripted': deterministic answers from a lexicon, no model (tiny preset)")
    model: ModelSpec = ModelSpec()
    base_url: str | None = Field(None, description="OpenAI-compatible server URL (backend 'openai')")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    openai_model: str | None = Field(None, description="model name sent to the OpenAI-compatible server; "
                                     "unset: the one model its /v1/models lists")
    max_new_tokens: int = Field(384, ge=16)
    temperature: float = Field(0.0, ge=0.0)
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(4, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="vLLM's share of its GPU (backend "
                                          "'vllm'); the VLM server holds a GPU of its own (factory.vlm.num_gpus)")
    scripted_visible_share: float = Field(0.7, ge=0, le=1,
                                          description="share of triplet checks the scripted backend passes")


class ModelsConfig(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = Field(0, description="seed of the tiny random models")
    vlm: VLMConfig = VLMConfig()
    grounding: ModelSpec = ModelSpec()
    segmentation: ModelSpec = ModelSpec()
    segmentation_family: Literal["sam", "sam2"] = "sam"
    flux: ModelSpec = ModelSpec()
    lpips: ModelSpec = ModelSpec()

    @model_validator(mode="after")
    def _random_only_for_flux(self) -> ModelsConfig:
        for name in ("grounding", "segmentation", "lpips"):
            if getattr(self, name).kind == "random":
                raise ValueError(f"{name}: kind 'random' is for flux only (benchmarks at production size)")
        if self.vlm.model.kind == "random":
            raise ValueError("vlm.model: kind 'random' is for flux only (benchmarks at production size)")
        return self


# ------------------------------------------------------------------------------------- perception
class ImageConfig(Strict):
    cell: int = Field(CELL, description="pixels per FLUX token side (8x VAE, 2x2 packing); fixed")
    min_short_side: int = Field(480, ge=16, description="shorter sides are upscaled to this")
    max_side: int = Field(1024, ge=16, description="longer sides are downscaled to this")

    @model_validator(mode="after")
    def _multiples_of_cell(self) -> ImageConfig:
        if self.cell != CELL:
            raise ValueError(f"cell must be {CELL}: one FLUX token covers {CELL}x{CELL} pixels")
        if self.max_side < self.min_short_side:
            raise ValueError("max_side must be >= min_short_side")
        return self


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


# ------------------------------------------------------------------------------------------ tools
class AddConfig(Strict):
    """Anchors lie on a ring just outside the part: a cell whose L1 distance to the part's box centre
    exceeds that of its nearest outermost part cell by at most ``ring_width``."""

    min_in_bounds: float = Field(0.5, ge=0, le=1, description="skip shifts that keep less of the part")
    shift_penalty: float = Field(0.05, ge=0, description="score / (1 + penalty * L1 shift length)")
    ring_width: int = Field(2, ge=1, description="width (cells) of the anchor ring outside the part")


class RemoveConfig(Strict):
    ring_radius: int = Field(1, ge=1, description="Chebyshev radius of the reference ring (1: 8-neighbours)")
    max_ring_radius: int = Field(1, ge=1, description="grow the ring up to this radius while it is all blocked")
    min_background_share: float = Field(
        0.5, ge=0, lt=1, description="use only ring cells outside every entity when they are more than this share")


class DistortConfig(Strict):
    kernels: list[Literal["permute", "jitter", "strips"]] = ["permute", "jitter", "strips"]
    jitter_sigma_cells: float = Field(1.0, gt=0)
    jitter_redraws: int = Field(10, ge=0, description="redraws of a jitter offset that leaves the grid or entity")
    strip_shifts: list[int] = Field([0, 1, 3, -2, -3, -4], min_length=2,
                                    description="cells each strip is rolled by, shuffled per part (the authors')")
    targets: Literal["part", "moved"] = Field(
        "part", description="'part': the whole part is the target and the label (the authors'); 'moved': only "
                            "the cells that move")


class FuseConfig(Strict):
    min_overlap_cells: int = Field(5, ge=1)
    max_containment: float = Field(0.7, ge=0, le=1)
    band_radius: int = Field(2, ge=1, description="L1 radius (cells) of the band around the overlap")
    seeds: int = Field(5, ge=1, description="farthest-point seeds splitting the band")
    max_offset: int = Field(4, ge=1, description="largest L1 offset (cells) tried to fit a region in the other entity")


class ToolsConfig(Strict):
    add: AddConfig = AddConfig()
    remove: RemoveConfig = RemoveConfig()
    distort: DistortConfig = DistortConfig()
    fuse: FuseConfig = FuseConfig()


# -------------------------------------------------------------------------------------- injection
class LayerRange(Strict):
    """Blocks [start, stop) in the frame of a model with ``of`` blocks, rescaled to the real count.

    The paper's schedule is written for FLUX.1-dev (19 double, 38 single blocks); a tiny model
    with 4 single blocks maps single blocks 0-18 of 38 to 0-1 and 20-37 of 38 to 2-3.
    """

    start: int = Field(0, ge=0)
    stop: int = Field(..., ge=0)
    of: int = Field(..., ge=1)

    def resolve(self, num_blocks: int) -> range:
        lo = round(self.start * num_blocks / self.of)
        hi = round(self.stop * num_blocks / self.of)
        return range(min(lo, num_blocks), min(max(hi, lo), num_blocks))


class InjectionConfig(Strict):
    num_steps: int = Field(25, ge=1)
    solver: Literal["euler", "fireflow"] = "euler"
    guidance_invert: float = 1.0
    guidance_denoise: float = 5.0
    pe_steps: dict[ToolName, int] = Field(
        default_factory=lambda: {"add": 25, "remove": 25, "distort": 15, "fuse": 15},
        description="denoising steps with positional (RoPE) injection, per tool",
    )
    pe_double_blocks: LayerRange = LayerRange(start=0, stop=19, of=19)
    pe_single_blocks: LayerRange = LayerRange(start=0, stop=19, of=38)
    value_single_blocks: LayerRange = LayerRange(start=20, stop=38, of=38)
    value_steps: int = Field(15, ge=0, description="denoising steps with value injection")
    cached_value_rows: Literal["background", "all"] = Field(
        "background", description="rows that take their cached V in value layers before targets read their "
        "reference's: 'background' = image tokens that are not targets (the authors': text keeps its live V, "
        "a target whose reference is a target takes its live V), 'all' = every token")
    value_after_pe: Literal["own", "reference"] = Field(
        "own", description="what a target reads in value layers once its positional steps have ended: 'own' its "
        "own cached V (the authors': it leaves the injected set), 'reference' its reference's until value_steps end")
    time_shift: bool = Field(True, description="resolution-dependent time shift of the schedule (off for schnell)")
    dilation_cells: int = Field(1, ge=0, description="dilation of target cells for the change mask")
    latent_paste: bool = Field(True, description="paste inverted latents outside the change mask every step")
    cache_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where cached values live")
    pin_memory: bool = True
    max_sequence_length: int = Field(512, ge=1, description="T5 tokens of the prompt")


# --------------------------------------------------------------------------------------- curation
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


# ---------------------------------------------------------------------------------------- factory
class StageConfig(Strict):
    """One agent's Ray Data actor pool. It autoscales between ``min_actors`` and ``max_actors``: Ray Data
    adds an actor while the pool's queue backs up and the cluster (or its autoscaler) can place one,
    and removes idle ones; equal bounds give a fixed pool."""

    min_actors: int = Field(1, ge=1, description="actors the pool starts with and never goes below")
    max_actors: int | None = Field(1, ge=1, description="most actors the pool grows to; None: as many as the "
                                                        "cluster can place")
    batch_size: int = Field(1, ge=1, description="samples per call (a multiple of factory.seeds_together)")
    num_gpus: float = Field(0.0, ge=0)
    num_cpus: float = Field(0.5, gt=0, description="keep below 1 so reads/writes keep a CPU")

    @model_validator(mode="after")
    def _bounds(self) -> StageConfig:
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise ValueError(f"max_actors ({self.max_actors}) is below min_actors ({self.min_actors})")
        return self

    def compute(self):
        """The pool as Ray Data's ``ActorPoolStrategy``."""
        import ray

        return ray.data.ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors)


class SynthesisStageConfig(StageConfig):
    """The synthesis pool, plus how its transformer runs: none of this changes a sample's content
    beyond float rounding, so it is not part of the config hash."""

    compile: Literal["never", "on_cuda", "always"] = Field(
        "never", description="torch.compile the FLUX transformer (on_cuda: only where the actor has a GPU)")
    compile_backend: str = Field("inductor", description="torch.compile backend")
    warmup: bool = Field(True, description="when compiled: one call on a blank largest-size photo at actor "
                                           "start, before any sample")
    fp8: bool = Field(False, description="float8 weights and activations in the transformer's linear layers "
                                         "(torchao; H100-class GPUs; pip install '.[fp8]')")
    text_encoders_in: Literal["synthesis", "perception"] = Field(
        "synthesis", description="where captions are encoded: perception keeps CLIP and T5-XXL (~9.5 GB) off "
                                 "the synthesis GPU and sends the embeddings along with the sample")


class VLMServiceConfig(Strict):
    """The run's shared VLM servers (``factory.vlm_service``)."""

    actors: int = Field(1, ge=1, description="VLM servers; every VLM stage sends its requests to them in turn")
    num_gpus: float = Field(0.0, ge=0)
    num_cpus: float = Field(0.1, gt=0, description="logical CPUs per server (its model runs on its GPU, or is "
                                                   "scripted); small, so a 2-CPU machine still fits every pool")


class FactoryConfig(Strict):
    seed: int = 0
    seeds_per_image: int = Field(4, ge=1, description="most seeds tried per source image")
    seeds_together: int = Field(1, ge=1, description="seeds of a photo planned together: perceived once and "
                                                     "inverted once for all of them (the output is the same)")
    max_streams: int = Field(20, ge=1, description="streams per run (a new one only to retry failed samples, "
                                                   "or after a stream broke)")
    stream_retries: int = Field(3, ge=0, description="replans after the stream itself failed (lost node, ...)")
    stream_stall_s: float | None = Field(900.0, gt=0, description="a stream that yields no row for this long is "
                                         "abandoned and replanned, like a broken one (None: wait forever)")
    reorder_buffer: int = Field(512, ge=1, description="finished rows held while an earlier sample of the plan "
                                                       "is unfinished; full behind a failed sample: retry it")
    max_attempts: int = Field(3, ge=1, description="tries per sample in one run before it is left for a re-run")
    breaker_window: int = Field(32, ge=1, description="the circuit breaker looks at this many latest samples")
    breaker_min_failures: int = Field(8, ge=1, description="failures of one stage in the window before it may trip")
    breaker_failure_share: float = Field(0.5, gt=0, le=1,
                                         description="stop the job when one stage failed this share of the window")
    max_blocks: int = Field(10_000, ge=1, description="most Ray Data blocks a stream is cut into (a block is "
                                                      "about one batch of the largest stage, more for a huge plan)")
    perception: StageConfig = StageConfig()
    synthesis: SynthesisStageConfig = SynthesisStageConfig()
    curation: StageConfig = StageConfig()
    vlm: VLMServiceConfig = VLMServiceConfig()
    ray_address: str | None = Field(None, description="None: join RAY_ADDRESS or start a local Ray")
    ray_dashboard: bool = Field(True, description="start Ray's dashboard with a local Ray (about 2 s of start-up "
                                                  "on 2 CPUs); no effect when joining a running cluster")

    @model_validator(mode="after")
    def _photo_batches(self) -> FactoryConfig:
        for name in ("perception", "synthesis"):  # a photo's seeds must fit in one batch to share its work
            if getattr(self, name).batch_size % self.seeds_together:
                raise ValueError(f"{name}.batch_size ({getattr(self, name).batch_size}) must be a multiple of "
                                 f"seeds_together ({self.seeds_together}) so a photo's seeds share one batch")
        return self


class OutputConfig(Strict):
    rows_per_file: int = Field(256, ge=1)
    row_group_size: int = Field(64, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    mask_format: Literal["png"] = "png"
    flush_seconds: float = Field(60.0, gt=0, description="commit a partly filled shard after this long")


class Config(Strict):
    preset: str = "tiny"
    source: SourceConfig = SourceConfig()
    models: ModelsConfig = ModelsConfig()
    image: ImageConfig = ImageConfig()
    perception: PerceptionConfig = PerceptionConfig()
    tools: ToolsConfig = ToolsConfig()
    injection: InjectionConfig = InjectionConfig()
    curation: CurationConfig = CurationConfig()
    factory: FactoryConfig = FactoryConfig()
    output: OutputConfig = OutputConfig()

    def config_hash(self) -> str:
        """Hash of everything that changes what a sample looks like (not where or how robustly it runs:
        a moved VLM server or new retry settings resume the same run)."""
        where = {"device": True, "vlm": {"base_url", "api_key_env", "max_concurrency", "max_retries", "timeout_s",
                                          "gpu_memory_utilization"}}
        data = self.model_dump(mode="json", exclude={"factory": True, "output": True, "source": True, "models": where})
        data["factory_seed"] = self.factory.seed
        data["seeds_together"] = self.factory.seeds_together  # a photo group is one engine batch: its bits
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_config(
    preset: str = "tiny",
    file: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> Config:
    """Build a config: preset, then a YAML file, then ``overrides`` (``{"a.b": v}`` or ``["a.b=v"]``)."""
    tree = config_tree(preset, file, overrides)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
