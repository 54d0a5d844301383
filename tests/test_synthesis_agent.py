"""The synthesize step on the tiny preset: real photos in, artifact images + regions out."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from agents.step import Pixels, run_steps
from agents.synthesis import Synthesize
from factory.config import load_config
from factory.models.tiny.flux import tiny_flux
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


def test_a_photos_seeds_share_perception_and_inversion_with_the_same_output():
    """Perceived and inverted once per photo, a photo's seeds come out as they do one at a time
    (same plans, same pixels up to the rounding of batched kernels), for steps·(photos + samples)
    transformer rows instead of 2·steps·samples."""
    import pyarrow as pa

    from factory.plan import candidates, work_schema
    from factory.stages import PerceptionStage, SynthesisStage
    from shards.rows import table_to_samples

    config = load_config("tiny", overrides={"factory.seeds_together": 3, "factory.perception.batch_size": 6,
                                            "factory.synthesis.batch_size": 6})
    items = [w for w in candidates(config) if w.source_id in ("samples/astronaut", "samples/chelsea")][:6]
    assert [w.source_id for w in items] == ["samples/astronaut"] * 3 + ["samples/chelsea"] * 3
    config_json = config.model_dump_json()
    work = pa.Table.from_pylist([w.__dict__ for w in items], schema=work_schema())  # perception decodes them
    perceive, synthesize = PerceptionStage(config_json), SynthesisStage(config_json)
    engine = synthesize.steps[0].engine
    rows = []
    forward = engine.forward
    engine.forward = lambda **kw: rows.append(kw["hidden_states"].shape[0]) or forward(**kw)

    together = table_to_samples(synthesize(perceive(work)))
    rows_together, rows[:] = sum(rows), []
    apart = [table_to_samples(synthesize(perceive(work.slice(i, 1))))[0] for i in range(len(items))]
    rows_apart = sum(rows)

    synthesized = [s for s in together if s.image]
    assert len(synthesized) >= 4, [s.reject_reason for s in together]
    steps = config.injection.num_steps
    photos = len({s.source_id for s in synthesized})
    assert rows_together == steps * (photos + len(synthesized))
    assert rows_apart == 2 * steps * len(synthesized)
    for a, b in zip(together, apart):
        assert (a.sample_id, a.status, a.reject_reason, a.caption) == (b.sample_id, b.status, b.reject_reason, b.caption)
        assert a.plan == b.plan and [x.cells for x in a.artifacts] == [x.cells for x in b.artifacts]
        if a.image:
            diff = np.abs(decode_array(a.image).astype(int) - decode_array(b.image).astype(int))
            assert diff.max() <= 2 and diff.mean() < 0.01, (a.sample_id, diff.max(), diff.mean())  # seen: 1, 2e-4
            assert np.array_equal(decode_array(a.clean_image), decode_array(b.clean_image))
    # The seeds of a photo drew different plans (mappings: targets and references) from the one perception.
    plans = [tuple((x.tool, tuple(x.cells), tuple(x.reference_cells)) for x in s.artifacts)
             for s in synthesized if s.source_id == "samples/astronaut"]
    assert len(set(plans)) > 1


def _two_photos(**overrides):
    """A tiny config with ``overrides`` and the work items of two photos' first three seeds (the
    perception stage decodes them)."""
    import pyarrow as pa

    from factory.plan import candidates, work_schema

    config = load_config("tiny", overrides={"factory.seeds_together": 3, "factory.perception.batch_size": 6,
                                            "factory.synthesis.batch_size": 6, **overrides})
    items = [w for w in candidates(config) if w.source_id in ("samples/astronaut", "samples/chelsea")][:6]
    return config, pa.Table.from_pylist([w.__dict__ for w in items], schema=work_schema())


def _images(table) -> dict[str, np.ndarray]:
    from shards.rows import table_to_samples

    return {s.sample_id: decode_array(s.image) for s in table_to_samples(table) if s.image}


def test_prompts_encoded_in_perception_give_the_same_images_and_are_never_stored():
    from factory.stages import PerceptionStage, SynthesisStage
    from shards.rows import samples_to_table, table_to_samples

    config, work = _two_photos()
    here = _images(SynthesisStage(config.model_dump_json())(PerceptionStage(config.model_dump_json())(work)))

    config, work = _two_photos(**{"factory.synthesis.text_encoders_in": "perception"})
    synthesis = SynthesisStage(config.model_dump_json())
    assert synthesis.steps[0].engine.text.text_encoder_2 is None  # T5 is not on the synthesis actor
    perceived = PerceptionStage(config.model_dump_json())(work)
    assert all(s.prompt_embeds for s in table_to_samples(perceived) if s.is_pending)
    done = synthesis(perceived)
    there = _images(done)
    assert here.keys() == there.keys() and len(here) >= 4
    for key in here:
        assert np.array_equal(here[key], there[key]), key
    stored = samples_to_table(table_to_samples(done))
    assert "prompt_embeds" not in stored.column_names
    assert not any(s.prompt_embeds for s in table_to_samples(done))  # dropped once used


def test_a_samples_pixels_do_not_depend_on_which_photos_share_its_batch():
    """One engine call per photo group: a batch of two photos gives each photo's samples the same bytes as
    a batch of that photo alone (batched kernels would round differently)."""
    from factory.stages import PerceptionStage, SynthesisStage

    config, work = _two_photos()
    perceived = PerceptionStage(config.model_dump_json())(work)
    synthesis = SynthesisStage(config.model_dump_json())
    both = _images(synthesis(perceived))
    alone = {**_images(synthesis(perceived.slice(0, 3))), **_images(synthesis(perceived.slice(3, 3)))}
    assert both.keys() == alone.keys() and len(both) >= 4
    for key in both:
        assert np.array_equal(both[key], alone[key]), key


def test_compiled_warmed_up_and_one_photo_per_call_give_the_same_images():
    """``compile`` "always" (eager backend on CPU: the torch.compile path without a C++ toolchain),
    the warm-up call at start, and one engine call per photo."""
    from factory.stages import PerceptionStage, SynthesisStage

    config, work = _two_photos()
    perceived = PerceptionStage(config.model_dump_json())(work)
    plain = SynthesisStage(config.model_dump_json())
    reference = _images(plain(perceived))

    config, _ = _two_photos(**{"factory.synthesis.compile": "always", "factory.synthesis.compile_backend": "eager"})
    compiled = SynthesisStage(config.model_dump_json())
    step = compiled.steps[0]
    assert step.engine.forward is not step.engine.transformer.forward  # wrapped by torch.compile
    calls = []
    run = step.engine.run
    step.engine.run = lambda images, *a, **kw: calls.append(len(images)) or run(images, *a, **kw)
    images = _images(compiled(perceived))
    assert calls == [1, 1]
    assert images.keys() == reference.keys()
    for key in reference:
        assert np.abs(images[key].astype(int) - reference[key].astype(int)).max() <= 2, key


def test_fp8_without_a_float8_gpu_stops_with_the_reason():
    from factory.models.flux import float8_transformer

    with pytest.raises(RuntimeError, match="float8"):
        float8_transformer(tiny_flux(0).transformer)
