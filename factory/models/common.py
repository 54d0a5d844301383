"""What every model loader shares: device/dtype resolution, seeding, and the missing-model error.

Real weights load with ``from_pretrained(path_or_id, local_files_only=...)``; a missing model is a
``ModelNotFoundError`` naming the role, the model and the command that fetches it. Nothing here
ever falls back to a tiny model.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, TypeVar

import torch

from factory.config import ModelSpec, ModelsConfig

T = TypeVar("T")


class ModelNotFoundError(RuntimeError):
    """A real model that is not on disk / in the HF cache; the message says how to fetch it."""

    def __init__(self, role: str, path: str | None, reason: str = ""):
        fetch = f"hf download {path}" if path and "/" in path and not path.startswith(("/", ".")) else None
        msg = f"{role} model {path!r} could not be loaded"
        if reason:
            msg += f": {reason}"
        if fetch:
            msg += f". Fetch it with `{fetch}` (or point models.* .path at a local folder)"
        else:
            msg += ". Point the config's path at a folder holding the checkpoint"
        super().__init__(msg)
        self.role, self.path = role, path


def resolve_device(models: ModelsConfig) -> torch.device:
    if models.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if models.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("models.device is 'cuda' but no CUDA device is visible")
    return torch.device(models.device)


def resolve_dtype(models: ModelsConfig) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[models.dtype]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fix torch's CPU RNG while building a tiny random model, restoring it afterwards."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def load_pretrained(role: str, spec: ModelSpec, loader: Callable[..., T], **kwargs: Any) -> T:
    """Call ``loader(spec.path, ...)`` (a ``from_pretrained``); turn 'not found' into ModelNotFoundError."""
    if spec.kind != "pretrained" or not spec.path:
        raise ValueError(f"{role}: load_pretrained needs a pretrained spec with a path")
    try:
        return loader(spec.path, revision=spec.revision, local_files_only=spec.local_files_only, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ModelNotFoundError(role, spec.path, str(err).splitlines()[0] if str(err) else "") from err
