"""The tiny Qwen2-VL on disk answers the agents' real requests like a very bad but usable VLM.

Loaded by the production loader (``backend: transformers``, ``kind: pretrained``, bf16, constrained
decoding), it describes each bundled photo with lexicon entities and parts the tiny Grounding DINO can
read, depending on the photo; its triplet verdicts accept some photos' artifacts and reject others';
and every answer is valid JSON, closed within 32 new tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from agents.describe import Describe
from agents.explain import Explain
from agents.step import Pixels
from agents.verdicts import Verdicts
from agents.vlm.scripted_backend import LEXICON, ROLES
from factory.config import load_config
from factory.models.tiny.perception import tiny_grounding
from factory.models.tiny.writer import CPU_IMAGE, write_pretrained
from factory.models.tiny.vlm import tiny_qwen2_vl
from factory.models.vlm import load_vlm
from factory.sources import SAMPLE_PHOTOS, prepare_image
from shards.images import encode_png, encode_rle
from shards.record import Artifact, Sample


ANSWER_TOKENS = 32  # every answer closes well within this (``models.vlm.max_new_tokens`` is 384)


class Recorder:
    """The backend, keeping every answer it gave."""

    def __init__(self, vlm):
        self.vlm, self.model_id, self.answers = vlm, vlm.model_id, []

    def generate_json(self, requests):
        results = self.vlm.generate_json(requests)
        self.answers += [(request.name, result) for request, result in zip(requests, results)]
        return results


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-vlm") / "vlm"
    write_pretrained(folder, *tiny_qwen2_vl(0))
    config = load_config("flux-dev", overrides={
        "models.device": "cpu", "models.vlm.backend": "transformers", "models.vlm.model.kind": "pretrained",
        "models.vlm.model.path": str(folder), "image.min_short_side": CPU_IMAGE["min_short_side"],
        "image.max_side": CPU_IMAGE["max_side"]})
    vlm = load_vlm(config.models)
    vlm.max_new_tokens = ANSWER_TOKENS
    return config, Recorder(vlm)


def _sample(name: str, config) -> Sample:
    real = prepare_image(np.asarray(getattr(data, name)()), config.image)
    if real.ndim == 2:
        real = np.repeat(real[..., None], 3, axis=2)
    return Sample(sample_id=name, source_id=name, seed=0, real_image=encode_png(real))


def test_the_tiny_vlm_describes_checks_and_explains_like_a_bad_but_usable_vlm(loaded):
    config, vlm = loaded
    samples, pixels = [_sample(name, config) for name in SAMPLE_PHOTOS], Pixels()
    Describe(vlm, config.perception.max_phrases)(samples, pixels)
    bert = tiny_grounding(0)[1].tokenizer
    entities = {}
    for sample in samples:
        assert sample.status == "pending" and sample.caption.startswith("a photo of"), sample.reject_reason
        words = sample.plan["vocabulary"]
        assert all(ROLES.get(w["phrase"]) == w["role"] for w in words), words  # lexicon words in their roles
        assert "[UNK]" not in bert.tokenize(" . ".join(w["phrase"] for w in words))
        names = [w["phrase"] for w in words if w["role"] == "entity"]
        assert len(names) == 2 and {w["role"] for w in words} == {"entity", "peripheral", "intermediate"}
        entities[sample.source_id] = names[0]
        first_parts = [w["phrase"] for w in words[1:] if w["role"] != "entity"][:3]
        assert set(first_parts) <= set(LEXICON[names[0]][0] + LEXICON[names[0]][1])  # the entity's own parts
    assert entities["astronaut"] == "person" and entities["chelsea"] == "cat"  # from the photo, not fixed

    for sample in samples:  # one add artifact on a box of the first entity's first part; the image edited there
        real = np.array(pixels.array(sample))
        region = np.zeros(real.shape[:2], bool)
        h, w = region.shape
        region[h // 4: h // 2, w // 4: w // 2] = True
        fake = real.copy()
        fake[region] = 255 - fake[region]
        words = sample.plan["vocabulary"]
        sample.image = encode_png(fake)
        sample.artifacts = [Artifact(tool="add", entity=words[0]["phrase"], subentity=words[1]["phrase"],
                                     bbox=[w // 4, h // 4, w // 2, h // 2], region=encode_rle(region))]
    Verdicts(vlm, config.curation)(samples, pixels)
    accepted = [s for s in samples if s.status == "accepted"]
    rejected = [s for s in samples if s.status == "rejected"]
    assert accepted and rejected, [(s.sample_id, s.reject_reason) for s in samples]
    assert all("vlm_not_visible" in s.reject_reason for s in rejected)
    assert all(a.label and a.local_explanation for s in samples for a in s.artifacts)

    Explain(vlm, config.curation)(accepted, pixels)
    for sample in accepted:
        assert sample.global_explanation and sample.negative_explanation
        assert sample.negative_explanation != sample.global_explanation  # it negates the flaws

    names = {name for name, _ in vlm.answers}
    assert {"caption_vocabulary", "triplet_add", "global_explanation"} <= names
    for name, answer in vlm.answers:
        assert answer.ok, (name, answer.error, answer.raw)  # an answer cut at ANSWER_TOKENS would be invalid
