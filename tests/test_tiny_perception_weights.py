"""The shaped tiny Grounding DINO / SAM / SAM 2 (``factory.models.tiny.perception_weights``), written
to disk and loaded by the production loaders (``kind: pretrained``, the preset's bf16 and
thresholds), give the agents entity and part boxes and masks inside those boxes, and a plan that
reaches every tool: no hooks involved."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from agents.ground import GroundAndSegment
from agents.planner import PlanArtifacts
from agents.step import Pixels
from agents.vlm.scripted_backend import ROLES
from factory.config import load_config
from factory.models.perception import load_grounding, load_segmentation
from factory.models.tiny.perception import tiny_grounding, tiny_sam, tiny_sam2
from factory.models.tiny.writer import CPU_IMAGE, write_pretrained
from factory.models.tiny.perception_weights import QUERY_BOXES, shape_grounding, shape_sam
from factory.sources import prepare_image
from shards.images import encode_png
from shards.record import Sample
from tools.grid import containment

PHRASES = ["cat", "ear", "paw", "head", "dog", "tail", "leg"]


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_perception")
    model, processor = tiny_grounding(0)
    write_pretrained(folder / "grounding", shape_grounding(model, processor.tokenizer), processor)
    for family, build in (("sam", tiny_sam), ("sam2", tiny_sam2)):
        model, processor = build(0)
        write_pretrained(folder / family, shape_sam(model), processor)
    return folder


def _config(folder, family):
    overrides = {"models.device": "cpu", "models.grounding.path": str(folder / "grounding"),
                 "models.segmentation.path": str(folder / family), "models.segmentation_family": family,
                 **{f"image.{k}": v for k, v in CPU_IMAGE.items()}}
    config = load_config("flux-dev", overrides=overrides)
    assert config.models.grounding.kind == config.models.segmentation.kind == "pretrained"
    assert config.perception == load_config("flux-dev").perception  # the preset's thresholds
    return config


def _photos(config):
    return [prepare_image(getattr(skdata, name)(), config.image) for name in ("astronaut", "chelsea")]


@pytest.mark.parametrize("family", ["sam", "sam2"])
def test_grounding_gives_entity_and_part_boxes_with_masks_inside(shaped, family):
    config = _config(shaped, family)
    cfg = config.perception
    step = GroundAndSegment(load_grounding(config.models), load_segmentation(config.models), cfg)
    rgbs = _photos(config)  # two sizes in one batch: the smaller photo is padded
    photos = [Image.fromarray(rgb) for rgb in rgbs]
    layouts = []
    for rgb, photo, found in zip(rgbs, photos, step.detect(photos, [PHRASES, PHRASES[::-1]])):
        roles = [ROLES[d.phrase] for d in found]
        assert sorted(roles) == ["entity"] * 2 + ["intermediate"] * 2 + ["peripheral"] * 2
        assert all(d.score >= max(cfg.box_threshold, cfg.text_threshold) for d in found)
        assert {d.phrase for d, r in zip(found, roles) if r == "entity"} == {"cat", "dog"}  # one box each
        step.segment(photo, found)
        boxes = {id(d): np.zeros(rgb.shape[:2], dtype=bool) for d in found}
        for d in found:
            x0, y0, x1, y1 = (int(round(v)) for v in d.box)
            boxes[id(d)][y0:y1 + 1, x0:x1 + 1] = True
            assert d.mask is not None and d.mask.any() and not (d.mask & ~boxes[id(d)]).any()
            assert d.mask.sum() >= 0.8 * boxes[id(d)].sum()  # the mask fills its box
        entities = [boxes[id(d)] for d, r in zip(found, roles) if r == "entity"]
        assert 0 < containment(entities[0], entities[1]) < 0.7  # overlapping, neither inside the other
        area = rgb.shape[0] * rgb.shape[1]
        for d, role in zip(found, roles):
            if role != "entity":
                assert max(containment(d.mask, e) for e in entities) >= cfg.containment
                assert cfg.min_part_pixels < d.mask.sum() <= cfg.max_part_fraction * area
        sizes = {r: max(d.mask.sum() for d, rr in zip(found, roles) if rr == r) for r in set(roles)}
        assert sizes["peripheral"] < sizes["intermediate"] < sizes["entity"]
        frame = np.array([rgb.shape[1], rgb.shape[0]] * 2)
        layouts.append(sorted(tuple(np.round(np.array(d.box) / frame, 3)) for d in found))
    for layout in layouts:  # the fixed layout, moved by at most a few pixels ...
        assert all(min(np.abs(np.subtract(box, q)).max() for q in QUERY_BOXES) < 0.03 for box in layout)
    assert layouts[0] != layouts[1]  # ... that depend on the photo


def test_plans_reach_every_tool(shaped):
    config = _config(shaped, "sam")
    ground = GroundAndSegment(load_grounding(config.models), load_segmentation(config.models), config.perception)
    vocabulary = [{"phrase": p, "role": ROLES[p]} for p in PHRASES]
    rgb = _photos(config)[0]
    samples = [Sample(f"s{seed}", "astronaut", seed, real_image=encode_png(rgb), plan={"vocabulary": vocabulary})
               for seed in range(4)]
    pixels = Pixels()
    ground(samples[:1], pixels)  # per photo: every seed of the photo gets the same detections
    for sample in samples[1:]:
        sample.plan["found"] = copy.deepcopy(samples[0].plan["found"])
    PlanArtifacts(config.perception, config.tools)(samples, pixels)
    assert all(s.status == "pending" and s.artifacts for s in samples), [s.reject_reason for s in samples]
    assert {a.tool for s in samples for a in s.artifacts} == {"add", "remove", "distort", "fuse"}


def test_words_without_a_role_get_no_box(shaped):
    config = _config(shaped, "sam")
    step = GroundAndSegment(load_grounding(config.models), load_segmentation(config.models), config.perception)
    photo = Image.fromarray(_photos(config)[1])
    found = step.detect([photo], [["helmet", "cat", "coffee"]])[0]  # not in the vocabulary / no role
    assert [d.phrase for d in found] == ["cat", "cat"]  # one entity word: both entity boxes (fuse)
