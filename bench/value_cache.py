"""Value-cache bytes per image at FLUX.1-dev shapes: ours (only the layers × steps that inject)
next to caching every layer at every step, as the naive approach does.

    python bench/value_cache.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.flux_shapes import DOUBLE, SINGLE, value_cache_bytes  # noqa: E402
from factory.config import load_config  # noqa: E402


def main() -> None:
    inj = load_config("flux-dev").injection
    layers = len(inj.value_single_blocks.resolve(SINGLE))
    rows = []
    for side in (512, 1024):
        ours = value_cache_bytes(side, layers, inj.value_steps)
        naive = value_cache_bytes(side, DOUBLE + SINGLE, inj.num_steps)
        rows.append({"side": side, "ours_GiB": round(ours / 2**30, 3), "every_layer_and_step_GiB": round(naive / 2**30, 3),
                     "ratio": round(ours / naive, 4), "layers": layers, "steps": inj.value_steps})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
