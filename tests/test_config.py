"""Config presets load, overrides apply, and bad values are rejected with the field named."""

import pytest

from factory.config import PRESETS, ConfigError, LayerRange, load_config


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    config = load_config(preset)
    assert config.preset == preset
    assert len(config.config_hash()) == 16


def test_paper_defaults_on_flux_dev():
    c = load_config("flux-dev")
    assert c.injection.num_steps == 25
    assert c.injection.pe_steps == {"add": 25, "remove": 25, "distort": 15, "fuse": 15}
    assert list(c.injection.pe_single_blocks.resolve(38)) == list(range(0, 19))
    assert list(c.injection.value_single_blocks.resolve(38)) == list(range(20, 38))
    assert list(c.injection.pe_double_blocks.resolve(19)) == list(range(19))
    assert (c.curation.lpips_min, c.curation.lpips_max) == (0.1, 0.5)
    assert (c.perception.box_threshold, c.perception.text_threshold, c.perception.nms_iou) == (0.3, 0.25, 0.5)
    assert c.perception.containment == 0.9


def test_layer_ranges_rescale_to_tiny_models():
    assert list(LayerRange(start=0, stop=19, of=38).resolve(4)) == [0, 1]
    assert list(LayerRange(start=20, stop=38, of=38).resolve(4)) == [2, 3]
    assert list(LayerRange(start=0, stop=19, of=19).resolve(2)) == [0, 1]


def test_yaml_file_and_cli_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("injection:\n  num_steps: 7\ncuration:\n  lpips_max: 0.6\n")
    c = load_config("flux-dev", file=f, overrides=["injection.solver=fireflow", "factory.seed=3"])
    assert c.injection.num_steps == 7 and c.curation.lpips_max == 0.6
    assert c.injection.solver == "fireflow" and c.factory.seed == 3
    assert c.config_hash() != load_config("flux-dev").config_hash()


@pytest.mark.parametrize(
    "override, field",
    [
        ({"perception.box_threshold": 1.5}, "perception.box_threshold"),
        ({"injection.solver": "heun"}, "injection.solver"),
        ({"curation.lpips_min": 0.6, "curation.lpips_max": 0.5}, "curation"),
        ({"injection.bogus": 1}, "injection.bogus"),
        ({"models.flux.kind": "pretrained"}, "models.flux"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", overrides=override)
    assert field in str(err.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("flux-pro")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("tiny", file=tmp_path / "nope.yaml")
