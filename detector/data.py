"""Shards → detector examples: positives, negatives, a leak-free split and shortcut-removing augmentation.

Every accepted row gives its artifact ``image`` with the mask binarised (k > 0 → 1, ``MASK_IGNORE``
kept as ignore) and, as negatives with an all-zero mask, its ``clean_image`` (the VAE reconstruction the
artifact was composited onto: the same decoder fingerprint, so "VAE trace = artifact" is no
shortcut) and/or its ``real_image`` (``DataConfig.negatives``). The held-out split is
``shards.split``'s hash of ``source_id``, so a real photo and its artifact versions always land on
the same side.
Both classes get the same torchvision augmentation (random JPEG re-encode, random resized crop,
horizontal flip; masks follow with nearest-neighbour resampling), so file format and resampling
traces are no shortcut. Training reads shards with Ray Data (decoded and resized there, augmented by the
trainer with draws seeded per epoch, rank and step, so a training run is reproducible); evaluation
iterates them in plain Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as config_dataclass
from torchvision import tv_tensors
from torchvision.transforms import v2

from shards.images import decode_image, decode_mask
from shards.reader import iter_samples, read_table, shard_files, table_to_samples
from detector.model import TYPE_NAMES
from shards.taxonomy import artifact_category
from shards.record import MASK_IGNORE as IGNORE
from shards.record import NEGATIVE_COLUMNS
from shards.record import Sample
from shards.split import DEFAULT_SALT, DEFAULT_VAL_FRACTION, split_of

Split = Literal["train", "val", "all"]


@config_dataclass(config=ConfigDict(extra="forbid"))
class DataConfig:
    """Split and augmentation (a pydantic dataclass); the input size is the model's
    (``DetectorConfig.image_size``)."""

    val_fraction: float = Field(DEFAULT_VAL_FRACTION, ge=0, le=1)
    split_salt: str = DEFAULT_SALT
    jpeg_prob: float = Field(0.5, ge=0, le=1)
    jpeg_quality: tuple[int, int] = (60, 95)  # inclusive range
    crop_scale: tuple[float, float] = (0.6, 1.0)  # area fraction of the random resized crop
    flip_prob: float = Field(0.5, ge=0, le=1)
    rows_per_map_batch: int = Field(16, gt=0)  # shard rows decoded and transformed per Ray Data map call
    # A split whose decoded rows fit in this many MiB is decoded once per run (``Dataset.materialize``) and
    # read from Ray's object store every epoch; a larger one is decoded anew each epoch (streamed).
    decode_once_mib: float = Field(1024, ge=0)
    negatives: Literal["clean", "real", "both"] = "clean"  # which images of a row are the clean examples
    boxes: Literal["target", "changed"] = "target"  # ground-truth boxes: target cells' (the authors') or changed pixels'


@dataclass
class Example:
    sample_id: str
    source_id: str
    image: Image.Image  # RGB at the shard's size
    mask: np.ndarray  # (H, W) uint8: 0 clean, 1 artifact, ``MASK_IGNORE`` ignore
    label: int  # 1 artifact image, 0 real photo
    types: np.ndarray  # (len(TYPE_NAMES),) float32 multi-hot of accepted artifacts' tools, then X-AIGD categories
    boxes: list[list[int]]  # accepted artifacts' [x0, y0, x1, y1]


def examples_from_sample(sample: Sample, negatives: str = "clean", boxes: str = "target") -> list[Example]:
    """An accepted row → [artifact example, its negative example(s)]; any other row → []."""
    columns = NEGATIVE_COLUMNS[negatives]
    if sample.status != "accepted" or not sample.image or not all(getattr(sample, c) for c in columns):
        return []
    accepted = [a for a in sample.artifacts if a.accepted]
    present = {a.tool for a in accepted} | {a.xaigd_category or artifact_category(a) for a in accepted}
    types = np.array([name in present for name in TYPE_NAMES], np.float32)
    labels = decode_mask(sample.mask)
    mask = np.where(labels == IGNORE, IGNORE, labels > 0).astype(np.uint8)
    positive = Example(sample.sample_id, sample.source_id, decode_image(sample.image), mask, 1, types,
                       [a.box(boxes) for a in accepted if len(a.box(boxes)) == 4])
    return [positive] + [Example(sample.sample_id, sample.source_id, decode_image(getattr(sample, column)),
                                 np.zeros(mask.shape, np.uint8), 0, np.zeros(len(TYPE_NAMES), np.float32), [])
                         for column in columns]


def _in_split(source_id: str, split: Split, cfg: DataConfig) -> bool:
    return split == "all" or split_of(source_id, cfg.val_fraction, cfg.split_salt) == split


def split_counts(paths: str | Path | Sequence[str | Path], cfg: DataConfig) -> dict[str, int]:
    """Accepted rows per split, from the ``source_id`` and ``status`` columns alone."""
    table = read_table(paths, columns=["source_id", "status"])
    counts = {"train": 0, "val": 0}
    for source_id, status in zip(table["source_id"].to_pylist(), table["status"].to_pylist()):
        if status == "accepted":
            counts[split_of(source_id, cfg.val_fraction, cfg.split_salt)] += 1
    return counts


def iter_sample_examples(paths: str | Path | Sequence[str | Path], split: Split, cfg: DataConfig
                         ) -> Iterator[tuple[Sample, Example]]:
    """Plain (no Ray) iteration for evaluation: (row, example) pairs of ``split``; a source's negative
    shared by several rows is yielded once."""
    seen_negatives: set[tuple[str, int]] = set()
    for sample in iter_samples(paths):
        if not _in_split(sample.source_id, split, cfg):
            continue
        for k, ex in enumerate(examples_from_sample(sample, cfg.negatives, cfg.boxes)):
            if ex.label == 0:
                if (ex.source_id, k) in seen_negatives:
                    continue
                seen_negatives.add((ex.source_id, k))
            yield sample, ex


def iter_examples(paths: str | Path | Sequence[str | Path], split: Split, cfg: DataConfig) -> Iterator[Example]:
    """``iter_sample_examples`` without the rows."""
    return (ex for _, ex in iter_sample_examples(paths, split, cfg))


def _transforms(size: int, augmentation: DataConfig | None) -> v2.Compose:
    """torchvision v2 transforms to a ``size``² model input: with ``augmentation``, JPEG re-encode
    (prob ``jpeg_prob``), random resized crop and horizontal flip; without, a plain resize. Image
    resampling is bicubic; a ``tv_tensors.Mask`` follows every geometric step with nearest neighbour."""
    if augmentation is None:
        steps = [v2.Resize((size, size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)]
    else:
        steps = [v2.RandomApply([v2.JPEG(list(augmentation.jpeg_quality))], p=augmentation.jpeg_prob),
                 v2.RandomResizedCrop(size, scale=tuple(augmentation.crop_scale),
                                      interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                 v2.RandomHorizontalFlip(augmentation.flip_prob)]
    return v2.Compose([*steps, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])


def transform(image: Image.Image, mask: np.ndarray, size: int, augmentation: DataConfig | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) → ((3, S, S) float32 in [0, 1], (S, S) uint8), identical for both classes.
    Augmentation draws from torch's global RNG."""
    pixels, labels = _transforms(size, augmentation)(_image_tensor(image),
                                                     tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))
    return pixels.numpy(), labels.numpy()


def to_pixels(image: Image.Image, size: int) -> np.ndarray:
    """The model input for one image at inference: ``transform`` without augmentation, image only."""
    return _transforms(size, None)(_image_tensor(image)).numpy()


def _image_tensor(image: Image.Image) -> tv_tensors.Image:
    return tv_tensors.Image(v2.functional.pil_to_tensor(image.convert("RGB")))


def stored_side(size: int, cfg: DataConfig) -> int:
    """The side a training image is resized to before augmentation: the smallest random crop
    (``crop_scale[0]`` of its area) still has ``size`` pixels per side, so no crop is upsampled."""
    return math.ceil(size / math.sqrt(cfg.crop_scale[0]))


def _batch_to_arrays(table: pa.Table, split: Split, train: bool, size: int, cfg: DataConfig
                     ) -> Iterator[dict[str, np.ndarray]]:
    """A Ray Data ``pyarrow`` batch of shard rows → stacked examples of ``split`` (a generator, so a batch
    without any yields nothing): for training, uint8 ``image`` at ``stored_side`` for ``augment_batch``;
    otherwise the model's float ``pixel_values`` at ``size``."""
    images, masks, labels, types = [], [], [], []
    for sample in table_to_samples(table):
        if not _in_split(sample.source_id, split, cfg):
            continue
        for ex in examples_from_sample(sample, cfg.negatives, cfg.boxes):
            x, m = _resize(ex.image, ex.mask, stored_side(size, cfg)) if train else transform(ex.image, ex.mask, size)
            images.append(x), masks.append(m), labels.append(ex.label), types.append(ex.types)
    if images:
        yield {"image" if train else "pixel_values": np.stack(images), "mask": np.stack(masks),
               "label": np.asarray(labels, np.float32), "types": np.stack(types)}


def _resize(image: Image.Image, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) → ((3, side, side) uint8, (side, side) uint8): bicubic image, nearest-neighbour mask."""
    resize = v2.Resize((side, side), interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
    pixels, labels = resize(_image_tensor(image), tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask))))
    return pixels.numpy(), labels.numpy()


def augment_batch(batch: dict[str, torch.Tensor], size: int, cfg: DataConfig, seed: int) -> dict[str, torch.Tensor]:
    """A training batch of uint8 ``image`` (N, 3, S, S) → the same examples augmented to the model's float
    ``pixel_values`` (N, 3, size, size), masks following. The draws are a function of ``seed`` alone (torch's
    global generator is forked, not advanced), so a run is reproducible: the trainer passes one seed per
    (run seed, epoch, rank, step)."""
    augmentation = _transforms(size, cfg)
    pixels, masks = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for image, mask in zip(batch["image"].cpu(), batch["mask"].cpu()):
            x, m = augmentation(tv_tensors.Image(image), tv_tensors.Mask(mask))
            pixels.append(x), masks.append(m)
    rest = {k: v for k, v in batch.items() if k not in ("image", "mask")}
    return {**rest, "pixel_values": torch.stack(pixels).as_subclass(torch.Tensor),
            "mask": torch.stack(masks).as_subclass(torch.Tensor)}


def decoded_mib(accepted_rows: int, size: int, cfg: DataConfig) -> float:
    """An upper bound of a split's decoded size: each accepted row and its negatives as float32 pixels of the
    stored side plus a mask."""
    side = stored_side(size, cfg)
    rows = accepted_rows * (3 if cfg.negatives == "both" else 2)
    return rows * side * side * (3 * 4 + 1) / 2**20


def ray_dataset(paths: str | Path | Sequence[str | Path], split: Split, train: bool, size: int, cfg: DataConfig):
    """A Ray Dataset of rows (``mask``, ``label``, ``types`` and, for evaluation, the model's ``pixel_values``;
    for training, uint8 ``image`` that the trainer augments anew every pass with ``augment_batch``) for
    ``split``. A source's negatives come once per accepted row of it."""
    import ray.data

    return ray.data.read_parquet(shard_files(paths)).map_batches(
        partial(_batch_to_arrays, split=split, train=train, size=size, cfg=cfg), batch_format="pyarrow",
        batch_size=cfg.rows_per_map_batch)
