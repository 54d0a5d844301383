"""The Ray Data stages: one callable per agent, loading its models once per actor.

Each stage maps a ``pyarrow`` batch in the transport schema (``shards.record.row_schema``) to a
batch in the same schema, one row in and one row out, so rejected samples keep flowing with their
reason and resume can key on ``sample_id``. An exception inside an agent rejects the samples of
that batch with the reason instead of failing the job; a crashed actor process is restarted by Ray
Data (its actor pools default to unlimited restarts and task retries).
"""

from __future__ import annotations

import hashlib
import time
import traceback
from typing import Callable

import numpy as np
import pyarrow as pa

from factory.config import Config
from shards.images import encode_png
from shards.record import Sample, SourceInfo, from_transport_table, to_transport_table


def decode_sources(batch: pa.Table, config_json: str) -> pa.Table:
    """Work items (sample_id, source_id, seed, uri, data) → samples with ``real_image`` set.

    Runs as plain Ray tasks (CPU): reading bytes, decoding, EXIF transpose, RGB, and resizing to
    the processed size. A bad file becomes a rejected sample with the reason.
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
        except Exception as err:  # unreadable URI, permissions, ...: recorded, never fatal
            sample.reject(f"bad_input:read_error:{type(err).__name__}: {err}"[:300])
        sample.provenance = {"timings": {"decode": time.perf_counter() - start}}
        samples.append(sample)
    return to_transport_table(samples)


class AgentStage:
    """Base of the actor stages: ``build`` loads models once; ``__call__`` maps one batch."""

    name = "agent"

    def __init__(self, config_json: str):
        self.config = Config.model_validate_json(config_json)
        self.agent: Callable[[list[Sample]], list[Sample]] = self.build(self.config)

    def build(self, config: Config) -> Callable[[list[Sample]], list[Sample]]:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        samples = from_transport_table(batch)
        pending = [s for s in samples if not s.is_rejected]
        start = time.perf_counter()
        if pending:
            try:
                by_id = {s.sample_id: s for s in self.agent(pending)}
            except Exception as err:  # the whole batch failed: reject it with the reason, go on
                reason = f"{self.name}_error:{type(err).__name__}: {err}"[:300]
                traceback.print_exc()
                by_id = {s.sample_id: s.reject(reason) for s in pending}
            samples = [by_id.get(s.sample_id, s) for s in samples]
        per_sample = (time.perf_counter() - start) / max(len(pending), 1)
        pending_ids = {s.sample_id for s in pending}
        for s in samples:
            if s.sample_id in pending_ids:
                s.provenance.setdefault("timings", {})[self.name] = per_sample
        return to_transport_table(samples)


class PerceptionStage(AgentStage):
    name = "perception"

    def build(self, config: Config):
        from agents.perception import PerceptionAgent
        from factory.models.perception import load_grounding, load_segmentation
        from factory.models.vlm import load_vlm

        return PerceptionAgent(load_vlm(config.models), load_grounding(config.models),
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
        from factory.models.vlm import load_vlm

        return CurationAgent(load_vlm(config.models), load_lpips(config.models), config)


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
