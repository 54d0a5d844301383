"""The shard format: ``Sample`` records persisted as Parquet shards with a dataset card.

``record`` (the Sample), ``images`` (PNG codec), ``schema`` (Arrow schema + ``datasets``
features), ``writer`` (atomic shard writes), ``reader`` (shards back to Samples), ``card``
(the run's ``README.md``), ``split`` (the held-out split by source image), ``export``
(LLaMA-Factory / ShareGPT conversations for VLM fine-tuning).
"""

from shards.card import write_dataset_card
from shards.reader import count_rows, iter_samples, read_table, shard_files, table_to_samples
from shards.record import SCHEMA_VERSION, Artifact, Sample, SourceInfo, make_sample_id
from shards.schema import SHARD_SCHEMA
from shards.writer import samples_to_table, write_shard

__all__ = [
    "SCHEMA_VERSION", "SHARD_SCHEMA", "Artifact", "Sample", "SourceInfo", "count_rows", "iter_samples",
    "make_sample_id", "read_table", "samples_to_table", "shard_files", "table_to_samples", "write_dataset_card",
    "write_shard",
]
