"""Writing samples to Parquet shards (README, "Output format").

Owns the file layout (rows come from ``shards.rows``): one row group per
``row_group_size`` samples, image columns stored uncompressed and without dictionaries or
statistics (PNG is already compressed), every other column ``compression`` (zstd by default).

Commits are all-or-nothing. A local shard is written to a hidden temporary file in the target
directory, fsynced and renamed over the final name (``os.replace``), so a crash leaves either
no file or the whole file — never a partial ``*.parquet``. Object stores (any fsspec URL such as
``s3://``) have no atomic rename; there the whole file is built in memory first and uploaded to
its final name in one write, which object stores make visible only once complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from shards.record import Sample
from shards.rows import samples_to_table
from shards.schema import IMAGE_COLUMNS, SHARD_SCHEMA


def _leaf_paths(name: str, dtype: pa.DataType) -> list[str]:
    """Parquet column paths of one Arrow field (lists as ``name.list.element``)."""
    if pa.types.is_struct(dtype):
        return [p for i in range(dtype.num_fields)
                for p in _leaf_paths(f"{name}.{dtype.field(i).name}", dtype.field(i).type)]
    if pa.types.is_list(dtype):
        return _leaf_paths(f"{name}.list.element", dtype.value_type)
    return [name]


def _writer(sink: str | BinaryIO | pa.NativeFile, compression: str) -> pq.ParquetWriter:
    image_paths = {p for c in IMAGE_COLUMNS for p in _leaf_paths(c, SHARD_SCHEMA.field(c).type)}
    all_paths = [p for f in SHARD_SCHEMA for p in _leaf_paths(f.name, f.type)]
    other_paths = [p for p in all_paths if p not in image_paths]
    return pq.ParquetWriter(
        sink, SHARD_SCHEMA,
        compression={p: "NONE" if p in image_paths else compression for p in all_paths},
        use_dictionary=other_paths,
        write_statistics=other_paths,
    )


def _write_rows(sink: BinaryIO | pa.NativeFile, samples: Sequence[Sample], row_group_size: int,
                compression: str) -> None:
    """Convert and write one row group at a time, so a bad sample fails mid-file (and is caught)."""
    with _writer(sink, compression) as writer:
        for start in range(0, len(samples), row_group_size):
            chunk = samples_to_table(samples[start:start + row_group_size])
            writer.write_table(chunk, row_group_size=row_group_size)


def write_shard(samples: Sequence[Sample], path: str | os.PathLike, row_group_size: int = 64,
                compression: str = "zstd") -> Path | str:
    """Write ``samples`` as one Parquet shard at ``path`` (local path or fsspec URL), all or nothing.

    Returns the local ``Path``, or the URL for remote filesystems.
    """
    if row_group_size < 1:
        raise ValueError(f"row_group_size must be ≥ 1, got {row_group_size}")
    fs, target = fsspec.core.url_to_fs(str(path))
    if not isinstance(fs, LocalFileSystem):
        buffer = pa.BufferOutputStream()
        _write_rows(buffer, samples, row_group_size, compression)
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(target, "wb") as f:
            f.write(buffer.getvalue().to_pybytes())
        return str(path)

    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_rows(f, samples, row_group_size, compression)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, final)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return final
