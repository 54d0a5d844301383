"""The synthesize step on the tiny preset: real photos in, artifact images + regions out."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from agents.step import Pixels, run_steps
from agents.synthesis import Synthesize
from factory.config import load_config
from factory.models.flux import tiny_flux
from shards.images import decode_array, decode_rle, encode_png
from shards.record import Artifact, Sample


def _sample(name: str, size, cells, refs, tool="add") -> Sample:
    photo = np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize(size))
    return Sample(sample_id=name, source_id=name, seed=0, caption=f"a photo of a {name}", real_image=encode_png(photo),
                  artifacts=[Artifact(tool=tool, cells=cells, reference_cells=refs)])


def test_synthesis_changes_only_the_artifact_regions():
    config = load_config("tiny")
    step = Synthesize(tiny_flux(0), config.injection)
    samples = [_sample("astronaut", (128, 128), [9, 10], [27, 28]),
               _sample("chelsea", (128, 128), [40, 41, 48], [2, 3, 4], tool="distort"),
               _sample("coffee", (160, 128), [12], [30], tool="remove")]
    out = {s.sample_id: s for s in run_steps([step], samples)}
    for name in ("astronaut", "chelsea", "coffee"):
        s = out[name]
        assert not s.is_rejected and s.image
        clean, fake = decode_array(s.clean_image), decode_array(s.image)
        region = decode_rle(s.artifacts[0].region)
        assert region.shape == clean.shape[:2] and region.any()
        assert np.array_equal(clean[~region], fake[~region])  # composited onto the VAE reconstruction
        assert (clean[region] != fake[region]).any()
        assert s.provenance["models"]["flux"].startswith("tiny-random")
        assert set(s.provenance["synthesis_timings"]) == {"encode", "invert", "denoise", "decode", "total"}


def test_a_broken_record_raises_instead_of_rejecting():
    """A corrupt ``real_image`` is our own bug, not the data's: it must reach the stage's failure path."""
    step = Synthesize(tiny_flux(0), load_config("tiny").injection)
    bad = Sample(sample_id="bad", source_id="bad", seed=0, real_image=b"not a png",
                 artifacts=[Artifact(tool="add", cells=[1], reference_cells=[2])])
    with pytest.raises(Exception):
        step([bad], Pixels())
    assert bad.status == "pending"
