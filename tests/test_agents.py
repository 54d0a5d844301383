"""The perception and curation steps: the linking rule, determinism, masks and verdicts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from agents.crops import region_bbox, triplet_images
from agents.explain import Explain
from agents.ground import phrase_spans
from agents.pixel_checks import PixelChecks, box_lpips, masked_lpips
from agents.planner import link_parts
from agents.step import run_steps
from agents.verdicts import Verdicts
from agents.vlm import VLMResult
from factory.config import load_config
from factory.models.lpips import load_lpips
from factory.models.perception import load_grounding, load_segmentation
from factory.models.vlm import load_vlm
from factory.steps import CurationModels, PerceptionModels, curation_steps, perception_steps
from factory.sources import decode_source, list_sources, prepare_image, read_bytes
from shards.images import decode_mask, encode_png, encode_rle
from shards.record import Artifact, Sample
from shards.rows import samples_to_table, table_to_samples
from shards.taxonomy import xaigd_category
from tools.grid import containment


def box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_linking_divides_by_the_part_area():
    entity = box(64, 64, 0, 40, 0, 40)
    inside, partly = box(64, 64, 10, 20, 10, 20), box(64, 64, 30, 50, 30, 50)
    assert containment(inside, entity) == 1.0
    assert containment(partly, entity) == pytest.approx(0.25)  # dividing by |∩| instead would say 1.0
    assert link_parts([inside, partly], [entity], 0.9) == [0, None]


def test_phrase_spans():
    # [CLS] person . left hand . [SEP]
    assert phrase_spans([101, 7, 5, 8, 9, 5, 102], {5, 102}) == [(1, 2), (3, 5)]


@pytest.fixture(scope="module")
def tiny():
    config = load_config("tiny")
    return config, load_vlm(config.models)


def _samples(config, n=6):
    out = []
    for k, item in enumerate(list_sources(config.source)[:n]):
        rgb = prepare_image(decode_source(read_bytes(item), config.source).rgb, config.image)
        out.append(Sample(f"s{k}", item.source_id, 1000 + k, real_image=encode_png(rgb)))
    return out


def perception_pool_steps(config, vlm):
    """The perception pool's steps (``factory.steps``) with ``vlm``."""
    return perception_steps(config, PerceptionModels(vlm, load_grounding(config.models),
                                                     load_segmentation(config.models)))


def curation_pool_steps(vlm, config):
    """The curation pool's steps (``factory.steps``) with ``vlm`` and the tiny LPIPS."""
    return curation_steps(config, CurationModels(load_lpips(load_config("tiny").models), vlm))


def test_perception_end_to_end_is_deterministic_and_round_trips(tiny):
    config, vlm = tiny
    steps = perception_pool_steps(config, vlm)
    first = run_steps(steps, _samples(config))
    second = run_steps(steps, _samples(config))
    assert first == second
    for s in first:
        assert s.caption and s.plan.get("detections", 0) > 0
        assert s.plan["vocabulary"] and "found" not in s.plan  # the detections are summarised, not carried on
        assert s.is_rejected == (not s.artifacts)
        used = set()
        for a in s.artifacts:
            assert a.xaigd_category == xaigd_category(a.tool, a.kernel, a.entity, a.subentity)
            cells = set(a.cells) | set(a.reference_cells)
            assert not cells & used
            used |= cells
    assert table_to_samples(samples_to_table(first, transport=True)) == first  # through the stages' schema


def test_lpips_is_measured_on_the_change_region_not_its_box():
    lpips_model = load_lpips(load_config("tiny").models)
    real = np.asarray(Image.fromarray(data.astronaut()).resize((128, 128)))
    fake = real.copy()
    region = np.zeros((128, 128), bool)
    region[20:100, 20:28] = True  # a thin L: its box is mostly unchanged pixels
    region[92:100, 20:100] = True
    fake[region] = 255 - fake[region]
    x0, y0, x1, y1 = region_bbox(region, 0.0)
    in_box = np.zeros_like(region)
    in_box[y0:y1, x0:x1] = True
    on_region, on_box = masked_lpips(lpips_model, real, fake, region), masked_lpips(lpips_model, real, fake, in_box)
    assert on_region > on_box * 1.2
    # The authors' measure (the default): plain LPIPS of the two crops at the region's box.
    crops = [torch.from_numpy(a[y0:y1, x0:x1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1 for a in (real, fake)]
    with torch.no_grad():
        expected = float(lpips_model(*crops).mean())
    assert box_lpips(lpips_model, real, fake, [x0, y0, x1, y1], min_side=16) == pytest.approx(expected, rel=1e-3)
    assert load_config("flux-dev").curation.lpips_measure == "box_crop"


def test_lpips_is_measured_on_the_parts_tight_box_with_strict_bounds():
    """The authors crop at the tight box of the whole part (``target_bbox``), not at the dilated change
    region's box, and keep min < LPIPS < max (a value on a bound fails)."""
    real = np.asarray(Image.fromarray(data.chelsea()).resize((128, 96)))
    region = box(96, 128, 32, 80, 48, 112)  # the part's cells dilated by one 16-px cell
    part = [64, 48, 96, 64]  # [x0, y0, x1, y1]: the part's target cells, inside the region
    fake = real.copy()
    fake[region] = 255 - fake[region]
    sample = Sample("x", "src", 0, real_image=encode_png(real), clean_image=encode_png(real), image=encode_png(fake),
                    artifacts=[Artifact(tool="distort", entity="cat", subentity="leg", region=encode_rle(region),
                                        bbox=[48, 32, 112, 80], target_bbox=part)])
    config = load_config("tiny")
    checks = PixelChecks(load_lpips(config.models), config.curation)
    expected = box_lpips(checks.lpips, real, fake, part, config.curation.lpips_min_crop)
    on_region_box = box_lpips(checks.lpips, real, fake, [48, 32, 112, 80], config.curation.lpips_min_crop)
    assert abs(expected - on_region_box) > 1e-4
    measured = round(expected, 5)
    for low, high, accepted in [(measured - 1e-3, measured + 1e-3, True), (measured, measured + 1e-3, False),
                                (measured - 1e-3, measured, False)]:
        strict = config.curation.model_copy(update={"lpips_min": low, "lpips_max": high})
        [out] = run_steps([PixelChecks(checks.lpips, strict)], [replace(sample, artifacts=[replace(sample.artifacts[0])])])
        assert out.artifacts[0].lpips == measured and out.artifacts[0].accepted is accepted


class RecordingVLM:
    model_id = "recording"

    def __init__(self):
        self.requests = []

    def generate_json(self, requests):
        self.requests += requests
        return [VLMResult({"visible": True, "explanation": "an extra ear", "label": "extra ear"}) for _ in requests]


def test_the_triplet_check_sees_the_authors_inputs():
    """Image 1 is the original photo with the target cells blacked out (everything else untouched),
    images 2 and 3 the tight crops (margin 0) of real and artifact at the target cells, the prompt names
    the object, and the answer has no ``in_region`` unless ``curation.triplet_in_region``."""
    real = np.asarray(Image.fromarray(data.chelsea()).resize((128, 96)))
    fake = real.copy()
    region = box(96, 128, 0, 48, 16, 80)  # the dilated change region
    fake[region] = 255 - fake[region]
    # a 6 x 8-cell grid: cells 10, 11 = row 1, columns 2-3 → pixels y 16-32, x 32-64
    artifact = Artifact(tool="add", entity="cat", subentity="ear", cells=[10, 11], reference_cells=[12, 13],
                        region=encode_rle(region), target_bbox=[32, 16, 64, 32])
    sample = Sample("x", "src", 0, real_image=encode_png(real), clean_image=encode_png(real), image=encode_png(fake),
                    artifacts=[artifact])
    vlm = RecordingVLM()
    config = load_config("tiny")
    run_steps([Verdicts(vlm, config.curation)], [sample])
    [request] = vlm.requests
    context, real_crop, fake_crop = (np.asarray(im) for im in request.images)
    expected_context = real.copy()
    expected_context[16:32, 32:64] = 0
    assert np.array_equal(context, expected_context)  # the real photo, not the artifact image
    size = (128, 64)  # the 32 x 16 box, long side scaled to the image's 128
    for crop, source in ((real_crop, real), (fake_crop, fake)):
        want = np.asarray(Image.fromarray(source[16:32, 32:64]).resize(size, Image.Resampling.BICUBIC))
        assert np.array_equal(crop, want)
    assert "the ear of the cat" in request.prompt and "in_region" not in request.schema["properties"]
    assert sample.artifacts[0].accepted and sample.status == "accepted"
    # ours, selectable: ask in_region too, and black out the artifact image
    ours = config.curation.model_copy(update={"triplet_in_region": True, "triplet_context": "artifact"})
    vlm = RecordingVLM()
    run_steps([Verdicts(vlm, ours)], [replace(sample, status="pending", artifacts=[replace(artifact)])])
    assert "in_region" in vlm.requests[0].schema["properties"]
    assert np.asarray(vlm.requests[0].images[0])[0, 0].tolist() == fake[0, 0].tolist()


def test_triplet_geometry():
    real = np.zeros((96, 128, 3), np.uint8)
    fake = np.full((96, 128, 3), 200, np.uint8)
    region = box(96, 128, 40, 60, 30, 50)  # 20 x 20
    context, real_crop, fake_crop = triplet_images(real, fake, region, margin=0.25)
    assert context.size == (128, 96) and np.asarray(context)[50, 40].sum() == 0  # region blacked out
    assert real_crop.size == fake_crop.size == (128, 128)  # 30x30 box (20 + 2*5), long side → 128


class ScriptedVLM:
    model_id = "scripted"

    def __init__(self, visible: bool):
        self.visible = visible

    def generate_json(self, requests):
        out = []
        for r in requests:
            if r.name.startswith("triplet"):
                out.append(VLMResult({"visible": self.visible, "in_region": True, "explanation": "extra finger",
                                      "label": "extra finger"}))
            else:
                out.append(VLMResult({"explanation": "explained"}))
        return out


def _synthetic_sample(leak=False):
    real = np.asarray(Image.fromarray(data.chelsea()).resize((128, 96)))
    clean = np.clip(real.astype(int) + 3, 0, 255).astype(np.uint8)  # stands in for the VAE reconstruction
    fake = clean.copy()
    add_region, distort_region = box(96, 128, 10, 30, 10, 40), box(96, 128, 50, 80, 60, 100)
    fake[add_region] = 0
    fake[distort_region] = 255 - fake[distort_region]
    if leak:
        fake[0, 127] = (fake[0, 127].astype(int) + 9) % 256
    return Sample("x", "src", 0, real_image=encode_png(real), clean_image=encode_png(clean), image=encode_png(fake),
                  artifacts=[
        Artifact(tool="add", entity="cat", subentity="ear", region=encode_rle(add_region)),
        Artifact(tool="distort", entity="cat", subentity="leg", region=encode_rle(distort_region))])


@pytest.mark.parametrize("partial, visible, lpips_window, expect", [
    # all or nothing (the default): one failed artifact rejects the image
    (False, True, (0.0, 10.0), ("accepted", {1, 2}, "")),
    (False, False, (0.0, 10.0), ("rejected", {255, 2}, "artifact_rejected: add:vlm_not_visible")),
    (False, True, (5.0, 10.0), ("rejected", {1, 255}, "artifact_rejected: distort:lpips_out_of_window")),
    (False, False, (5.0, 10.0), ("rejected", {255}, "no_accepted_artifact")),
    # partial: failed artifacts become ignore regions of an accepted image
    (True, True, (0.0, 10.0), ("accepted", {1, 2}, "")),
    (True, False, (0.0, 10.0), ("accepted", {255, 2}, "")),
    (True, True, (5.0, 10.0), ("accepted", {1, 255}, "")),
    (True, False, (5.0, 10.0), ("rejected", {255}, "no_accepted_artifact")),
])
def test_curation_labels_mask_per_artifact(partial, visible, lpips_window, expect):
    config = load_config("flux-dev", overrides={"curation.lpips_min": lpips_window[0],
                                                "curation.lpips_max": lpips_window[1], "curation.partial": partial})
    [sample] = run_steps(curation_pool_steps(ScriptedVLM(visible), config), [_synthetic_sample()])
    assert sample.status == expect[0]
    values = set(np.unique(decode_mask(sample.mask)).tolist()) - {0}
    assert values == expect[1]
    assert sample.reject_reason.startswith(expect[2])
    if sample.status == "accepted":  # explanations only for what is kept
        assert sample.global_explanation and sample.negative_explanation == "explained"
        assert all(a.local_explanation for a in sample.artifacts if a.accepted)
    else:
        assert not sample.global_explanation and not sample.negative_explanation


def test_curation_rejects_background_leaks():
    [sample] = run_steps(curation_pool_steps(ScriptedVLM(True), load_config("tiny")), [_synthetic_sample(leak=True)])
    assert sample.is_rejected and sample.reject_reason.startswith("background_leak")


def test_curation_with_the_tiny_vlm(tiny):
    config, vlm = tiny
    [sample] = run_steps(curation_pool_steps(vlm, config), [_synthetic_sample()])
    assert all(a.vlm_verdict for a in sample.artifacts if a.tool == "add")  # the VLM judged every add
    assert sample.status == "accepted" or sample.reject_reason.split(":")[0] in ("artifact_rejected",
                                                                                  "no_accepted_artifact")


def test_explanations_see_what_the_authors_show():
    """Global: the artifact image plus each artifact's box (target_bbox) and description. Negative: the
    real photo and the artifact image plus the artifact image's explanation, to negate."""
    real = np.asarray(Image.fromarray(data.chelsea()).resize((128, 96)))
    fake = 255 - real
    sample = Sample("x", "src", 0, status="accepted", caption="a cat", real_image=encode_png(real),
                    clean_image=encode_png(real), image=encode_png(fake), artifacts=[
                        Artifact(tool="add", accepted=True, bbox=[16, 0, 80, 48], target_bbox=[32, 16, 64, 32],
                                 local_explanation="the cat has a third ear")])

    class Answers(RecordingVLM):
        def generate_json(self, requests):
            self.requests += requests
            return [VLMResult({"explanation": f"answer to {r.name}"}) for r in requests]

    vlm = Answers()
    run_steps([Explain(vlm, load_config("tiny").curation)], [sample])
    by_name = {r.name: r for r in vlm.requests}
    glob, negative = by_name["global_explanation"], by_name["negative_explanation"]
    assert "bbox: [32, 16, 64, 32] description: the cat has a third ear" in glob.prompt
    assert [np.asarray(im).tolist() == a.tolist() for im, a in zip(negative.images, (real, fake))] == [True, True]
    assert "answer to global_explanation" in negative.prompt  # the artifact image's explanation, to negate
    assert sample.negative_explanation == "answer to negative_explanation"
