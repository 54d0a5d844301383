"""What a new user trips over first: the command line's messages, the openai backend's model name and
error lines, and a quiet log (fast tests, no Ray)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from agents.vlm import VLMConfigError, VLMRequest, VLMUnavailableError
from agents.vlm.openai_backend import OpenAIBackend
from factory.config import load_config
from factory.run import main
from factory.vlm_service import check_vlm_server
from tests.vlm_servers import ScriptedVLMServer

REQUEST = VLMRequest("Describe.", {"type": "object", "properties": {"explanation": {"type": "string"}},
                                   "required": ["explanation"]}, name="explanation")


def test_print_config_needs_no_n_but_a_run_does(capsys):
    assert main(["--print-config", "--preset", "flux-dev"]) == 0
    assert json.loads(capsys.readouterr().out)["preset"] == "flux-dev"
    with pytest.raises(SystemExit) as usage:
        main(["--preset", "tiny"])
    assert usage.value.code == 2 and "--n" in capsys.readouterr().err


def test_setting_the_vlm_model_to_a_name_says_which_fields_take_one(capsys):
    assert main(["--print-config", "--set", "models.vlm.model=Qwen/Qwen2-VL-7B-Instruct"]) == 2
    err = capsys.readouterr().err
    assert "models.vlm.model" in err and ".path=Qwen/Qwen2-VL-7B-Instruct" in err and "openai_model" in err
    assert "ModelSpec" not in err


def test_openai_model_unset_is_the_one_model_the_server_lists():
    with ScriptedVLMServer("ok", models=("served-model",)) as server:
        config = load_config("tiny", overrides={"models.vlm.backend": "openai", "models.vlm.base_url": server.url})
        assert config.models.vlm.openai_model is None
        checked = check_vlm_server(config)
        assert checked.models.vlm.openai_model == "served-model"  # part of the config hash and flawforge.json
        assert server.bodies[-1]["model"] == "served-model"
        assert server.bodies[-1]["response_format"]["type"] == "json_schema"
    with ScriptedVLMServer("ok", models=("a", "b")) as server:
        with pytest.raises(VLMConfigError, match="serves 2 models .a, b.: set models.vlm.openai_model"):
            OpenAIBackend(server.url, None).generate_json([REQUEST])


def test_a_4xx_is_not_retried_and_the_line_carries_the_server_text():
    with ScriptedVLMServer("status:404") as server:
        backend = OpenAIBackend(server.url, "gpt-4o", max_retries=4)
        with pytest.raises(VLMConfigError) as refused:
            backend.generate_json([REQUEST])
        assert server.requests == 1
        assert "http_404 after 1 attempt; the server said: scripted error 404: model 'gpt-4o' is unknown" in str(
            refused.value)
    with ScriptedVLMServer("status:503") as server:  # retried by the client: the line counts every attempt
        backend = OpenAIBackend(server.url, "m", max_retries=1, timeout_s=5)
        with pytest.raises(VLMUnavailableError, match="http_503 after 2 attempts; the server said") as failed:
            backend.generate_json([REQUEST])
        assert server.requests == 2 and not isinstance(failed.value, VLMConfigError)


def test_placing_flux_parts_in_bfloat16_logs_no_float32_warning():
    from diffusers import AutoencoderKL

    from factory.models.flux import place

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4)
        place(vae, torch.device("cpu"), torch.bfloat16)
    finally:
        logger.removeHandler(handler)
    assert vae.dtype == torch.bfloat16 and not vae.training
    assert not [r for r in records if "kept in float32" in r.getMessage()]
