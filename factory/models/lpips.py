"""LPIPS (AlexNet) for curation's distortion window, run in ``models.dtype``.

The linear heads are always the ones shipped inside the ``lpips`` package (nothing is downloaded).
``tiny``: a randomly initialised AlexNet (fixed seed). ``pretrained``: ``models.lpips.path: alex``
reads torchvision's ImageNet AlexNet weights from the torch hub cache; any other path is a local
file, or a folder holding one, with torchvision AlexNet weights (``features.*`` keys; the
classifier is not used): ``*.safetensors`` preferred, else a ``torch.save``d state dict read with
``weights_only=True``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from factory.config import ModelsConfig
from factory.models.common import ModelNotFoundError, resolve_device, resolve_dtype

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
HUB_CACHE_PATH = "alex"  # models.lpips.path naming torchvision's weights in the torch hub cache
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")  # preference order inside a folder


def load_lpips(models: ModelsConfig):
    spec = models.lpips
    if spec.kind == "tiny":
        from factory.models.tiny.lpips import tiny_lpips

        metric = tiny_lpips(models.seed)
    elif spec.path == HUB_CACHE_PATH:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
        if not cached.is_file():
            raise ModelNotFoundError(
                "LPIPS", "alexnet",
                f"torchvision's AlexNet weights are not in {cached.parent}; fetch them once on a machine with "
                "internet with `python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\"`")
        metric = alex_lpips(pnet_rand=False)
    else:
        path = Path(spec.path or "")
        metric = alex_lpips(pnet_rand=True)
        try:
            set_alexnet_features(metric.net, read_alexnet_weights(path))
        except ValueError as err:
            raise ModelNotFoundError("LPIPS", str(path), str(err)) from err
    return metric.to(resolve_device(models), resolve_dtype(models)).eval().requires_grad_(False)


def alex_lpips(pnet_rand: bool):
    """``lpips.LPIPS`` on AlexNet with the package's linear heads; ``pnet_rand``: AlexNet left random
    (else torchvision's ImageNet weights from the hub cache). The package still calls torchvision with
    the deprecated ``pretrained=`` argument: those two warnings are its, not ours, and are silenced."""
    import lpips

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision.models._utils")
        return lpips.LPIPS(net="alex", pretrained=True, pnet_rand=pnet_rand, verbose=False)


def alexnet_weights_file(path: Path) -> Path:
    """``path`` itself, or the first weights file in the folder ``path`` by ``WEIGHT_SUFFIXES`` order."""
    if path.is_file():
        return path
    if path.is_dir():
        for suffix in WEIGHT_SUFFIXES:
            found = sorted(path.glob(f"*{suffix}"))
            if found:
                return found[0]
        raise ModelNotFoundError("LPIPS", str(path), f"no {' / '.join(WEIGHT_SUFFIXES)} file in the folder")
    raise ModelNotFoundError("LPIPS", str(path), "no such file or folder")


def read_alexnet_weights(path: Path) -> dict[str, torch.Tensor]:
    file = alexnet_weights_file(path)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)


def alexnet_features(net) -> dict[str, torch.Tensor]:
    """lpips' sliced AlexNet (``slice{k}.{i}.*``) as torchvision ``features.{i}.*`` weights."""
    return {f"features.{index}.{name}": tensor.detach().clone()
            for block in net.children() for index, layer in block.named_children()
            for name, tensor in layer.state_dict().items()}


def set_alexnet_features(net, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision AlexNet ``features.{i}.*`` weights into lpips' sliced AlexNet."""
    for key, tensor in alexnet_features(net).items():
        if key not in state or state[key].shape != tensor.shape:
            raise ValueError(f"AlexNet weight {key} of shape {tuple(tensor.shape)} is missing or has another shape")
    with torch.no_grad():
        for block in net.children():
            for index, layer in block.named_children():
                for name, tensor in layer.state_dict().items():
                    tensor.copy_(state[f"features.{index}.{name}"])
