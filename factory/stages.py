"""The Ray Data stages: the factory's steps (``agents.step``), read top to bottom —

    [perception: decode → describe → ground + segment → plan] → [synthesis: synthesize]
           → [curation: pixel checks → verdicts → explain]

``decode_sources`` runs first in each perception actor's call (no task workers of its own); each bracket is
one actor pool (``PoolStage``) that loads its steps' models once per actor and runs its step list
(``factory.steps``), which gives each step only the config sections it reads. The VLM is
the run's shared service (``factory.vlm_service``), passed in by the driver.

Each stage maps a ``pyarrow`` batch in the transport schema (``shards.schema.TRANSPORT_SCHEMA``) to a
batch in the same schema, one row in and one row out, so every sample keeps flowing to the driver
with its outcome and resume can key on ``sample_id``. Outcomes are kept apart by who said no:

* the *data* (a bad file, nothing found, a check failed): the agent rejects the sample with a
  reason — a final answer, committed like an accepted row;
* the *infrastructure* (a VLM server down after its retries, CUDA out of memory at batch size 1,
  any unexpected exception — a bug): the stage marks the batch's samples ``failed`` with the
  traceback. The driver never commits a failed sample; it retries it in a new stream and stops
  the job when a stage keeps failing. CUDA out-of-memory first halves the batch and retries.

A crashed actor process is restarted by Ray Data (unlimited restarts and task retries by default).
Each actor is named after its stream (``actor_names``), so the driver can kill an abandoned stream's
actors (``kill_actors``): Ray Data only drops its references to them, and an actor stuck in a task, or
kept for the lineage of an object lost with its node, would otherwise keep its GPU from the next stream.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import torch

from agents.step import Pixels, Step, call_step, photo_key, run_steps
from factory.config import Config
from factory.plan import WorkItem, photo_blocks, work_schema
from factory.vlm_service import VLMClient, connect_vlm
from shards.images import encode_png
from shards.record import Sample, SourceInfo
from shards.rows import samples_to_table, table_to_samples

log = logging.getLogger("flawforge.stages")


def decode_sources(batch: pa.Table, config_json: str) -> pa.Table:
    """Work items (sample_id, source_id, seed, uri, data) → samples with ``real_image`` set.

    Runs where the perception actors run (CPU): reading bytes, decoding, EXIF transpose, RGB, and
    resizing to the processed size, once per photo for all its seeds in the batch. A bad or missing
    file becomes a rejected sample with the reason; any other error (a storage outage, permissions,
    a bug) fails the sample, so the source is tried again.
    """
    config = Config.model_validate_json(config_json)
    samples, photos = [], {}
    for item in batch.to_pylist():
        sample = Sample(sample_id=item["sample_id"], source_id=item["source_id"], seed=int(item["seed"]))
        sample.source = SourceInfo(uri=item["uri"])
        start = time.perf_counter()
        key = (item["source_id"], item["uri"])
        if key not in photos:
            photos[key] = _decode_photo(item, config)
        outcome = photos[key]
        if isinstance(outcome, tuple):
            sample.source, sample.real_image = dataclasses.replace(outcome[0]), outcome[1]
        elif isinstance(outcome, str):
            sample.reject(outcome)
        else:  # storage outage, permissions, a bug: retried, never used up
            sample.fail("decode", outcome)
        sample.provenance = {"timings": {"decode": time.perf_counter() - start}}
        samples.append(sample)
    return samples_to_table(samples, transport=True)


def _decode_photo(item: dict, config: Config) -> tuple[SourceInfo, bytes] | str | Exception:
    """One photo's source info and processed PNG, or the rejection reason (the data said no), or the
    exception (the infrastructure did)."""
    from factory.sources import ImageRejected, SourceItem, decode_source, prepare_image, read_bytes

    try:
        data = item["data"] if item["data"] else read_bytes(SourceItem(item["source_id"], item["uri"]))
        decoded = decode_source(data, config.source)
        rgb = prepare_image(decoded.rgb, config.image)
    except ImageRejected as err:
        return f"bad_input:{err.reason}"
    except (FileNotFoundError, IsADirectoryError) as err:  # the listing names a file that is not there
        return f"bad_input:missing:{type(err).__name__}"
    except Exception as err:  # noqa: BLE001 — returned, and the sample fails with it
        return err
    info = SourceInfo(uri=item["uri"], width=decoded.width, height=decoded.height, sha256=decoded.sha256)
    return info, encode_png(np.ascontiguousarray(rgb))


class PoolStage:
    """One Ray Data actor pool running consecutive steps (``agents.step``) on each batch.

    ``build`` loads the steps' models once per actor; ``__call__`` maps one batch, each step on the
    samples it applies to, with each image decoded once for all of them (``agents.step.Pixels``).
    Steps share a pool where they share a device and a decoded photo: splitting them into pools of
    their own would serialise every sample between them for nothing."""

    name = "pool"

    def __init__(self, config_json: str, vlm: VLMClient | None = None, actors=None):
        self.config_json = config_json
        self.steps: list[Step] = self.build(Config.model_validate_json(config_json), vlm)
        if actors is not None:  # the driver's ActorStarts: how many actors each pool started
            actors.started.remote(self.name)

    def build(self, config: Config, vlm: VLMClient | None) -> list[Step]:
        raise NotImplementedError

    def samples_in(self, batch: pa.Table) -> list[Sample]:
        """The batch's samples, as the previous pool left them."""
        return table_to_samples(batch)

    def __call__(self, batch: pa.Table) -> pa.Table:
        samples = self.samples_in(batch)
        pending = [s for s in samples if s.is_pending]
        start = time.perf_counter()
        run_steps(self.steps, pending, Pixels(), call=self.run_step)
        per_sample = (time.perf_counter() - start) / max(len(pending), 1)
        for s in pending:
            s.provenance.setdefault("timings", {})[self.name] = per_sample
        return samples_to_table(samples, transport=True)

    def run_step(self, step: Step, samples: list[Sample], pixels: Pixels) -> None:
        """``step`` on ``samples`` in place; out of memory halves the batch, other errors fail it."""
        try:
            call_step(step, samples, pixels)
        except torch.OutOfMemoryError as err:
            photos = list(dict.fromkeys(photo_key(s) for s in samples))
            if len(photos) == 1:  # a photo group is never split: its samples share one engine batch
                for s in samples:
                    s.fail(self.name, err)
                return
            _free_accelerator_memory()
            first = set(photos[:len(photos) // 2])
            half = [s for s in samples if photo_key(s) in first]
            rest = [s for s in samples if photo_key(s) not in first]
            log.warning("%s/%s: out of memory on a batch of %d photos; retrying as %d + %d", self.name, step.name,
                        len(photos), len(first), len(photos) - len(first))
            self.run_step(step, half, pixels)
            self.run_step(step, rest, pixels)
        except Exception as err:  # a server down, a bug, ...: the infrastructure said no
            log.exception("%s/%s failed on a batch of %d", self.name, step.name, len(samples))
            for s in samples:
                s.fail(self.name, err)


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PerceptionStage(PoolStage):
    """describe (VLM service) → ground + segment (Grounding DINO, SAM) → [encode prompt (CLIP, T5)] → plan.

    Describe, ground + segment and encode prompt run once per photo for all its seeds; the plan is
    drawn per seed. The prompt is encoded here when ``factory.synthesis.text_encoders_in`` says so."""

    name = "perception"

    def samples_in(self, batch: pa.Table) -> list[Sample]:
        """Work items, decoded here (``decode_sources``): the first pool reads the photos itself."""
        return table_to_samples(decode_sources(batch, self.config_json))

    def build(self, config: Config, vlm: VLMClient | None) -> list[Step]:
        from factory.steps import load_perception_models, perception_steps

        return perception_steps(config, load_perception_models(config, connect_vlm(config, vlm)))


class SynthesisStage(PoolStage):
    """synthesize (FLUX inversion + injection), with the transformer as ``factory.synthesis`` says:
    float8, compiled and warmed up. One photo group per engine call (``agents.synthesis``)."""

    name = "synthesis"

    def build(self, config: Config, vlm: VLMClient | None) -> list[Step]:
        from factory.models.flux import float8_transformer, load_flux
        from factory.steps import synthesis_steps

        run = config.factory.synthesis
        components = load_flux(config.models, text=run.text_encoders_in == "synthesis")
        if run.fp8:
            float8_transformer(components.transformer)
        [step] = steps = synthesis_steps(config, components)
        if run.compile == "always" or (run.compile == "on_cuda" and step.engine.device.type == "cuda"):
            step.engine.compile(run.compile_backend)
            if run.warmup:  # compile now, on a blank photo of the largest size, not on the first sample
                side = config.image.max_side - config.image.max_side % config.image.cell
                start = time.perf_counter()
                peak = step.engine.warm_up(side, side, config.factory.seeds_together)
                log.info("synthesis warm-up (%d×%d, %d plans, compiled): %.1f s, %.2f GiB peak", side, side,
                         config.factory.seeds_together, time.perf_counter() - start, peak / 2**30)
        return steps


class CurationStage(PoolStage):
    """pixel checks (leak, LPIPS) → VLM verdicts and the image's verdict → explain (VLM service)."""

    name = "curation"

    def build(self, config: Config, vlm: VLMClient | None) -> list[Step]:
        from factory.steps import curation_steps, load_curation_models

        return curation_steps(config, load_curation_models(config, connect_vlm(config, vlm)))


# The factory top to bottom: these actor pools in order (perception decodes the photos first).
STAGES: dict[str, type[PoolStage]] = {
    "perception": PerceptionStage,
    "synthesis": SynthesisStage,
    "curation": CurationStage,
}


def build_dataset(items: list[WorkItem], config: Config, vlm: VLMClient | None = None, actors: Any = None,
                  actor_prefix: str | None = None):
    """The streaming graph of one stream: one actor pool per agent (perception decodes the photos); the
    agents that ask a VLM share the run's ``vlm`` service, every actor reports its start to ``actors``
    (``factory.actor_starts.ActorStarts``), and with ``actor_prefix`` each is named by ``actor_names``."""
    import ray

    config_json = config.model_dump_json()
    # Blocks are cut on the driver (no read or repartition tasks, which would each need a whole
    # CPU beside the actor pools: the deadlock of a pool that holds every CPU).
    # A block holds whole photo groups (their seeds share perception and inversion) and about one
    # batch of the largest stage, so every actor gets work as soon as the stream starts (a huge plan:
    # at most about factory.max_blocks blocks).
    table = pa.Table.from_pylist([w.__dict__ for w in items], schema=work_schema())
    largest_batch = max(getattr(config.factory, name).batch_size for name in STAGES)
    rows = max(largest_batch, math.ceil(len(items) / config.factory.max_blocks))
    ds = ray.data.from_arrow([table.slice(start, stop - start) for start, stop in photo_blocks(items, rows)])
    for name, stage_cls in STAGES.items():
        stage = getattr(config.factory, name)
        ds = ds.map_batches(
            stage_cls,
            fn_constructor_kwargs={"config_json": config_json, "vlm": vlm, "actors": actors},
            batch_format="pyarrow",
            batch_size=stage.batch_size,
            compute=stage.compute(),
            num_cpus=stage.num_cpus,
            num_gpus=stage.num_gpus or None,
            ray_remote_args_fn=actor_names(f"{actor_prefix}{name}-") if actor_prefix else None,
        )  # Ray Data restarts crashed actors and retries their tasks by default (max_restarts=-1)
    return ds


def actor_names(prefix: str) -> Callable[[], dict[str, str]]:
    """Ray Data's ``ray_remote_args_fn`` for a pool: each actor it creates is named ``prefix`` + a number.
    A named actor is still garbage-collected once nobody holds it, as Ray Data expects."""
    numbers = itertools.count()
    return lambda: {"name": f"{prefix}{next(numbers)}"}


def kill_actors(prefix: str) -> int:
    """Kill (without restart) every live actor whose name starts with ``prefix``: an abandoned stream's
    pools, so that what they held (a GPU) is free for the next stream. Returns how many."""
    import ray

    names = [name for name in ray.util.list_named_actors() if name.startswith(prefix)]
    for name in names:
        try:
            ray.kill(ray.get_actor(name), no_restart=True)
        except ValueError:  # it died between the listing and the lookup
            pass
    return len(names)
