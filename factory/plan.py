"""The job's plan: every (photo, seed) sample of the source, in the order the job runs and commits them.

A photo's ``seeds_together`` seeds form a *group*: they are perceived and inverted together and always
run whole (``factory.pipeline`` explains why the order makes the same command commit the same rows).
``plan_stream`` cuts the next stream from the plan, ``photo_blocks`` cuts a stream into Ray Data blocks
that never split a group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from factory.config import Config
from shards.record import make_sample_id


def sample_seed(factory_seed: int, source_id: str, seed_index: int) -> int:
    """The per-sample RNG seed: a pure function of the run seed, the source and the seed index."""
    digest = hashlib.sha256(f"{factory_seed}\x00{source_id}\x00{seed_index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def work_schema() -> pa.Schema:
    return pa.schema([("sample_id", pa.string()), ("source_id", pa.string()), ("seed", pa.int64()),
                      ("uri", pa.string()), ("data", pa.binary()), ("group", pa.int64())])


@dataclass
class WorkItem:
    sample_id: str
    source_id: str
    seed: int
    uri: str
    data: bytes = b""
    group: int = 0  # the photo group's index in plan order: its seeds always run together


def candidates(config: Config) -> Iterator[WorkItem]:
    """All (source, seed) pairs in plan order, a photo's ``seeds_together`` seeds next to each other as
    one group: every source at seed indices 0 … k−1, then every source at k … 2k−1, ... (k = 1: one seed
    of every photo before any photo's second)."""
    from factory.sources import list_sources

    items = list_sources(config.source)
    if not items:
        raise ValueError(f"source {config.source.uri!r} holds no images")
    config_hash = config.config_hash()
    per_image, together = config.factory.seeds_per_image, config.factory.seeds_together
    group = 0
    for first in range(0, per_image, together):
        for item in items:
            for seed_index in range(first, min(first + together, per_image)):
                seed = sample_seed(config.factory.seed, item.source_id, seed_index)
                yield WorkItem(make_sample_id(item.source_id, seed, config_hash), item.source_id, seed,
                               item.uri, item.data, group)
            group += 1


def plan_stream(plan: list[WorkItem], cursor: int, finished: set[str]) -> list[WorkItem]:
    """The next stream: every group from the one at ``cursor`` on that holds an unfinished sample, whole.

    ``finished`` holds the committed samples and those waiting in the reorder buffer. A group runs
    whole even when some of its samples are finished, so its samples' pixels never depend on which
    of them happened to finish first; the driver drops the repeated rows."""
    if cursor >= len(plan):
        return []
    start = cursor
    while start > 0 and plan[start - 1].group == plan[cursor].group:  # the cursor's group from its first seed
        start -= 1
    open_groups = {w.group for w in plan[cursor:] if w.sample_id not in finished}
    return [w for w in plan[start:] if w.group in open_groups]


def photo_blocks(items: list[WorkItem], rows: int) -> list[tuple[int, int]]:
    """(start, stop) of blocks of about ``rows`` items that never split a photo group."""
    blocks, start = [], 0
    for i in range(1, len(items) + 1):
        if i == len(items) or (i - start >= rows and items[i].group != items[i - 1].group):
            blocks.append((start, i))
            start = i
    return blocks
