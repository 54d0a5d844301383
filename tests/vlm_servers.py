"""OpenAI-compatible VLM servers on loopback for the openai backend's tests.

* ``transformers_serve``: a real one, ``transformers serve`` on the tiny Qwen2-VL written to a folder
  (it accepts the backend's requests but ignores ``response_format``, so it answers prose);
* ``ScriptedVLMServer``: a hand-written stdlib server, only for the parts no real server can play:
  a server that is down (503) or one that passes the start-up check and then answers prose.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from factory.vlm_service import CHECK_NAME
from tests.conftest import free_port, stop_process_group

SERVE_START_S = 180  # loading the tiny model and starting uvicorn on 2 busy cores


def write_tiny_vlm(folder: Path, seed: int = 0) -> Path:
    """The tiny Qwen2-VL (``factory.models.vlm``) as a transformers model + processor folder."""
    from factory.models.tiny.writer import write_pretrained
    from factory.models.tiny.vlm import tiny_qwen2_vl

    write_pretrained(folder, *tiny_qwen2_vl(seed))
    return folder


@contextlib.contextmanager
def transformers_serve(model_dir: Path, log: Path) -> Iterator[str]:
    """``transformers serve MODEL_DIR`` on a free loopback port, on CPU; yields its ``/v1`` URL.

    The server runs in its own process group, stopped (with the workers it started) on exit."""
    port = free_port()
    cli = Path(sys.executable).parent / "transformers"
    cmd = [str(cli), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process_group(proc, grace_s=30)  # its own group: the server and its model worker


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVE_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.5)
    raise RuntimeError(f"transformers serve did not become healthy in {SERVE_START_S} s:\n{log.read_text()[-3000:]}")


# ------------------------------------------------------------------------- a hand-written server
GOOD_ANSWERS = {
    CHECK_NAME: {"ok": True},
    "caption_vocabulary": {"caption": "a person with a cat", "entities": [
        {"name": "person", "peripheral": ["hand", "ear"], "intermediate": ["arm", "head"]},
        {"name": "cat", "peripheral": ["tail", "paw"], "intermediate": ["leg"]}]},
    "triplet": {"visible": True, "in_region": True, "explanation": "the part is wrong", "label": "wrong part"},
    "explanation": {"explanation": "a structural flaw"},
}


class ScriptedVLMServer(ThreadingHTTPServer):
    """An OpenAI-compatible server on loopback whose ``mode`` says how it answers chat completions:

    ``"ok"``: schema-valid answers; ``"down"``: 503 to everything but the start-up check (a server
    that went down after it); ``"prose"``: a valid start-up check, then prose (a server that degraded
    mid-run); ``"status:CODE"``: that HTTP status with an OpenAI-style error body. ``/v1/models`` lists
    ``models``."""

    def __init__(self, mode: str = "ok", models: tuple[str, ...] = ("scripted-vlm",)):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.models, self.requests = mode, models, 0
        self.bodies: list[dict] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> ScriptedVLMServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
        self.requests += 1
        self.bodies.append(body)
        name = body.get("response_format", {}).get("json_schema", {}).get("name", "")
        if self.mode.startswith("status:"):
            status = int(self.mode.split(":")[1])
            return status, {"error": {"message": f"scripted error {status}: model {body.get('model')!r} is unknown",
                                      "type": "invalid_request_error"}}
        if self.mode == "down" and name != CHECK_NAME:
            return 503, {"error": {"message": "overloaded"}}
        if self.mode == "prose" and name != CHECK_NAME:
            return 200, completion("Sure! The photo shows a person with a cat.")
        key = next((k for k in GOOD_ANSWERS if name.startswith(k)), "explanation")
        asked = body.get("response_format", {}).get("json_schema", {}).get("schema", {}).get("properties", {})
        return 200, completion(json.dumps({k: v for k, v in GOOD_ANSWERS[key].items() if k in asked}))  # only what is asked


def completion(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "scripted-vlm", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedVLMServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            return self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in self.server.models]})
        self._send(404, {"error": {"message": "not found"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(*self.server.answer(body))

    def _send(self, status: int, payload: dict):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
