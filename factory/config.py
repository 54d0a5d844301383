"""The one typed configuration tree of FlawForge (its presets: ``factory.presets``).

The tree composes the settings each part declares where it is used (``tools.add.AddConfig`` ...
``tools.plan.ToolsConfig``, ``tools.flux.settings.InjectionConfig``, ``agents.settings``) with the
factory's own sections below (sources, models, image, pools, output); every threshold, schedule and
size has the ArtiAgent paper's value as its default (arXiv 2602.20951). A run's config is a preset, then an
optional YAML file, then CLI overrides (``section.field=value``), validated by pydantic so a bad
value names its field. ``config_hash`` is the identity of the work a config describes: it goes
into every ``sample_id`` and guards an output directory against a changed config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from agents.settings import CurationConfig, PerceptionConfig
from factory.presets import PRESETS, ConfigError, config_tree, format_validation_error
from tools.add import AddConfig
from tools.distort import DistortConfig
from tools.flux.settings import InjectionConfig, LayerRange
from tools.fuse import FuseConfig
from tools.grid import CELL
from tools.plan import ToolsConfig
from tools.remove import RemoveConfig
from tools.settings import TOOLS, Strict, ToolName

__all__ = ["PRESETS", "TOOLS", "AddConfig", "Config", "ConfigError", "CurationConfig", "DistortConfig", "FuseConfig",
           "InjectionConfig", "LayerRange", "PerceptionConfig", "RemoveConfig", "Strict", "ToolName", "ToolsConfig",
           "load_config"]


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


# ------------------------------------------------------------------------------------------ image
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
