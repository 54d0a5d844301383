"""The model registry: every tiny model runs on CPU; a missing real model is a clear error."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torchvision.ops import box_convert, box_iou

from factory.config import load_config
from factory.models import ModelNotFoundError
from factory.models.flux import load_flux
from factory.models.lpips import load_lpips
from factory.models.perception import load_grounding, load_segmentation
from factory.models.vlm import load_vlm

PHOTO = Image.fromarray(data.astronaut()).resize((96, 96))
OTHER = Image.fromarray(data.chelsea()).resize((96, 96))


def test_tiny_grounding_boxes_the_phrases_with_a_layout_that_depends_on_the_photo_not_the_batch():
    config = load_config("tiny")
    grounding = load_grounding(config.models)
    alone = grounding.model(**grounding.processor(images=[PHOTO], text=["person. hand."], return_tensors="pt"))
    inputs = grounding.processor(images=[OTHER, PHOTO], text=["person. hand."] * 2, return_tensors="pt",
                                 padding="longest")
    batched = grounding.model(**inputs)
    assert torch.equal(batched.pred_boxes[1], alone.pred_boxes[0]) and torch.equal(batched.logits[1], alone.logits[0])
    assert not torch.equal(batched.pred_boxes[0], batched.pred_boxes[1])  # another photo, another layout
    # [CLS] person . hand . [SEP]: two overlapping person boxes (fuse) and a hand box, all above threshold
    probs = alone.logits[0].sigmoid()
    confident = torch.nonzero(probs.max(dim=1).values >= config.perception.box_threshold).flatten()
    phrase = probs[confident].argmax(dim=1).tolist()
    assert sorted(phrase) == [1, 1, 3]
    boxes = box_convert(alone.pred_boxes[0, confident], "cxcywh", "xyxy")
    people, hand = boxes[[i for i, p in enumerate(phrase) if p == 1]], boxes[phrase.index(3)]
    assert box_iou(people[:1], people[1:]).item() > 0  # the two instances overlap
    assert any(bool((hand[:2] >= p[:2]).all() and (hand[2:] <= p[2:]).all()) for p in people)  # on a parent


def test_tiny_sam_gives_the_ellipse_inscribed_in_each_box_and_scores_it_best():
    seg = load_segmentation(load_config("tiny").models)
    inputs = seg.processor(images=[PHOTO], input_boxes=[[[10.0, 10.0, 60.0, 70.0]]], return_tensors="pt")
    out = seg.model(**inputs, multimask_output=True)
    assert out.iou_scores.shape == (1, 1, 3) and int(out.iou_scores[0, 0].argmax()) == 0
    masks = seg.processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    mask = masks[0][0, 0].numpy()
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10, 59, 10, 69)  # fills the box side to side
    assert mask[40, 35] and not mask[11, 11]  # the centre is in, the box's corner is not


def test_tiny_flux_and_lpips_forward():
    models = load_config("tiny").models
    flux = load_flux(models)
    z = flux.vae.encode(torch.rand(1, 3, 64, 64) * 2 - 1).latent_dist.mode()
    assert z.shape == (1, 16, 8, 8)  # FLUX shapes: 16 channels, 8x downsampling
    ids = flux.tokenizer(["a photo"], return_tensors="pt").input_ids
    assert flux.text_encoder(ids).pooler_output.shape[-1] == flux.transformer.config.pooled_projection_dim
    lpips_model = load_lpips(models)
    assert float(lpips_model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))) == pytest.approx(0.0, abs=1e-6)
    assert float(lpips_model(torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64))) > 0.0


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


def test_random_flux_dev_has_the_production_sizes():
    """``models.flux.kind: random`` (the GPU benchmarks' model): FLUX.1-dev's architecture, built on the
    meta device here (no memory), in the requested dtype, ready for inference."""
    import torch

    from factory.models.tiny.flux import random_flux_dev

    parts = random_flux_dev(torch.device("meta"), torch.bfloat16)
    billions = {name: sum(p.numel() for p in getattr(parts, name).parameters()) / 1e9
                for name in ("transformer", "vae", "text_encoder", "text_encoder_2")}
    assert round(billions["transformer"], 2) == 11.90 and round(billions["text_encoder_2"], 2) == 4.76
    assert round(billions["text_encoder"], 3) == 0.123 and round(billions["vae"], 3) == 0.084
    assert parts.transformer.config.num_layers == 19 and parts.transformer.config.num_single_layers == 38
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in parts.transformer.parameters())
    assert not parts.transformer.training
    image_only = random_flux_dev(torch.device("meta"), torch.bfloat16, text=False)
    assert image_only.text_encoder_2 is None and image_only.transformer is not None


def test_kind_random_is_for_flux_only():
    import pytest

    from factory.config import ConfigError, load_config

    assert load_config("flux-dev", overrides={"models.flux.kind": "random"}).models.flux.kind == "random"
    with pytest.raises(ConfigError, match="for flux only"):
        load_config("tiny", overrides={"models.grounding.kind": "random"})


def test_tiny_clip_merges_are_the_bpe_trainers_and_keep_every_tiny_word_whole():
    """The committed merges (``tiny_tokenizers.json``) are for today's words; with them, and with the
    ``tokenizers`` BPE trainer run again here, every tiny word is one CLIP token (only the trainer's tie
    order differs between runs, which is why its output is committed rather than retrained per process)."""
    from factory.models.tiny.text_tokenizers import TINY_WORDS, tiny_clip_tokenizer, tiny_t5_tokenizer, train, trained

    words = sorted(set(TINY_WORDS.split()))
    assert trained()["words"] == TINY_WORDS
    clip, t5 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    assert all(clip.tokenize(w) == [f"{w}</w>"] for w in words)
    assert all(t5.tokenize(w) == [f"▁{w}"] for w in words)
    retrained = tiny_clip_tokenizer(train()["clip_merges"])
    assert all(retrained.tokenize(w) == [f"{w}</w>"] for w in words)
