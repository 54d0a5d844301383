"""The tiny LPIPS: the package's linear heads on a random AlexNet built under a seed."""

from __future__ import annotations

from factory.models.common import seeded
from factory.models.lpips import alex_lpips


def tiny_lpips(seed: int):
    """LPIPS with the package's linear heads on a random AlexNet built under ``seed``."""
    with seeded(seed):
        return alex_lpips(pnet_rand=True)
