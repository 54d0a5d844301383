"""The factory: CLI, typed config, the Ray Data job, sources, the model registry and the preview."""

import os
from importlib.metadata import PackageNotFoundError, version

# Every factory process (driver and Ray workers) tokenizes from one thread per actor: keep Hugging
# Face tokenizers from spawning their own pool, and from warning about it after Ray forks.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:
    __version__ = version("flawforge")  # pyproject.toml's version, from the installed distribution
except PackageNotFoundError:  # a source tree that was never installed (``pip install -e .``)
    __version__ = "0+unknown"
