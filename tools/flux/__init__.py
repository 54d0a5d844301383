"""The engine that applies a mapping to a photo: FLUX inversion + RoPE/value injection."""

from tools.flux.engine import FluxEngine
from tools.flux.processor import InjectionProcessor, InjectionState
from tools.flux.state import EngineResult, PreparedState

__all__ = ["EngineResult", "FluxEngine", "InjectionProcessor", "InjectionState", "PreparedState"]
