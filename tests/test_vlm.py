"""VLM backends: schema-constrained JSON from a random tiny VLM, and an OpenAI-compatible client
that survives a misbehaving local server without leaking its key."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
from PIL import Image
from skimage import data

from agents import prompts
from agents.vlm import VLMRequest, VLMUnavailableError
from agents.vlm.openai_backend import OpenAIBackend
from factory.config import load_config
from factory.models.vlm import load_vlm

SCHEMAS = [prompts.caption_vocabulary(), prompts.triplet_check("add", "person", "hand"),
           prompts.triplet_check("fuse", "cat+cup", None), prompts.local_explanation("remove", "cat", "ear"),
           prompts.global_explanation([([8, 8, 40, 24], "an extra finger"), ([48, 16, 64, 48], "a missing ear")]),
           prompts.negative_explanation("a person with a cat", "the hand has an extra finger")]


def test_tiny_transformers_vlm_returns_schema_valid_json_for_every_schema_batched():
    vlm = load_vlm(load_config("tiny", overrides={"models.vlm.backend": "transformers"}).models)
    photos = [Image.fromarray(getattr(data, n)()).convert("RGB").resize((96, 80)) for n in ("astronaut", "coffee")]
    requests = [VLMRequest(p, s, images=photos[: 1 + i % 2]) for i, (p, s) in enumerate(SCHEMAS)]
    results = vlm.generate_json(requests)
    assert len(results) == len(requests)
    for request, result in zip(requests, results):
        assert result.ok, (request.name, result.error, result.raw)
        jsonschema.validate(result.value, request.schema)


class ScriptedServer(BaseHTTPRequestHandler):
    """Answers /chat/completions from a script: 429, 500, garbage, a hang, then a good answer."""

    script: list[str] = []
    seen: list[dict] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"body": body, "auth": self.headers.get("Authorization")})
        action = type(self).script.pop(0) if type(self).script else "good"
        if action == "429":
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        elif action == "500":
            self._send(500, {"error": {"message": "boom"}})
        elif action == "hang":
            time.sleep(2.0)
            self._send(200, self._completion('{"explanation": "late"}'))
        elif action == "garbage":
            self._send(200, self._completion("this is not json"))
        else:
            self._send(200, self._completion('{"explanation": "an extra finger on the left hand"}'))

    def _completion(self, content: str) -> dict:
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}]}

    def _send(self, status: int, payload: dict, headers: dict | None = None):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    ScriptedServer.script, ScriptedServer.seen = [], []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_openai_backend_retries_times_out_and_never_logs_the_key(server, monkeypatch, caplog):
    secret = "sk-test-SECRET-123"
    monkeypatch.setenv("FLAWFORGE_TEST_KEY", secret)
    backend = OpenAIBackend(server, "served-model", "FLAWFORGE_TEST_KEY", max_concurrency=1, max_retries=3,
                            timeout_s=0.5)
    prompt, schema = prompts.local_explanation("add", "person", "hand")
    photo = Image.fromarray(data.astronaut()).resize((64, 64))
    caplog.set_level(logging.DEBUG)

    ScriptedServer.script = ["429", "500", "hang", "good"]  # the client's own retries get through all three
    [ok] = backend.generate_json([VLMRequest(prompt, schema, [photo], name="local")])
    assert ok.ok and ok.value["explanation"].startswith("an extra finger")
    assert len(ScriptedServer.seen) == 4

    ScriptedServer.script = ["garbage"]  # a bad *answer* is a per-request result: the data said no
    [bad] = backend.generate_json([VLMRequest(prompt, schema, [photo], name="local")])
    assert not bad.ok and bad.error.startswith("invalid_json")

    ScriptedServer.script = ["500"] * 10  # a server that keeps failing is an infrastructure failure: it raises
    before = len(ScriptedServer.seen)
    with pytest.raises(VLMUnavailableError, match="http_500 after 4 attempts") as failed:
        backend.generate_json([VLMRequest(prompt, schema, [photo], name="local")])
    assert len(ScriptedServer.seen) - before == 4 and server in str(failed.value)

    request = ScriptedServer.seen[0]["body"]
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"] == schema
    assert request["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert ScriptedServer.seen[0]["auth"] == f"Bearer {secret}"  # the key is sent to the server...
    logged = caplog.text + repr(backend) + ok.raw + bad.error + str(failed.value)
    assert secret not in logged  # ...and nowhere else


def test_openai_backend_raises_when_the_server_is_unreachable():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "m", max_retries=1, timeout_s=2)
    request = VLMRequest(*prompts.triplet_check("remove", "cat", "ear"), [Image.new("RGB", (8, 8))])
    with pytest.raises(VLMUnavailableError, match="127.0.0.1:9.*APIConnectionError after 2 attempts"):
        backend.generate_json([request])


@pytest.mark.slow
def test_the_vlm_service_loads_while_the_pools_start_and_a_failed_start_says_so(tmp_path):
    """``start_vlm_service`` returns at once; the model id arrives on first use; a server that cannot
    load its model raises, on first use, the error a stage turns into failed (retried) samples."""
    import ray

    from factory.vlm_service import start_vlm_service, stop_vlm_service

    ray.init(num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    try:
        working = start_vlm_service(load_config("tiny", overrides={"models.vlm.backend": "transformers"}))
        assert working._model_id is None  # not waited for
        request = VLMRequest(*prompts.caption_vocabulary(), images=[Image.new("RGB", (64, 64))])
        assert working.generate_json([request])[0].raw is not None
        assert working.model_id.startswith("tiny")
        stop_vlm_service(working)

        missing = tmp_path / "no-such-model"
        broken = start_vlm_service(load_config("tiny", overrides={
            "models.vlm.backend": "transformers", "models.vlm.model.kind": "pretrained",
            "models.vlm.model.path": str(missing)}))
        with pytest.raises(RuntimeError, match="the VLM server could not start"):
            broken.model_id
        stop_vlm_service(broken)
        assert start_vlm_service(load_config("tiny")) is None  # scripted: each stage answers itself
    finally:
        ray.shutdown()
