"""Fix the flaws: the detector finds artifacts, the FLUX engine re-synthesises only those cells, and the
detector keeps the best of K attempts.

``python -m detector.repair IMG [IMG ...] --checkpoint CKPT --out DIR [--preset tiny|flux-dev|...]
[--config FILE] [--attempts K] [--strength S] [--threshold T] [--prompt P] [--set key=value ...] [--ray]``

Per image: the photo is decoded and sized as the factory sizes its sources (``image`` section of the
preset: cell multiples); the detector predicts an artifact mask (pixels > ``--threshold``); the
16-px cells it covers, dilated by ``injection.dilation_cells``, are denoised afresh: the photo is
inverted, those cells restart from a fresh noise draw per attempt (at σ = ``--strength``; 1 is pure
noise) with no injection, and every other cell follows the inversion, then the result is composited
onto the photo's VAE reconstruction exactly as the factory composites (``FluxEngine.repaint``): outside
the repaired mask the output *is* that reconstruction, byte for byte. The photo is inverted once and
the K attempts are denoised from that one inversion as one batch; the detector scores each and the
one with the lowest image score is kept.

Outputs in DIR per image (its stem): ``_repaired.png``, ``_input.png`` (the photo at the processed
size), ``_mask.png`` (255 = re-synthesised), ``_overlay.png`` (repaired pixels tinted) and ``.json``
(scores before and per attempt, the kept one, the mask's share); ``repair.json`` sums up the run.
An image with no detected artifact is written unchanged (``status: unchanged``); a file that cannot
be used gets ``status: bad_input`` with its reason and the run goes on (exit status 1). ``--ray``
runs the same per-image work as a Ray Data job: one actor pool holding the models, files streamed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from detector.model import ArtifactDetector, load_detector
from detector.predict import infer, overlay
from factory.config import Config, load_config
from factory.sources import ImageRejected, SourceItem, decode_source, prepare_image, read_bytes
from tools.flux.engine import FluxEngine
from tools.grid import Grid


@pydantic_dataclass
class RepairSettings:
    """Validated on construction, as the detector's other configs."""

    attempts: int = Field(4, ge=1)  # fresh noise draws per image, denoised from one inversion
    strength: float = Field(1.0, gt=0, le=1)  # σ at which the repaired cells restart (1: from pure noise)
    threshold: float = Field(0.5, ge=0, le=1)  # pixel probability that marks an artifact
    prompt: str = "a photo"  # FLUX's prompt while denoising the cells
    seed: int = 0


@dataclass
class Repair:
    """One image's result; ``image`` equals ``clean`` wherever ``mask`` is False."""

    input: np.ndarray  # (H, W, 3) the photo at the processed size
    clean: np.ndarray  # its VAE reconstruction
    image: np.ndarray  # the kept attempt
    mask: np.ndarray  # (H, W) bool: the re-synthesised pixels
    score_before: float
    attempt_scores: list[float] = field(default_factory=list)
    kept: int = -1  # index of the kept attempt (-1: nothing to repair)


class Repairer:
    """The detector and a FLUX engine without injection (``value_steps`` 0), loaded once."""

    def __init__(self, detector: ArtifactDetector, flux, config: Config, settings: RepairSettings):
        self.detector, self.config, self.settings = detector, config, settings
        injection = config.injection.model_copy(update={"value_steps": 0})
        self.engine = FluxEngine(flux, injection)  # on the transformer's device, in its dtype

    def score(self, images: list[np.ndarray]) -> list:
        return infer(self.detector, [Image.fromarray(im) for im in images])

    def find(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The detector's artifact mask (pixels > threshold) and image score."""
        [pred] = self.score([image])
        return pred.probability > self.settings.threshold, pred.score

    def repair(self, image: np.ndarray, mask: np.ndarray, seed: int, score_before: float) -> Repair:
        """Re-synthesise the cells ``mask`` covers, ``attempts`` times in one batch; keep the lowest score."""
        s = self.settings
        cells = torch.from_numpy(Grid.from_image(*image.shape[:2]).cells(mask))
        if not cells.numel():
            return Repair(image, image, image, np.zeros(image.shape[:2], bool), score_before)
        embeds, pooled = self.engine.encode_prompt([s.prompt] * s.attempts)
        result = self.engine.repaint(image[None], embeds, pooled, [cells] * s.attempts,
                                     noise_seeds=[seed * 1009 + k for k in range(s.attempts)],
                                     strength=s.strength, plans_per_image=s.attempts)  # one inversion for all
        scores = [p.score for p in self.score(list(result.images))]
        kept = int(np.argmin(scores))
        return Repair(image, result.clean[kept], result.images[kept], result.change_masks[kept], score_before,
                      scores, kept)

    def __call__(self, image: np.ndarray, seed: int) -> Repair:
        mask, score = self.find(image)
        return self.repair(image, mask, seed, score)


def load_repairer(checkpoint: str | Path, preset: str, settings: RepairSettings,
                  overrides: list[str] | None = None, config_file: str | None = None) -> tuple[Repairer, Config]:
    """The detector from ``checkpoint`` and the preset's FLUX; raises ``FileNotFoundError`` for a missing checkpoint."""
    from factory.models.flux import load_flux

    if not (Path(checkpoint) / "config.json").is_file():
        raise FileNotFoundError(f"no detector at {checkpoint} (expected a directory written by detector.train)")
    config = load_config(preset, file=config_file, overrides=overrides or [])
    device = "cuda" if config.models.device != "cpu" and torch.cuda.is_available() else "cpu"
    return Repairer(load_detector(checkpoint, device), load_flux(config.models), config, settings), config


def load_photo(path: str | Path, config: Config) -> np.ndarray:
    """A file decoded and sized as the factory sizes its sources; ``ImageRejected`` / ``OSError`` on bad input."""
    rgb = decode_source(read_bytes(SourceItem(str(path), str(path))), config.source).rgb
    return prepare_image(rgb, config.image)


def write_repair(result: Repair, out: Path, name: str) -> dict:
    """The image's PNGs and JSON under ``out``; returns its record."""
    Image.fromarray(result.image).save(out / f"{name}_repaired.png")
    Image.fromarray(result.input).save(out / f"{name}_input.png")
    Image.fromarray(result.mask.astype(np.uint8) * 255).save(out / f"{name}_mask.png")
    overlay(Image.fromarray(result.image), result.mask, []).save(out / f"{name}_overlay.png")
    record = {"status": "repaired" if result.kept >= 0 else "unchanged", "outputs": name,
              "score_before": result.score_before, "attempt_scores": result.attempt_scores,
              "score_after": result.attempt_scores[result.kept] if result.kept >= 0 else result.score_before,
              "kept_attempt": result.kept, "mask_share": float(result.mask.mean())}
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    return record


def repair_file(repairer: Repairer, config: Config, path: str, out: Path, name: str, seed: int) -> dict:
    """One file end to end; bad input becomes a record with its reason, never an exception."""
    try:
        photo = load_photo(path, config)
    except ImageRejected as err:
        return {"image": path, "status": "bad_input", "reason": str(err)}
    except OSError as err:  # missing, unreadable
        return {"image": path, "status": "bad_input", "reason": f"unreadable: {type(err).__name__}: {err}"}
    return {"image": path, **write_repair(repairer(photo, seed), out, name)}


def unique_names(paths: list[str]) -> list[str]:
    """Output names: each file's stem, with ``-2``, ``-3``, ... when two inputs share one."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


class RepairActor:
    """Ray Data actor: the models once per actor, then ``repair_file`` on each batch of paths."""

    def __init__(self, checkpoint: str, preset: str, settings: dict, overrides: list[str], config_file: str | None,
                 out: str):
        self.repairer, self.config = load_repairer(checkpoint, preset, RepairSettings(**settings), overrides,
                                                   config_file)
        self.out = Path(out)

    def __call__(self, batch: dict) -> dict:
        records = [repair_file(self.repairer, self.config, p, self.out, n, int(i))
                   for p, n, i in zip(batch["path"], batch["name"], batch["index"])]
        return {"index": list(batch["index"]), "record": [json.dumps(r) for r in records]}


def run_ray(paths: list[str], names: list[str], args, settings: RepairSettings) -> list[dict]:
    import ray

    ds = ray.data.from_items([{"path": p, "name": n, "index": i} for i, (p, n) in enumerate(zip(paths, names))])
    ds = ds.map_batches(RepairActor, fn_constructor_kwargs={
        "checkpoint": args.checkpoint, "preset": args.preset, "settings": asdict(settings),
        "overrides": args.set, "config_file": args.config, "out": args.out}, batch_size=1, compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_gpus=args.num_gpus or None, num_cpus=0.5)
    rows = sorted(ds.iter_rows(), key=lambda row: row["index"])  # Ray Data streams in completion order
    return [json.loads(row["record"]) for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--checkpoint", required=True, help="a directory written by detector.train")
    parser.add_argument("--out", default="repaired")
    parser.add_argument("--preset", default="tiny", help="the FLUX model and image sizing (factory presets)")
    parser.add_argument("--config", default=None, help="a YAML file over the preset (model paths, device, ...)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    defaults = RepairSettings()
    parser.add_argument("--attempts", type=int, default=defaults.attempts)
    parser.add_argument("--strength", type=float, default=defaults.strength)
    parser.add_argument("--threshold", type=float, default=defaults.threshold)
    parser.add_argument("--prompt", default=defaults.prompt)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--ray", action="store_true", help="run as a Ray Data job (one actor pool)")
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--num-gpus", type=float, default=0.0, help="per actor, with --ray")
    args = parser.parse_args(argv)
    try:
        settings = RepairSettings(attempts=args.attempts, strength=args.strength, threshold=args.threshold,
                                  prompt=args.prompt, seed=args.seed)
    except ValidationError as err:
        parser.error(f"invalid settings: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = unique_names(args.images)
    try:
        if args.ray:
            records = run_ray(args.images, names, args, settings)
        else:
            repairer, config = load_repairer(args.checkpoint, args.preset, settings, args.set, args.config)
            records = [repair_file(repairer, config, p, out, n, args.seed * 100_003 + i)
                       for i, (p, n) in enumerate(zip(args.images, names))]
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {"settings": asdict(settings), "preset": args.preset, "checkpoint": str(args.checkpoint),
               "counts": {s: sum(r["status"] == s for r in records) for s in ("repaired", "unchanged", "bad_input")},
               "images": records}
    (out / "repair.json").write_text(json.dumps(summary, indent=2))
    for record in records:
        print(json.dumps(record), file=sys.stderr if record["status"] == "bad_input" else sys.stdout)
    return 1 if summary["counts"]["bad_input"] else 0


if __name__ == "__main__":
    sys.exit(main())
