"""The factory: CLI, typed config, the Ray Data job, sources, the model registry and the preview."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flawforge")  # pyproject.toml's version, from the installed distribution
except PackageNotFoundError:  # a source tree that was never installed (``pip install -e .``)
    __version__ = "0+unknown"
