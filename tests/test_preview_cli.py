"""The preview gallery and the CLI contract (no Ray needed)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from factory.preview import mask_overlay, write_preview
from factory.run import build_parser
from shards.images import encode_png
from shards.record import Artifact, Sample
from shards.writer import write_shard

ROOT = Path(__file__).resolve().parents[1]


def _sample(i: int, status: str) -> Sample:
    real = np.asarray(Image.fromarray(data.astronaut()).resize((64, 64)))
    image, mask = real.copy(), np.zeros((64, 64), np.uint8)
    image[16:32, 16:32] = 255 - image[16:32, 16:32]
    mask[16:32, 16:32], mask[40:48, 40:48] = 1, 255
    s = Sample(sample_id=f"s{i}", source_id="samples/astronaut", seed=i, status=status, caption="an astronaut",
               real_image=encode_png(real), image=encode_png(image), mask=encode_png(mask),
               global_explanation="The suit has a patch of inverted colours.",
               artifacts=[Artifact(tool="distort", kernel="permute", entity="person", subentity="arm",
                                   accepted=True, local_explanation="scrambled arm")])
    if status == "rejected":
        s.reject_reason = "no_accepted_artifact"
    return s


def test_preview_writes_html_and_contact_sheet(tmp_path):
    write_shard([_sample(0, "accepted"), _sample(1, "accepted"), _sample(2, "rejected")],
                tmp_path / "data" / "part-0.parquet")
    index = write_preview(tmp_path, rows=5)
    html = index.read_text()
    assert "s0" in html and "s1" in html and "s2" not in html  # rejected rows hidden by default
    sheet = Image.open(tmp_path / "preview" / "contact_sheet.png")
    assert sheet.height == 2 * 192 and sheet.width > 3 * 192


def test_mask_overlay_marks_artifacts_and_ignore_regions():
    image = np.full((4, 4, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255, 0]] * 4, np.uint8)
    out = mask_overlay(image, mask)
    assert np.array_equal(out[:, 0], image[:, 0])
    assert out[0, 1, 0] > out[0, 1, 1]  # red tint
    assert out[0, 2, 0] == out[0, 2, 1] == out[0, 2, 2]  # grey


def test_cli_help_documents_every_flag():
    help_text = subprocess.run([sys.executable, "-m", "factory.run", "--help"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag in help_text
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"


def test_cli_rejects_bad_config_with_the_field_named():
    proc = subprocess.run([sys.executable, "-m", "factory.run", "--n", "1", "--set", "injection.num_steps=0"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "injection.num_steps" in proc.stderr
