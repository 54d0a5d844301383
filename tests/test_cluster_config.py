"""ray_cluster.yaml is a valid Ray cluster-launcher config (Ray's own offline validation)."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[1] / "ray_cluster.yaml"


@pytest.fixture
def cluster() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_cluster_yaml_validates(cluster):
    prepared = prepare_config(cluster)
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    gpu = prepared["available_node_types"]["gpu_8x_h100"]
    assert gpu["max_workers"] <= prepared["max_workers"]
    assert any("[vllm" in cmd for cmd in prepared["setup_commands"])


def test_validation_rejects_broken_configs(cluster):
    unknown = copy.deepcopy(cluster)
    unknown["not_a_ray_key"] = 1
    with pytest.raises(Exception):
        validate_config(prepare_config(unknown))

    no_head = copy.deepcopy(cluster)
    no_head["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(prepare_config(no_head))

    bad_bounds = copy.deepcopy(cluster)
    bad_bounds["available_node_types"]["gpu_8x_h100"]["min_workers"] = 99
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad_bounds))
