"""Detector-guided repair and best-of-N ranking on the tiny preset: only the repaired cells change
(everything else is the photo's VAE reconstruction, byte for byte), attempts are seeded, bad inputs
get reasons, and the Ray Data job gives the same records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from detector.model import ArtifactDetector, DetectorConfig, load_detector, save_detector
from detector.rank import main as rank_main
from detector.repair import RepairSettings, Repairer
from detector.repair import main as repair_main
from factory.config import load_config
from factory.models.flux import load_flux


def _constant_detector(tmp_path: Path, bias: float) -> Path:
    model = ArtifactDetector(DetectorConfig())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fuse[-1].bias.fill_(bias)
        model.image_head.bias.fill_(bias)
    return save_detector(model, tmp_path)


@pytest.fixture(scope="module")
def repairer(everywhere):
    config = load_config("tiny")
    return Repairer(load_detector(everywhere), load_flux(config.models), config, RepairSettings(attempts=3))


def _photo(name: str = "astronaut", size: tuple[int, int] = (160, 128)) -> np.ndarray:
    return np.asarray(Image.fromarray(getattr(skdata, name)()).convert("RGB").resize(size))


def test_repair_changes_only_the_repaired_cells_and_is_seeded(repairer):
    image = _photo()
    mask = np.zeros(image.shape[:2], bool)
    mask[40:70, 50:90] = True
    result = repairer.repair(image, mask, seed=7, score_before=0.9)
    assert result.mask[mask].all() and not result.mask.all()  # the detected cells, dilated, not more
    outside = ~result.mask
    assert np.array_equal(result.image[outside], result.clean[outside])  # byte for byte
    assert (result.image[result.mask] != result.clean[result.mask]).any()
    assert len(result.attempt_scores) == 3 and result.kept == int(np.argmin(result.attempt_scores))
    again = repairer.repair(image, mask, seed=7, score_before=0.9)
    assert np.array_equal(again.image, result.image)  # the same seed, the same repair
    other = repairer.repair(image, mask, seed=8, score_before=0.9)
    assert not np.array_equal(other.image[result.mask], result.image[result.mask])  # a fresh draw


def test_repair_with_nothing_detected_returns_the_photo(repairer):
    image = _photo("coffee")
    result = repairer.repair(image, np.zeros(image.shape[:2], bool), seed=0, score_before=0.1)
    assert result.kept == -1 and np.array_equal(result.image, image) and not result.mask.any()


def test_repair_cli_writes_outputs_and_reasons_and_goes_on(everywhere, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skdata.chelsea()).save(photos / "chelsea.png")
    (photos / "notes.png").write_text("not an image")
    Image.fromarray(_photo(size=(20, 20))).save(photos / "tiny.png")
    inputs = [str(photos / n) for n in ("chelsea.png", "notes.png", "tiny.png", "missing.png")]
    out = tmp_path / "out"
    assert repair_main([*inputs, "--checkpoint", str(everywhere), "--out", str(out), "--attempts", "2"]) == 1
    summary = json.loads((out / "repair.json").read_text())
    assert summary["counts"] == {"repaired": 1, "unchanged": 0, "bad_input": 3}
    reasons = {Path(r["image"]).name: r.get("reason", "") for r in summary["images"]}
    assert reasons["notes.png"].startswith("not_an_image") and reasons["tiny.png"].startswith("too_small")
    assert reasons["missing.png"].startswith("unreadable: FileNotFoundError")
    record = json.loads((out / "chelsea.json").read_text())
    assert record["status"] == "repaired" and len(record["attempt_scores"]) == 2 and record["mask_share"] == 1.0
    repaired, given = (np.asarray(Image.open(out / f"chelsea_{k}.png")) for k in ("repaired", "input"))
    assert repaired.shape == given.shape and (repaired != given).any()
    assert set(np.unique(np.asarray(Image.open(out / "chelsea_mask.png")))) == {255}

    nowhere = _constant_detector(tmp_path / "nowhere", -8.0)
    assert repair_main([inputs[0], "--checkpoint", str(nowhere), "--out", str(tmp_path / "clean")]) == 0
    record = json.loads((tmp_path / "clean" / "chelsea.json").read_text())
    assert record["status"] == "unchanged" and record["attempt_scores"] == []
    unchanged = [np.asarray(Image.open(tmp_path / "clean" / f"chelsea_{k}.png")) for k in ("repaired", "input")]
    assert np.array_equal(*unchanged)


def test_repair_cli_refuses_a_missing_checkpoint(tmp_path, capsys):
    Image.fromarray(skdata.chelsea()).save(tmp_path / "chelsea.png")
    assert repair_main([str(tmp_path / "chelsea.png"), "--checkpoint", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "out")]) == 2
    assert "no detector at" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # settings are validated before any model loads
        repair_main([str(tmp_path / "chelsea.png"), "--checkpoint", str(tmp_path / "nope"), "--strength", "1.5"])
    assert "strength: Input should be less than or equal to 1" in capsys.readouterr().err


@pytest.mark.slow
def test_repair_as_a_ray_data_job_gives_the_same_records(everywhere, tmp_path):
    import ray

    Image.fromarray(skdata.chelsea()).save(tmp_path / "chelsea.png")
    (tmp_path / "notes.png").write_text("not an image")
    inputs = [str(tmp_path / "chelsea.png"), str(tmp_path / "notes.png")]
    common = ["--checkpoint", str(everywhere), "--attempts", "2"]
    assert repair_main([*inputs, *common, "--out", str(tmp_path / "local")]) == 1
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert repair_main([*inputs, *common, "--out", str(tmp_path / "ray"), "--ray"]) == 1
    finally:
        ray.shutdown()
    local, distributed = (json.loads((tmp_path / d / "repair.json").read_text())["images"] for d in ("local", "ray"))
    assert local == distributed
    assert np.array_equal(*(np.asarray(Image.open(tmp_path / d / "chelsea_repaired.png")) for d in ("local", "ray")))


def test_rank_orders_candidates_by_artifact_score(tmp_path):
    torch.manual_seed(0)
    checkpoint = save_detector(ArtifactDetector(DetectorConfig()), tmp_path / "random")
    paths = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skdata, name)()).convert("RGB").save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    (tmp_path / "broken.png").write_text("no")
    out, table = tmp_path / "ranking.json", tmp_path / "ranking.csv"
    assert rank_main([*paths, str(tmp_path / "broken.png"), "--checkpoint", str(checkpoint), "--out", str(out),
                      "--csv", str(table)]) == 1
    result = json.loads(out.read_text())
    scores = [r["score"] for r in result["ranking"]]
    assert scores == sorted(scores) and len(scores) == 4 and [r["rank"] for r in result["ranking"]] == [1, 2, 3, 4]
    assert [Path(b["image"]).name for b in result["bad_inputs"]] == ["broken.png"]
    with open(table) as f:
        assert [row["image"] for row in csv.DictReader(f)] == [r["image"] for r in result["ranking"]]
