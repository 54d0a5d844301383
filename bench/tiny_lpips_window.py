"""The tiny preset's LPIPS window, measured: the box-crop LPIPS of the distort artifacts that the
tiny models make on 19 scikit-image photos x 8 seeds (perception + synthesis + pixel checks, no Ray),
with the distribution's range, median, P15 and P85 (the window in factory/presets.py is P15-P85).

    python bench/tiny_lpips_window.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.describe import Describe  # noqa: E402
from agents.ground import GroundAndSegment  # noqa: E402
from agents.pixel_checks import PixelChecks  # noqa: E402
from agents.planner import PlanArtifacts  # noqa: E402
from agents.step import run_steps  # noqa: E402
from agents.synthesis import Synthesize  # noqa: E402
from factory.config import load_config  # noqa: E402
from factory.models.flux import load_flux  # noqa: E402
from factory.models.lpips import load_lpips  # noqa: E402
from factory.models.perception import load_grounding, load_segmentation  # noqa: E402
from factory.models.vlm import load_vlm  # noqa: E402
from factory.sources import prepare_image  # noqa: E402
from shards.images import encode_png  # noqa: E402
from shards.record import Sample  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "hubble_deep_field",
          "retina", "colorwheel", "moon", "brick", "grass", "gravel", "clock", "page", "text", "logo", "cell")
SEEDS = tuple(range(8))


def main() -> None:
    config = load_config("tiny")
    steps = [Describe(load_vlm(config.models), config.perception.max_phrases),
             GroundAndSegment(load_grounding(config.models), load_segmentation(config.models), config.perception),
             PlanArtifacts(config.perception, config.tools),
             Synthesize(load_flux(config.models), config.injection),
             PixelChecks(load_lpips(config.models), config.curation)]
    samples = []
    for name in PHOTOS:
        rgb = prepare_image(np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB")), config.image)
        samples += [Sample(f"{name}-{seed}", name, seed, real_image=encode_png(rgb)) for seed in SEEDS]
    values = np.array([a.lpips for s in run_steps(steps, samples) for a in s.artifacts
                       if a.tool == "distort" and a.lpips is not None])
    p15, median, p85 = np.percentile(values, [15, 50, 85])
    print(json.dumps({"distort_artifacts": int(values.size), "min": round(float(values.min()), 3),
                      "max": round(float(values.max()), 3), "median": round(float(median), 3),
                      "p15": round(float(p15), 3), "p85": round(float(p85), 3)}, indent=2))


if __name__ == "__main__":
    main()
