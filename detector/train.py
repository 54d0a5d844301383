"""Train the detector on shards with Ray Train (V2 API): any number of workers, CPU or GPU.

``python -m detector.train --shards DIR [DIR ...] --out CKPT [--backbone tiny|tiny-vit|PATH]
[--workers K] [--gpus] [--epochs E] [--batch-size B] [--lr LR] [--resume]``

Every epoch each rank reports its metrics (train / val loss, val pixel IoU, all-reduced over
ranks); rank 0 prints them and hands over a checkpoint (detector safetensors + config, optimizer
state, epoch and metrics). Runs live under ``--storage`` (default
``CKPT/ray``), one directory per run; ``--resume`` reopens the newest one, Ray Train restores its
latest checkpoint and the epoch counter continues from it. The final model is exported to ``--out``.

A run is reproducible on one machine: the model starts from ``TrainConfig.seed``, Ray Data deals the
blocks to the ranks in file order (``preserve_order``), and each batch's augmentation is drawn from a seed
of (run seed, epoch, rank, step) — so the same shards and command train the same weights, and a held-out
number is a property of the data and the recipe, not of a scheduler's luck.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, field
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from pydantic import ConfigDict, Field, TypeAdapter
from pydantic.dataclasses import dataclass
from ray.data import ExecutionOptions
from ray.train import Checkpoint, CheckpointConfig, DataConfig as RayDataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from detector.data import DataConfig, augment_batch, decoded_mib, ray_dataset, split_counts
from detector.model import (CONFIG_ADAPTER, CONFIG_FILE, IGNORE, WEIGHTS_FILE, ArtifactDetector, DetectorConfig,
                            load_detector, save_detector)

STATE_FILE, OPTIMIZER_FILE = "train_state.json", "optimizer.pt"
RESUME_FIXED = ("backbone", "path", "image_size", "num_types", "decoder_dim")  # what a resumed run cannot change
# CLI defaults by backbone kind: random tiny backbones learn fast at a small size; pretrained ones are
# fine-tuned gently at 448² (a multiple of 14 for DINOv2 patches and of 32 for Swin / ConvNeXt strides).
CLI_DEFAULTS = {"tiny": {"image_size": 64, "lr": 3e-3}, "pretrained": {"image_size": 448, "lr": 1e-4}}


@dataclass(config=ConfigDict(extra="forbid"))
class TrainConfig:
    """A training run (a pydantic dataclass: nested configs validate from plain dicts)."""

    model: DetectorConfig = field(default_factory=DetectorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(16, gt=0)  # per worker
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0


TRAIN_ADAPTER = TypeAdapter(TrainConfig)  # the plain dict a Ray worker receives ⇄ ``TrainConfig``


def _restore(model: ArtifactDetector, optimizer: torch.optim.Optimizer) -> int:
    """Load the latest reported checkpoint, if any; returns the first epoch still to run."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d:
        saved = load_detector(d)
        _refuse_a_changed_model(saved.cfg, model.cfg)
        model.load_state_dict(saved.state_dict())
        optimizer.load_state_dict(torch.load(Path(d) / OPTIMIZER_FILE, weights_only=True))
        return json.loads((Path(d) / STATE_FILE).read_text())["epoch"] + 1


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def augmentation_seed(run_seed: int, epoch: int, rank: int, step: int) -> int:
    """The seed of one training batch's augmentation: a pure function of where it is in the run."""
    return int(np.random.SeedSequence([run_seed, epoch, rank, step]).generate_state(1)[0])


def _train_epoch(model: ArtifactDetector, ddp_model: torch.nn.Module, optimizer: torch.optim.Optimizer, shard,
                 cfg: TrainConfig, epoch: int, rank: int, device: torch.device) -> list[float]:
    """One pass over this rank's training shard, each batch augmented with its own seed; returns [loss sum, images]."""
    ddp_model.train()
    sums = [0.0, 0.0]
    for step, raw in enumerate(shard.iter_torch_batches(batch_size=cfg.batch_size, device="cpu")):
        batch = augment_batch(raw, cfg.model.image_size, cfg.data, augmentation_seed(cfg.seed, epoch, rank, step))
        batch = {k: v.to(device) for k, v in batch.items()}
        losses = model.loss(ddp_model(batch["pixel_values"]), batch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        sums[0] += losses["loss"].item() * len(batch["label"])
        sums[1] += len(batch["label"])
    return sums


@torch.no_grad()
def _validate(model: ArtifactDetector, shard, batch_size: int, device: torch.device) -> list[float]:
    """This rank's validation sums: [loss sum, images, pixel TP, FP, FN] (mask logit > 0 is artifact)."""
    model.eval()
    sums = [0.0] * 5
    for batch in shard.iter_torch_batches(batch_size=batch_size, device=device) if shard is not None else ():
        out = model(batch["pixel_values"])
        valid, truth, guess = batch["mask"] != IGNORE, batch["mask"] == 1, out["mask"] > 0
        sums[0] += model.loss(out, batch)["loss"].item() * len(batch["label"])
        sums[1] += len(batch["label"])
        sums[2] += float((truth & guess).sum())
        sums[3] += float((~truth & guess & valid).sum())
        sums[4] += float((truth & ~guess).sum())
    return sums


def train_loop_per_worker(raw_config: dict) -> None:
    """The per-rank loop: restore, then per epoch train, validate (sums all-reduced over ranks), report."""
    cfg = TRAIN_ADAPTER.validate_python(raw_config)
    torch.manual_seed(cfg.seed)
    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    model = ArtifactDetector(cfg.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = _restore(model, optimizer)
    ddp_model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={
        "find_unused_parameters": model.exposes_attention})  # ViTs carry an unused mask token
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if cfg.data.val_fraction > 0 else None
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        train_sums = _train_epoch(model, ddp_model, optimizer, train_shard, cfg, epoch, context.get_world_rank(), device)
        val_sums = _validate(model, val_shard, cfg.batch_size, device)
        loss_sum, n_train, val_loss, n_val, tp, fp, fn = _all_reduce(train_sums + val_sums, device)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_train, 1), "val_loss": val_loss / max(n_val, 1),
                   "val_pixel_iou": tp / max(tp + fp + fn, 1), "epoch_seconds": time.time() - t0}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if context.get_world_rank() == 0:
                print(f"[detector.train] {json.dumps(metrics)}", flush=True)
                save_detector(model, tmp)
                torch.save(optimizer.state_dict(), Path(tmp) / OPTIMIZER_FILE)
                (Path(tmp) / STATE_FILE).write_text(json.dumps({"epoch": epoch, "metrics": metrics}))
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def _refuse_a_changed_model(saved: DetectorConfig, asked: DetectorConfig) -> None:
    changed = {k: (v, getattr(asked, k)) for k, v in asdict(saved).items()
               if k in RESUME_FIXED and v != getattr(asked, k)}
    if changed:
        raise ValueError(f"--resume: the run's model differs from this call's (saved, asked): {changed}")


def _check_resume(run: Path, asked: DetectorConfig) -> None:
    """``--resume``: the latest checkpoint's model against this call's, before any worker starts (the
    workers check the checkpoint they restore again)."""
    checkpoints = sorted(p for p in run.glob("checkpoint_*") if (p / CONFIG_FILE).is_file())
    if checkpoints:
        _refuse_a_changed_model(CONFIG_ADAPTER.validate_json((checkpoints[-1] / CONFIG_FILE).read_bytes()), asked)


def _run_name(storage: Path, resume: bool) -> str:
    runs = sorted(p.name for p in storage.glob("run-*") if p.is_dir()) if storage.is_dir() else []
    if resume:
        if not runs:
            raise FileNotFoundError(f"--resume: no run under {storage}")
        return runs[-1]
    return time.strftime("run-%Y%m%d-%H%M%S")


def train(shards: list[str], out: str | Path, cfg: TrainConfig, workers: int = 1, use_gpu: bool = False,
          cpus_per_worker: float | None = None, storage: str | Path | None = None, resume: bool = False,
          keep_checkpoints: int | None = 3):
    """Fit with ``TorchTrainer`` and export the last checkpoint's detector to ``out``; returns the Ray result.

    ``cpus_per_worker`` defaults to what leaves one CPU of the cluster to Ray Data (a pool that takes
    every CPU starves the read tasks and hangs). ``keep_checkpoints=None`` keeps every epoch's."""
    counts = split_counts(shards, cfg.data)
    if not counts["train"] or (cfg.data.val_fraction > 0 and not counts["val"]):
        raise ValueError(f"{shards}: accepted rows per split {counts} (split by source, val_fraction "
                         f"{cfg.data.val_fraction}); both splits need accepted rows — use more source images "
                         "or change --val-fraction")
    if not ray.is_initialized():
        ray.init()
    if cpus_per_worker is None:
        cpus_per_worker = max(0.25, min(1.0, (ray.cluster_resources().get("CPU", 1) - 1) / workers))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = Path(storage) if storage else out / "ray"
    storage.mkdir(parents=True, exist_ok=True)
    run_name = _run_name(storage, resume)
    if resume:
        _check_resume(storage / run_name, cfg.model)
    datasets = {"train": ray_dataset(shards, "train", True, cfg.model.image_size, cfg.data)}
    if cfg.data.val_fraction > 0:
        datasets["val"] = ray_dataset(shards, "val", False, cfg.model.image_size, cfg.data)
    for split, dataset in datasets.items():  # small splits: decoded once, not every epoch (the same blocks)
        if decoded_mib(counts[split], cfg.model.image_size, cfg.data) <= cfg.data.decode_once_mib:
            datasets[split] = dataset.materialize()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=TRAIN_ADAPTER.dump_python(cfg, mode="json"),
        datasets=datasets,
        # blocks in file order, dealt to the workers in that order: each rank sees the same rows every run
        dataset_config=RayDataConfig(execution_options=ExecutionOptions(preserve_order=True)),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(storage_path=str(storage.resolve()), name=run_name,
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints)),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copy(Path(d) / name, out / name)
    return result


def main(argv: list[str] | None = None):
    """The CLI; returns Ray Train's ``Result``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", required=True, help="shard files or run directories")
    parser.add_argument("--out", required=True, help="directory for the exported detector")
    parser.add_argument("--backbone", default="tiny", help="tiny | tiny-vit | a local backbone path or cached HF id")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default 64 tiny, 448 pretrained)")
    parser.add_argument("--align-weight", type=float, default=0.0, help="attention alignment (ViT backbones)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=None, help="AdamW rate (default 3e-3 tiny, 1e-4 pretrained)")
    parser.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction)
    parser.add_argument("--negatives", choices=["clean", "real", "both"], default=DataConfig.negatives,
                        help="clean examples: the VAE reconstruction (default), the camera photo, or both")
    parser.add_argument("--storage", default=None, help="Ray Train storage path (default OUT/ray)")
    parser.add_argument("--resume", action="store_true", help="continue the newest run under --storage")
    parser.add_argument("--keep-checkpoints", type=int, default=3, help="newest epochs kept; 0 keeps every one")
    args = parser.parse_args(argv)
    tiny = args.backbone in ("tiny", "tiny-vit")
    defaults = CLI_DEFAULTS["tiny" if tiny else "pretrained"]
    model = DetectorConfig(backbone=args.backbone if tiny else "pretrained", path=None if tiny else args.backbone,
                           image_size=args.image_size or defaults["image_size"], align_weight=args.align_weight)
    cfg = TrainConfig(model=model, data=DataConfig(val_fraction=args.val_fraction, negatives=args.negatives),
                      epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr or defaults["lr"])
    result = train(args.shards, args.out, cfg, workers=args.workers, use_gpu=args.gpus,
                   cpus_per_worker=args.cpus_per_worker, storage=args.storage, resume=args.resume,
                   keep_checkpoints=args.keep_checkpoints or None)
    print(json.dumps({"out": str(args.out), "run": result.path, **result.metrics}, indent=2))
    return result


if __name__ == "__main__":
    main()
