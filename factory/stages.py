"""The Ray Data stages: one callable per agent, loading its models once per actor (the VLM is the
run's shared service, ``factory.vlm_service``, passed in by the driver).

Each stage maps a ``pyarrow`` batch in the transport schema (``shards.schema.TRANSPORT_SCHEMA``) to a
batch in the same schema, one row in and one row out, so every sample keeps flowing to the driver
with its outcome and resume can key on ``sample_id``. Outcomes are kept apart by who said no:

* the *data* (a bad file, nothing found, a check failed): the agent rejects the sample with a
  reason — a final answer, committed like an accepted row;
* the *infrastructure* (a VLM server down after its retries, CUDA out of memory at batch size 1,
  any unexpected exception — a bug): the stage marks the batch's samples ``failed`` with the
  traceback. The driver never commits a failed sample; it retries it in a later round and stops
  the job when a stage keeps failing. CUDA out-of-memory first halves the batch and retries.

A crashed actor process is restarted by Ray Data (unlimited restarts and task retries by default).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from factory.config import Config
from factory.vlm_service import VLMClient, connect_vlm
from shards.images import encode_png
from shards.record import Sample, SourceInfo
from shards.rows import samples_to_table, table_to_samples

log = logging.getLogger("flawforge.stages")


def decode_sources(batch: pa.Table, config_json: str) -> pa.Table:
    """Work items (sample_id, source_id, seed, uri, data) → samples with ``real_image`` set.

    Runs as plain Ray tasks (CPU): reading bytes, decoding, EXIF transpose, RGB, and resizing to
    the processed size. A bad or missing file becomes a rejected sample with the reason; any other
    error (a storage outage, permissions, a bug) fails the sample, so the source is tried again.
    """
    from factory.sources import ImageRejected, SourceItem, decode_source, prepare_image, read_bytes

    config = Config.model_validate_json(config_json)
    samples = []
    for item in batch.to_pylist():
        sample = Sample(sample_id=item["sample_id"], source_id=item["source_id"], seed=int(item["seed"]))
        sample.source = SourceInfo(uri=item["uri"])
        start = time.perf_counter()
        try:
            data = item["data"] if item["data"] else read_bytes(SourceItem(item["source_id"], item["uri"]))
            decoded = decode_source(data, config.source)
            rgb = prepare_image(decoded.rgb, config.image)
            sample.source = SourceInfo(uri=item["uri"], width=decoded.width, height=decoded.height,
                                       sha256=decoded.sha256)
            sample.real_image = encode_png(np.ascontiguousarray(rgb))
        except ImageRejected as err:
            sample.reject(f"bad_input:{err.reason}")
        except (FileNotFoundError, IsADirectoryError) as err:  # the listing names a file that is not there
            sample.reject(f"bad_input:missing:{type(err).__name__}")
        except Exception as err:  # storage outage, permissions, a bug: retried, never used up
            sample.fail("decode", err)
        sample.provenance = {"timings": {"decode": time.perf_counter() - start}}
        samples.append(sample)
    return samples_to_table(samples, transport=True)


class AgentStage:
    """Base of the actor stages: ``build`` loads models once; ``__call__`` maps one batch."""

    name = "agent"

    def __init__(self, config_json: str, vlm: VLMClient | None = None):
        self.config = Config.model_validate_json(config_json)
        self.vlm = vlm  # the run's shared VLM service (``factory.vlm_service``), for the stages that ask it
        self.agent: Callable[[list[Sample]], list[Sample]] = self.build(self.config)

    def build(self, config: Config) -> Callable[[list[Sample]], list[Sample]]:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        samples = table_to_samples(batch)
        pending = [s for s in samples if s.is_pending]
        start = time.perf_counter()
        if pending:
            self.run_agent(pending)
        per_sample = (time.perf_counter() - start) / max(len(pending), 1)
        for s in pending:
            s.provenance.setdefault("timings", {})[self.name] = per_sample
        return samples_to_table(samples, transport=True)

    def run_agent(self, samples: list[Sample]) -> None:
        """Run the agent on ``samples`` in place; out of memory halves the batch, other errors fail it."""
        try:
            self.agent(samples)  # agents fill in their samples in place
        except torch.OutOfMemoryError as err:
            if len(samples) == 1:
                samples[0].fail(self.name, err)
                return
            _free_accelerator_memory()
            half = len(samples) // 2
            log.warning("%s: out of memory on a batch of %d; retrying as %d + %d", self.name, len(samples),
                        half, len(samples) - half)
            self.run_agent(samples[:half])
            self.run_agent(samples[half:])
            return
        except Exception as err:  # a server down, a bug, ...: the infrastructure said no
            log.exception("%s failed on a batch of %d", self.name, len(samples))
            for s in samples:
                s.fail(self.name, err)


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PerceptionStage(AgentStage):
    name = "perception"

    def build(self, config: Config):
        from agents.perception import PerceptionAgent
        from factory.models.perception import load_grounding, load_segmentation

        return PerceptionAgent(connect_vlm(config, self.vlm), load_grounding(config.models),
                               load_segmentation(config.models), config)


class SynthesisStage(AgentStage):
    name = "synthesis"

    def build(self, config: Config):
        from agents.synthesis import SynthesisAgent
        from factory.models.flux import load_flux

        return SynthesisAgent(load_flux(config.models), config)


class CurationStage(AgentStage):
    name = "curation"

    def build(self, config: Config):
        from agents.curation import CurationAgent
        from factory.models.lpips import load_lpips

        return CurationAgent(connect_vlm(config, self.vlm), load_lpips(config.models), config)


STAGES: dict[str, type[AgentStage]] = {
    "perception": PerceptionStage,
    "synthesis": SynthesisStage,
    "curation": CurationStage,
}


def sample_seed(factory_seed: int, source_id: str, seed_index: int) -> int:
    """The per-sample RNG seed: a pure function of the run seed, the source and the seed index."""
    digest = hashlib.sha256(f"{factory_seed}\x00{source_id}\x00{seed_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def work_schema() -> pa.Schema:
    return pa.schema([("sample_id", pa.string()), ("source_id", pa.string()), ("seed", pa.int64()),
                      ("uri", pa.string()), ("data", pa.binary())])
