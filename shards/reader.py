"""Reading Parquet shards back into ``Sample`` records.

Owns shard discovery (rows become samples in ``shards.rows``):
a path is a ``.parquet`` file, a run directory (its ``data/*.parquet`` if present, else its own
``*.parquet``), a local path or any fsspec URL, or a list of those. Hidden files (``.``/``_``
prefixed, e.g. a writer's temporary file) are never read.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from shards.record import Sample
from shards.rows import table_to_samples

PathLike = str | os.PathLike
ShardPaths = PathLike | Sequence[PathLike]


def _shard_files(path: ShardPaths) -> list[tuple[fsspec.AbstractFileSystem, str]]:
    """Every shard file named by ``path``, as (filesystem, path) pairs, each directory sorted."""
    if not isinstance(path, (str, os.PathLike)):
        return [f for p in path for f in _shard_files(p)]
    fs, root = fsspec.core.url_to_fs(str(path))
    if not fs.isdir(root):
        return [(fs, root)]
    data = f"{root.rstrip('/')}/data"
    folder = data if fs.isdir(data) else root.rstrip("/")
    files = sorted(f for f in fs.glob(f"{folder}/*.parquet") if not f.rsplit("/", 1)[-1].startswith((".", "_")))
    return [(fs, f) for f in files]


def shard_files(path: ShardPaths) -> list[str]:
    """Every shard file under ``path``: local paths as they are, remote ones as URLs (``s3://...``),
    so pyarrow and ``ray.data.read_parquet`` can open them. Raises when there is none."""
    files = [f if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(f) for fs, f in _shard_files(path)]
    if not files:
        raise FileNotFoundError(f"no Parquet shards under {path}")
    return files


def iter_samples(path: ShardPaths) -> Iterator[Sample]:
    """Samples of every shard under ``path``, in file order, one row group in memory at a time."""
    for fs, file in _shard_files(path):
        with pq.ParquetFile(file, filesystem=fs) as shard:
            for i in range(shard.num_row_groups):
                yield from table_to_samples(shard.read_row_group(i))


def read_table(path: ShardPaths, columns: list[str] | None = None) -> pa.Table:
    """All shards under ``path`` as one table (schema metadata kept), optionally only ``columns``."""
    tables = [pq.read_table(file, filesystem=fs, columns=columns) for fs, file in _shard_files(path)]
    if not tables:
        raise FileNotFoundError(f"no Parquet shards under {path}")
    return pa.concat_tables(tables)


def count_rows(path: ShardPaths) -> int:
    """Number of rows in all shards under ``path``, from the footers alone."""
    total = 0
    for fs, file in _shard_files(path):
        with pq.ParquetFile(file, filesystem=fs) as shard:
            total += shard.metadata.num_rows
    return total
