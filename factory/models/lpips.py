"""LPIPS (AlexNet) for curation's distortion window.

``tiny``: the linear heads shipped inside the ``lpips`` package on a randomly initialised AlexNet
(nothing is downloaded). ``pretrained``: torchvision's ImageNet AlexNet weights, which must already
be in the torch hub cache (``models.lpips.path: alex``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from factory.config import ModelsConfig
from factory.models.common import ModelNotFoundError, resolve_device, seeded

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def load_lpips(models: ModelsConfig):
    import lpips

    if models.lpips.kind == "tiny":
        with seeded(models.seed):
            metric = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
        if not cached.is_file():
            raise ModelNotFoundError(
                "LPIPS", "alexnet",
                f"torchvision's AlexNet weights are not in {cached.parent}; fetch them once on a machine with "
                "internet with `python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\"`")
        metric = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=False, verbose=False)
    return metric.to(resolve_device(models)).eval().requires_grad_(False)
