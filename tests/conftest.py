"""Shared fixtures: a folder of real photos and the tiny-preset shards ``factory.run`` makes from it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Tiny models on a 2-core machine: torch's thread hand-offs cost more than the arithmetic
# (tests/test_flux_engine.py: 53 s with 2 threads, 14 s with 1, with another process busy beside it).
# The tests and every process they start run torch on one thread, as Ray's 1-CPU actors already do.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image
from skimage import data as skdata

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
# Photos shipped with scikit-image (no download): colour, grey, RGBA, natural and textured.
FOLDER_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry",
                 "hubble_deep_field", "retina", "colorwheel", "moon", "brick", "grass", "gravel", "clock", "page",
                 "text", "logo", "cell")
FACTORY_N = 48  # accepted rows in the session's factory run
# The session's run makes 256-384 px images (the tiny preset: 128-192): an artifact's 16-px cells,
# dilated by one cell, then cover ~30 % of an image instead of ~65 %, so a detector trained on these
# shards has clean pixels to tell apart (all-foreground would otherwise be a strong baseline).
FACTORY_IMAGE = ("image.min_short_side=256", "image.max_side=384")


def factory_env() -> dict[str, str]:
    """The environment of a ``python -m factory.run`` subprocess: offline, this checkout, its own local Ray."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    return env


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to every process of ``proc``'s group at once (it was started with ``start_new_session``), then
    SIGKILL to whatever of the group is left after ``grace_s``: a server's workers stop together, not one
    after the other, and none outlives its leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader may have exited while others of its group have not
    proc.wait(timeout=30)


def write_photos(folder: Path, names: tuple[str, ...]) -> Path:
    """scikit-image photos ``names`` written into ``folder`` as PNG files, one source image each."""
    for name in names:
        Image.fromarray(np.asarray(getattr(skdata, name)())).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """``FOLDER_PHOTOS`` written as PNG files."""
    return write_photos(tmp_path_factory.mktemp("photos"), FOLDER_PHOTOS)


@pytest.fixture(scope="session")
def factory_shards(photo_folder, tmp_path_factory) -> Path:
    """``python -m factory.run --n FACTORY_N --preset tiny --source PHOTOS --set FACTORY_IMAGE``: a real run."""
    out = tmp_path_factory.mktemp("factory") / "run"
    cmd = [sys.executable, "-m", "factory.run", "--n", str(FACTORY_N), "--preset", "tiny",
           "--source", str(photo_folder), "--out", str(out), *(f"--set={item}" for item in FACTORY_IMAGE)]
    done = subprocess.run(cmd, cwd=ROOT, env=factory_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


SAMPLES_N = 16  # accepted rows in the session's run over the bundled photos


@dataclass
class SamplesRun:
    """The session's tiny run over the bundled photos, made with secret-looking credentials in its
    environment and its Ray session logs in ``ray_tmp`` (``tests/test_security.py`` scans both for them)."""

    out: Path
    done: subprocess.CompletedProcess
    secrets: dict[str, str]
    ray_tmp: Path
    seconds: float


@pytest.fixture(scope="session")
def samples_run_with_secrets(tmp_path_factory) -> Iterator[SamplesRun]:
    """``python -m factory.run --n SAMPLES_N --preset tiny --source samples``: the README's tiny run, one actor
    per pool, with the credentials a user's shell may hold set to fresh random values."""
    values = {
        "HF_TOKEN": "hf_" + secrets.token_hex(17),
        "HUGGING_FACE_HUB_TOKEN": "hf_" + secrets.token_hex(17),
        "OPENAI_API_KEY": "sk-" + secrets.token_hex(24),
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "AWS_SESSION_TOKEN": secrets.token_urlsafe(60),
        "RAY_AUTH_TOKEN": secrets.token_hex(32),  # the local cluster's own token
    }
    out = tmp_path_factory.mktemp("samples") / "run"
    ray_tmp = Path(tempfile.mkdtemp(prefix="ffsamples", dir="/tmp"))  # short: Ray's socket paths have a limit
    cmd = [sys.executable, "-m", "factory.run", "--n", str(SAMPLES_N), "--preset", "tiny", "--source", "samples",
           "--out", str(out)]
    started = time.time()
    done = subprocess.run(cmd, cwd=ROOT, env=dict(factory_env(), **values, RAY_TMPDIR=str(ray_tmp)),
                          capture_output=True, text=True, timeout=900)
    yield SamplesRun(out, done, values, ray_tmp, time.time() - started)
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def samples_run(samples_run_with_secrets) -> Path:
    """The session's tiny run's output. Other tests compare their runs of the same config with it (the same
    command, the same rows)."""
    done = samples_run_with_secrets.done
    assert done.returncode == 0, done.stderr[-4000:]
    return samples_run_with_secrets.out


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """``python -m factory.models.tiny --out DIR``: every role's tiny model in the real presets' layouts,
    plus ``DIR/cpu.yaml`` / ``DIR/cpu-sam2.yaml`` pointing a real preset at them on a CPU."""
    from factory.models.tiny.writer import main

    out = tmp_path_factory.mktemp("tiny_weights")
    assert main(["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def everywhere(tmp_path_factory) -> Path:
    """A saved detector with zero weights and +8 mask / image biases: every pixel of every image is an artifact.
    Its type head scores the 4 tools only (as detectors saved before the X-AIGD categories): category-agnostic,
    so X-AIGD's per-category metrics submit its mask under every category."""
    import torch

    from detector.model import ArtifactDetector, DetectorConfig, save_detector
    from shards.record import ARTIFACT_TOOLS

    model = ArtifactDetector(DetectorConfig(num_types=len(ARTIFACT_TOOLS)))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.fuse[-1].bias.fill_(8.0)
        model.image_head.bias.fill_(8.0)
    return save_detector(model, tmp_path_factory.mktemp("everywhere"))
