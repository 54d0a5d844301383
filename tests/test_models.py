"""The model registry: every tiny model runs on CPU; a missing real model is a clear error."""

import pytest
import torch
from PIL import Image
from skimage import data

from factory.config import load_config
from factory.models import ModelNotFoundError
from factory.models.flux import load_flux
from factory.models.lpips import load_lpips
from factory.models.perception import load_grounding, load_segmentation
from factory.models.vlm import load_vlm

PHOTO = Image.fromarray(data.astronaut()).resize((96, 96))


def test_tiny_perception_models_forward():
    models = load_config("tiny").models
    grounding = load_grounding(models)
    inputs = grounding.processor(images=[PHOTO], text=["person. hand."], return_tensors="pt")
    out = grounding.model(**inputs)
    assert out.logits.shape[:2] == out.pred_boxes.shape[:2]
    seg = load_segmentation(models)
    inputs = seg.processor(images=[PHOTO], input_boxes=[[[10.0, 10.0, 60.0, 60.0]]], return_tensors="pt")
    out = seg.model(**inputs, multimask_output=True)
    assert out.iou_scores.shape == (1, 1, 3)
    assert type(grounding.model).__name__ == "GroundingDinoForObjectDetection" and type(seg.model).__name__ == "SamModel"


def test_tiny_flux_and_lpips_forward():
    models = load_config("tiny").models
    flux = load_flux(models)
    assert type(flux.transformer).__name__ == "FluxTransformer2DModel"
    z = flux.vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.mode()
    assert z.shape == (1, 16, 8, 8)  # FLUX shapes: 16 channels, 8x downsampling
    ids = flux.tokenizer(["a photo"], return_tensors="pt").input_ids
    assert flux.text_encoder(ids).pooler_output.shape[-1] == flux.transformer.config.pooled_projection_dim
    lpips_model = load_lpips(models)
    assert float(lpips_model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))) == pytest.approx(0.0, abs=1e-6)


def test_tiny_vlm_is_a_qwen2_vl():
    vlm = load_vlm(load_config("tiny", overrides={"models.vlm.backend": "transformers"}).models)
    assert type(vlm.model).__name__ == "Qwen2VLForConditionalGeneration"


@pytest.mark.parametrize("role, loader", [("flux", load_flux), ("grounding", load_grounding),
                                          ("segmentation", load_segmentation)])
def test_missing_real_model_names_the_model_and_the_fetch_command(role, loader, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = load_config("tiny", overrides={f"models.{role}.kind": "pretrained",
                                            f"models.{role}.path": "no-such-org/no-such-model"}).models
    with pytest.raises(ModelNotFoundError) as err:
        loader(models)
    assert "no-such-org/no-such-model" in str(err.value) and "hf download no-such-org/no-such-model" in str(err.value)


def test_missing_local_vlm_folder(tmp_path):
    models = load_config("tiny", overrides={"models.vlm.backend": "transformers",
                                            "models.vlm.model.kind": "pretrained",
                                            "models.vlm.model.path": str(tmp_path / "qwen")}).models
    with pytest.raises(ModelNotFoundError, match="qwen"):
        load_vlm(models)
