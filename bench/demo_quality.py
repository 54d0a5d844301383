"""How photo-like a run's images are: the mean |real_image - clean_image| (grey levels) and the mean
mask share (mask pixels / image pixels) over its accepted rows.

    python bench/demo_quality.py runs/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shards.images import decode_array, decode_mask  # noqa: E402
from shards.reader import iter_samples  # noqa: E402
from shards.record import Sample  # noqa: E402


@dataclass
class DemoQuality:
    rows: int  # accepted rows measured
    real_clean_error: float  # mean |real_image - clean_image| over their pixels and channels, uint8 grey levels
    mask_share: float  # mean over rows of (mask pixels != 0) / image pixels


def demo_quality(run: str | Path) -> DemoQuality:
    """The two means over ``run``'s accepted rows (``run`` is a factory output folder or a shard path)."""
    return quality_of(iter_samples(run), where=str(run))


def quality_of(samples: Iterable[Sample], where: str = "these rows") -> DemoQuality:
    """The two means over the accepted ones of ``samples``."""
    errors, shares = [], []
    for sample in samples:
        if sample.status != "accepted":
            continue
        real = decode_array(sample.real_image).astype(np.int16)
        clean = decode_array(sample.clean_image).astype(np.int16)
        errors.append(float(np.abs(real - clean).mean()))
        shares.append(float((decode_mask(sample.mask) != 0).mean()))
    if not errors:
        raise ValueError(f"{where} holds no accepted rows")
    return DemoQuality(len(errors), float(np.mean(errors)), float(np.mean(shares)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a factory output folder (or its data/ shards)")
    args = parser.parse_args(argv)
    print(json.dumps(asdict(demo_quality(args.run)), indent=2))


if __name__ == "__main__":
    main()
