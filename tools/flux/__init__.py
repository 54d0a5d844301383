"""The engine that applies a mapping to a photo: FLUX inversion + RoPE/value injection."""

from tools.flux.engine import EngineResult, FluxEngine, PreparedState
from tools.flux.processor import InjectionProcessor, InjectionState

__all__ = ["EngineResult", "FluxEngine", "InjectionProcessor", "InjectionState", "PreparedState"]
