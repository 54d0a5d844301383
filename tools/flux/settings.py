"""The engine's settings: the inversion and denoising schedule and where positions and values are injected."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tools.settings import Strict, ToolName


class LayerRange(Strict):
    """Blocks [start, stop) in the frame of a model with ``of`` blocks, rescaled to the real count.

    The paper's schedule is written for FLUX.1-dev (19 double, 38 single blocks); a tiny model
    with 4 single blocks maps single blocks 0-18 of 38 to 0-1 and 20-37 of 38 to 2-3.
    """

    start: int = Field(0, ge=0)
    stop: int = Field(..., ge=0)
    of: int = Field(..., ge=1)

    def resolve(self, num_blocks: int) -> range:
        lo = round(self.start * num_blocks / self.of)
        hi = round(self.stop * num_blocks / self.of)
        return range(min(lo, num_blocks), min(max(hi, lo), num_blocks))


class InjectionConfig(Strict):
    num_steps: int = Field(25, ge=1)
    solver: Literal["euler", "fireflow"] = "euler"
    guidance_invert: float = 1.0
    guidance_denoise: float = 5.0
    pe_steps: dict[ToolName, int] = Field(
        default_factory=lambda: {"add": 25, "remove": 25, "distort": 15, "fuse": 15},
        description="denoising steps with positional (RoPE) injection, per tool",
    )
    pe_double_blocks: LayerRange = LayerRange(start=0, stop=19, of=19)
    pe_single_blocks: LayerRange = LayerRange(start=0, stop=19, of=38)
    value_single_blocks: LayerRange = LayerRange(start=20, stop=38, of=38)
    value_steps: int = Field(15, ge=0, description="denoising steps with value injection")
    cached_value_rows: Literal["background", "all"] = Field(
        "background", description="rows that take their cached V in value layers before targets read their "
        "reference's: 'background' = image tokens that are not targets (the authors': text keeps its live V, "
        "a target whose reference is a target takes its live V), 'all' = every token")
    value_after_pe: Literal["own", "reference"] = Field(
        "own", description="what a target reads in value layers once its positional steps have ended: 'own' its "
        "own cached V (the authors': it leaves the injected set), 'reference' its reference's until value_steps end")
    time_shift: bool = Field(True, description="resolution-dependent time shift of the schedule (off for schnell)")
    dilation_cells: int = Field(1, ge=0, description="dilation of target cells for the change mask")
    latent_paste: bool = Field(True, description="paste inverted latents outside the change mask every step")
    cache_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where cached values live")
    pin_memory: bool = True
    max_sequence_length: int = Field(512, ge=1, description="T5 tokens of the prompt")
