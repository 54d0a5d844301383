"""Backend ``openai`` against servers: a server that ignores the JSON schema is a configuration fault.

The start-up check stops the job before any source is planned (against a real ``transformers serve``,
which ignores ``response_format``); a server that degrades mid-run trips the circuit breaker once
invalid answers dominate its window, and after the fix the same command ends with exactly n.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from factory.config import load_config
from factory.failures import Failures
from shards.reader import iter_samples
from shards.record import Sample
from tests.conftest import ROOT, factory_env, write_photos
from tests.vlm_servers import ScriptedVLMServer, transformers_serve, write_tiny_vlm

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat")


@pytest.fixture(scope="module")
def served_tiny_vlm(tmp_path_factory):
    """``transformers serve`` on the tiny Qwen2-VL on loopback: (its /v1 URL, the model name it serves)."""
    folder = tmp_path_factory.mktemp("served")
    model = write_tiny_vlm(folder / "vlm")
    with transformers_serve(model, folder / "serve.log") as url:
        yield url, str(model)


def factory_run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "factory.run", *args]
    return subprocess.run(cmd, cwd=ROOT, env=factory_env(), capture_output=True, text=True, timeout=600)


def openai_args(url: str, *more: str) -> list[str]:
    return ["--set", "models.vlm.backend=openai", "--set", f"models.vlm.base_url={url}",
            "--set", "models.vlm.max_retries=1", "--set", "models.vlm.timeout_s=30", *more]


def test_transformers_serve_ignores_response_format_and_the_start_up_check_stops_the_job(served_tiny_vlm, tmp_path):
    url, model = served_tiny_vlm
    out = tmp_path / "run"
    done = factory_run("--n", "2", "--preset", "tiny", "--out", str(out), *openai_args(url))
    assert done.returncode == 4, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == done.stderr.strip().splitlines()[-1]
    line = errors[0]
    assert "start-up check failed" in line and url in line
    assert f"(model {model})" in line  # openai_model unset: the one model /v1/models lists
    assert "ignores the JSON schema" in line and "response_format" in line and "vLLM" in line
    assert not out.exists()  # stopped before any source was planned: nothing used up, nothing written


def test_print_config_checks_the_server_and_names_its_model(served_tiny_vlm):
    url, model = served_tiny_vlm
    done = factory_run("--print-config", *openai_args(url))  # no --n needed
    assert done.returncode == 4 and "ignores the JSON schema" in done.stderr.strip().splitlines()[-1]
    assert json.loads(done.stdout)["models"]["vlm"]["base_url"] == url


def test_a_4xx_of_a_real_server_is_not_retried_and_its_text_is_in_the_line(served_tiny_vlm, tmp_path):
    url, model = served_tiny_vlm
    done = factory_run("--n", "1", "--out", str(tmp_path / "run"),
                       *openai_args(url, "--set", "models.vlm.openai_model=gpt-4o"))
    assert done.returncode == 4, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: start-up check failed") and "http_400 after 1 attempt;" in line
    assert f"pinned to '{model}'" in line  # the server's own words


def test_occasional_invalid_answers_stay_rejections_and_dominating_ones_trip_the_breaker():
    policy = load_config("tiny", overrides={"factory.breaker_window": 10, "factory.breaker_min_failures": 4,
                                            "factory.breaker_failure_share": 0.5}).factory
    failures = Failures(policy)

    def finished(i: int, reason: str = "") -> Sample:
        sample = Sample(sample_id=f"s{i}", source_id="s", seed=i)
        sample.status = "rejected" if reason else "accepted"
        sample.reject_reason = reason
        sample.provenance["models"] = {"vlm": "served-model"}
        return sample

    for i in range(20):  # one invalid answer in every five: data, never a stop
        failures.finished(finished(i, "vlm_invalid_answer:invalid_json: Expecting value at 0" if i % 5 == 0 else ""))
        assert failures.tripped() is None
    for i in range(20, 24):  # the verdicts' invalid answers count as well
        failures.finished(finished(i, "no_accepted_artifact: fuse:vlm_invalid_answer: invalid_json: at 0"))
    message = failures.tripped()
    assert message and "did not follow their JSON schema in 5 of the latest 10 samples" in message
    assert "served-model" in message and "vLLM" in message
    assert failures.report()["total"] == 0  # not failures: those samples are committed as rejected


@pytest.mark.slow
def test_a_server_that_goes_down_or_degrades_mid_run_stops_the_job_and_the_rerun_finishes(tmp_path):
    """One output, three runs against a server that passed the start-up check: it answers 503 (a stage
    fails, nothing is committed for it), then prose (invalid answers, at most one breaker window of
    them committed), then it is fixed and the same command ends with exactly n."""
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photos(photos, PHOTOS)
    out, n = tmp_path / "run", 2
    policy = load_config("tiny").factory
    with ScriptedVLMServer("down") as server:
        args = ["--n", str(n), "--preset", "tiny", "--source", str(photos), "--out", str(out),
                *openai_args(server.url, "--set", "models.vlm.timeout_s=5")]
        down = factory_run(*args)
        assert down.returncode == 4, down.stderr[-3000:]
        line = down.stderr.strip().splitlines()[-1]
        assert line.startswith("error: stage 'perception' failed") and server.url in line
        assert "http_503 after 2 attempts; the server said: overloaded" in line
        committed = list(iter_samples(out))
        assert not any("vlm" in s.reject_reason or "503" in s.reject_reason for s in committed)
        errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
        assert errors and all(e["stage"] == "perception" and e["type"] == "VLMUnavailableError" for e in errors)
        assert all("Traceback" in e["traceback"] for e in errors)
        report = json.loads((out / "report.json").read_text())
        assert report["failed"]["by_stage"] == {"perception": {"VLMUnavailableError": len(errors)}}
        assert report["stopped"] and not report["complete"]
        # Stopped promptly: far fewer tries than the sources x seeds it could have walked through.
        assert len({e["sample_id"] for e in errors}) < len(PHOTOS) * policy.seeds_per_image

        server.mode = "prose"  # back, but ignoring response_format
        degraded = factory_run(*args)
        assert degraded.returncode == 4, degraded.stderr[-3000:]
        line = degraded.stderr.strip().splitlines()[-1]
        assert "did not follow their JSON schema" in line and "scripted-vlm" in line and "vLLM" in line
        invalid = [s for s in iter_samples(out) if "vlm_invalid_answer" in s.reject_reason]
        assert 0 < len(invalid) <= policy.breaker_window
        assert len(list(iter_samples(out))) == len(committed) + len(invalid)

        server.mode = "ok"  # fixed: the same command finishes the job
        fixed = factory_run(*args)
        assert fixed.returncode == 0, fixed.stderr[-3000:]
    samples = list(iter_samples(out))
    assert len({s.sample_id for s in samples}) == len(samples)
    assert sum(s.status == "accepted" for s in samples) == n
    assert {s.sample_id for s in invalid} <= {s.sample_id for s in samples}  # kept, as rejections
    assert not any("503" in s.reject_reason or "error" in s.reject_reason.lower() for s in samples)
