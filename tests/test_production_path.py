"""The production code path (``kind: pretrained``, bf16, the real presets' thresholds) on a CPU.

``factory.models.tiny`` writes tiny random models in the exact folder layouts the real presets load
(the ``tiny_weights`` fixture); ``DIR/cpu.yaml`` points a real preset at them. These tests load
every folder through the project's own loaders, run every role once in bf16 on a real photo, and
run ``factory.run`` end to end on flux-dev, flux-schnell and flux-dev with SAM 2: each ends with exactly
n accepted under the preset's own thresholds, and the runs accept all four tools. The tiny weights are
hand-set at write time (``factory.models.tiny.perception_weights``, ``factory.models.tiny.vlm_weights``), so
grounding, segmentation and the VLM's answers are usable and photo-dependent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from diffusers import FluxTransformer2DModel
from transformers import (CLIPTokenizer, GroundingDinoForObjectDetection, Qwen2VLForConditionalGeneration, Sam2Model,
                          SamModel, T5TokenizerFast)

from agents import prompts
from agents.crops import triplet_images
from agents.ground import Detection, GroundAndSegment
from agents.pixel_checks import masked_lpips
from agents.step import Pixels
from agents.synthesis import Synthesize
from agents.vlm.base import VLMRequest
from factory.config import Config, load_config
from factory.models.flux import load_flux
from factory.models.tiny.flux import tiny_flux
from factory.models.lpips import alexnet_features, load_lpips
from factory.models.perception import load_grounding, load_segmentation
from factory.models.vlm import load_vlm
from factory.sources import prepare_image
from shards.images import decode_array, decode_rle, encode_png
from shards.reader import iter_samples
from shards.record import Artifact, Sample
from tests.conftest import factory_env, write_photos

ROOT = Path(__file__).resolve().parents[1]
E2E_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
ERROR_MARKERS = ("_error", "Error", "Traceback", "RuntimeError")
FORWARD_TOKENS = 24  # new tokens per VLM answer in the one-forward checks (a random model rambles)


def _config(tiny_weights: Path, preset: str = "flux-dev", family: str = "sam") -> Config:
    name = "cpu-sam2.yaml" if family == "sam2" else "cpu.yaml"
    return load_config(preset, file=tiny_weights / name)


def _photo(config: Config, name: str = "astronaut") -> np.ndarray:
    return prepare_image(np.asarray(getattr(skdata, name)()), config.image)


def _floats(value: Any) -> list[torch.dtype]:
    """dtypes of every floating tensor in a (nested) call argument or model output."""
    if isinstance(value, torch.Tensor):
        return [value.dtype] if value.is_floating_point() else []
    if isinstance(value, dict):
        return [d for v in value.values() for d in _floats(v)]
    if isinstance(value, (list, tuple)):
        return [d for v in value for d in _floats(v)]
    return []


def _watch(module: torch.nn.Module, outputs: bool = False) -> list[torch.dtype]:
    """Record the floating dtypes a module is called with (or, for token-id models, returns)."""
    seen: list[torch.dtype] = []

    def hook(_module, args, kwargs, output):
        seen.extend(_floats(output) if outputs else _floats(args) + _floats(kwargs))

    module.register_forward_hook(hook, with_kwargs=True)
    return seen


def _assert_bf16(module: torch.nn.Module, role: str) -> None:
    """Every parameter and floating buffer is bf16, except RoPE frequencies (kept fp32 by design)."""
    dtypes = {p.dtype for p in module.parameters()}
    dtypes |= {b.dtype for name, b in module.named_buffers() if b.is_floating_point() and "inv_freq" not in name}
    assert dtypes == {torch.bfloat16}, f"{role}: {dtypes}"


def _ran_in_bf16(seen: list[torch.dtype], role: str) -> None:
    assert seen, f"{role} never ran"
    assert set(seen) == {torch.bfloat16}, f"{role} ran with {set(seen)}"


# ------------------------------------------------------------------------------------ loading
def test_every_folder_loads_through_the_project_loaders_in_bf16(tiny_weights):
    config = _config(tiny_weights)
    models = config.models
    assert models.dtype == "bfloat16" and models.device == "cpu"
    for spec in (models.flux, models.grounding, models.segmentation, models.lpips, models.vlm.model):
        assert spec.kind == "pretrained" and Path(spec.path).is_relative_to(tiny_weights)
    assert config.curation == load_config("flux-dev").curation  # the preset's thresholds, untouched
    assert config.perception == load_config("flux-dev").perception

    flux = load_flux(models)
    assert isinstance(flux.transformer, FluxTransformer2DModel)
    for role in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        _assert_bf16(getattr(flux, role), f"FLUX {role}")
    grounding = load_grounding(models)
    assert isinstance(grounding.model, GroundingDinoForObjectDetection)
    _assert_bf16(grounding.model, "grounding")
    sam = load_segmentation(models)
    assert isinstance(sam.model, SamModel) and sam.family == "sam"
    _assert_bf16(sam.model, "SAM")
    sam2 = load_segmentation(_config(tiny_weights, family="sam2").models)
    assert isinstance(sam2.model, Sam2Model) and sam2.family == "sam2"
    _assert_bf16(sam2.model, "SAM 2")
    vlm = load_vlm(models)
    assert isinstance(vlm.model, Qwen2VLForConditionalGeneration)
    _assert_bf16(vlm.model, "VLM")
    _assert_bf16(load_lpips(models), "LPIPS")


def test_flux_tokenizers_load_in_their_real_formats(tiny_weights):
    folder = tiny_weights / "flux"
    assert {p.name for p in (folder / "tokenizer").iterdir()} >= {"vocab.json", "merges.txt"}
    assert not (folder / "tokenizer" / "tokenizer.json").exists()  # as FLUX repos ship CLIP's tokenizer
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    clip = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    ids = clip("A photo of an astronaut, 2 cats!").input_ids
    assert ids[0] == clip.convert_tokens_to_ids("<|startoftext|>") and ids[-1] == clip.eos_token_id
    assert clip.convert_ids_to_tokens(ids)[1:5] == ["a</w>", "photo</w>", "of</w>", "an</w>"]
    assert clip.eos_token == clip.pad_token == "<|endoftext|>" and clip.model_max_length == 77
    t5 = T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer_2", local_files_only=True)
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token) == (0, 1, "<unk>")
    assert all(t5.convert_tokens_to_ids(f"<extra_id_{i}>") != t5.unk_token_id for i in range(100))
    assert t5("a photo of a cat").input_ids[-1] == t5.eos_token_id
    flux = load_flux(_config(tiny_weights).models)
    assert flux.text_encoder.config.vocab_size >= len(clip)
    assert flux.text_encoder_2.config.vocab_size >= len(t5)
    in_process = tiny_flux(0)  # the tiny preset shares the builder: same tokens, same ids
    for text in ("a photo of a cat with two coins", "Unknown words: zebra 42!"):
        assert in_process.tokenizer(text).input_ids == clip(text).input_ids
        assert in_process.tokenizer_2(text).input_ids == t5(text).input_ids


def test_lpips_path_accepts_a_weights_file_or_folder(tiny_weights, tmp_path):
    config = _config(tiny_weights)
    reference = alexnet_features(load_lpips(config.models).net)
    torch.save({k: v.float() for k, v in reference.items()}, tmp_path / "alexnet.pth")
    for path in (tmp_path, tmp_path / "alexnet.pth", tiny_weights / "lpips" / "alexnet.safetensors"):
        models = config.models.model_copy(update={"lpips": config.models.lpips.model_copy(update={"path": str(path)})})
        loaded = alexnet_features(load_lpips(models).net)
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_the_tiny_preset_builds_sam2_in_process():
    seg = load_segmentation(load_config("tiny", overrides={"models.segmentation_family": "sam2"}).models)
    assert isinstance(seg.model, Sam2Model)
    inputs = seg.processor(images=[Image.fromarray(skdata.astronaut())], input_boxes=[[[40.0, 30.0, 300.0, 400.0]]],
                           return_tensors="pt")
    out = seg.model(**inputs, multimask_output=True)
    assert out.iou_scores.shape == (1, 1, 3)


# ------------------------------------------------------------------------------ every role, bf16
@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_perception_roles_run_in_bf16_on_a_photo(tiny_weights, family):
    config = _config(tiny_weights, family=family)
    vlm, grounding = load_vlm(config.models), load_grounding(config.models)
    vlm.max_new_tokens = FORWARD_TOKENS
    segmentation = load_segmentation(config.models)
    seen = {"VLM": _watch(vlm.model), "grounding": _watch(grounding.model), "segmentation": _watch(segmentation.model)}
    photo = Image.fromarray(_photo(config))
    answer = vlm.generate_json([VLMRequest(*prompts.caption_vocabulary(), images=[photo], name="caption")])
    assert len(answer) == 1
    step = GroundAndSegment(grounding, segmentation, config.perception)
    found = step.detect([photo], [["person", "helmet", "hand"]])
    assert len(found) == 1
    box = Detection("person", [16.0, 8.0, 150.0, 170.0], 1.0)
    step.segment(photo, [box])
    assert box.mask is not None and box.mask.shape == (photo.height, photo.width)
    for role, dtypes in seen.items():
        _ran_in_bf16(dtypes, role)


def test_synthesis_and_curation_roles_run_in_bf16_on_a_photo(tiny_weights):
    config = _config(tiny_weights)
    flux = load_flux(config.models)
    seen = {"FLUX transformer": _watch(flux.transformer.x_embedder), "VAE encoder": _watch(flux.vae.encoder),
            "VAE decoder": _watch(flux.vae.decoder), "CLIP": _watch(flux.text_encoder, outputs=True),
            "T5": _watch(flux.text_encoder_2, outputs=True)}
    real = _photo(config)
    sample = Sample(sample_id="astronaut", source_id="astronaut", seed=0, real_image=encode_png(real),
                    caption="a photo of an astronaut",
                    artifacts=[Artifact(tool="distort", entity="person", cells=[26, 27, 38, 39],
                                        reference_cells=[39, 26, 27, 38]),
                               Artifact(tool="add", entity="person", subentity="hand", cells=[100, 101],
                                        reference_cells=[30, 31])])
    Synthesize(flux, config.injection)([sample], Pixels())
    out = sample
    assert out.image and out.status == "pending"
    for role, dtypes in seen.items():
        _ran_in_bf16(dtypes, role)

    fake = decode_array(out.image)
    assert fake.shape == real.shape
    lpips_model, vlm = load_lpips(config.models), load_vlm(config.models)
    vlm.max_new_tokens = FORWARD_TOKENS
    seen = {"LPIPS": _watch(lpips_model), "VLM": _watch(vlm.model)}
    distance = masked_lpips(lpips_model, real, fake, decode_rle(out.artifacts[0].region))
    assert np.isfinite(distance) and distance >= 0
    region = decode_rle(out.artifacts[1].region)
    check = prompts.triplet_check("add", "person", "hand")
    verdicts = vlm.generate_json([VLMRequest(*check, images=list(triplet_images(real, fake, region, 0.15)),
                                             name="triplet_add")])
    assert len(verdicts) == 1
    for role, dtypes in seen.items():
        _ran_in_bf16(dtypes, role)


# ------------------------------------------------------------------------------------ end to end
E2E_RUNS = {"flux-dev": ("flux-dev", "cpu.yaml", 0), "flux-schnell": ("flux-schnell", "cpu.yaml", 1),
            "flux-dev+sam2": ("flux-dev", "cpu-sam2.yaml", 2)}  # preset, config, run seed
E2E_N = 2


@pytest.fixture(scope="module")
def real_preset_runs(tiny_weights, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """``factory.run --preset P --config W/cpu.yaml`` (and ``cpu-sam2.yaml``): the preset's own thresholds on the
    hand-set tiny weights, one seed of each photo, until exactly ``E2E_N`` samples are accepted. One after the
    other: side by side the three jobs took 81, 95 and 125 s in clean-clone CI runs on 2 cores, one after
    the other 95 s (each ~30 s alone, mostly start-up)."""
    photos = write_photos(tmp_path_factory.mktemp("e2e_photos"), E2E_PHOTOS)
    runs = {}
    for name, (preset, config, seed) in E2E_RUNS.items():
        out = tmp_path_factory.mktemp("e2e") / name
        cmd = [sys.executable, "-m", "factory.run", "--preset", preset, "--config", str(tiny_weights / config),
               "--n", str(E2E_N), "--source", str(photos), "--out", str(out), "--seed", str(seed),
               "--set", "factory.seeds_per_image=1"]
        runs[name] = subprocess.run(cmd, cwd=ROOT, env=factory_env(), capture_output=True, text=True, timeout=600), out
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(E2E_RUNS))
def test_a_real_preset_on_cpu_ends_with_exactly_n_accepted(real_preset_runs, name):
    done, out = real_preset_runs[name]
    assert done.returncode == 0, done.stderr[-4000:]
    used = json.loads((out / "flawforge.json").read_text())["config"]
    assert used["models"]["dtype"] == "bfloat16" and used["models"]["flux"]["kind"] == "pretrained"
    assert used["models"]["segmentation_family"] == ("sam2" if "sam2" in name else "sam")
    assert used["curation"] == load_config(E2E_RUNS[name][0]).curation.model_dump(mode="json")  # its own bars
    errors = out / "errors.jsonl"  # failed samples are never committed: their tracebacks land here
    assert not errors.exists() or not errors.read_text().strip(), errors.read_text()[-4000:]
    samples = list(iter_samples(out))
    accepted = [s for s in samples if s.status == "accepted"]
    assert len(accepted) == E2E_N and len({s.sample_id for s in samples}) == len(samples)
    for sample in samples:
        assert not any(marker in sample.reject_reason for marker in ERROR_MARKERS), sample.reject_reason
    for sample in accepted:
        image, clean = decode_array(sample.image), decode_array(sample.clean_image)
        labelled = np.zeros(image.shape[:2], bool)
        for artifact in sample.artifacts:
            labelled |= decode_rle(artifact.region)
            assert artifact.accepted and artifact.local_explanation
        assert np.array_equal(image[~labelled], clean[~labelled])  # only the labelled pixels changed
        assert (image != clean).any()
        assert sample.global_explanation and sample.negative_explanation


@pytest.mark.slow
def test_the_real_presets_accept_every_tool_across_their_runs(real_preset_runs):
    tools = {a.tool for _, out in real_preset_runs.values() for s in iter_samples(out) if s.status == "accepted"
             for a in s.artifacts}
    assert tools == {"add", "remove", "distort", "fuse"}, tools


def test_repair_runs_on_a_real_preset_with_pretrained_weights_in_bf16(tiny_weights, everywhere, tmp_path):
    """``detector.repair --preset flux-dev --config cpu.yaml``: FLUX loaded from its repo folder in bf16."""
    from detector.repair import main as repair_main

    Image.fromarray(skdata.chelsea()).save(tmp_path / "chelsea.png")
    out = tmp_path / "out"
    assert repair_main([str(tmp_path / "chelsea.png"), "--checkpoint", str(everywhere), "--out", str(out),
                        "--preset", "flux-dev", "--config", str(tiny_weights / "cpu.yaml"), "--attempts", "2"]) == 0
    record = json.loads((out / "chelsea.json").read_text())
    assert record["status"] == "repaired" and len(record["attempt_scores"]) == 2
    repaired, given = (np.asarray(Image.open(out / f"chelsea_{k}.png")) for k in ("repaired", "input"))
    sizing = _config(tiny_weights).image  # the photo is sized as the factory sizes its sources
    assert repaired.shape == given.shape and max(given.shape[:2]) <= sizing.max_side
    assert given.shape[0] % sizing.cell == 0 and given.shape[1] % sizing.cell == 0
