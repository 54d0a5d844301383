"""Processor outputs as model inputs: every tensor on the model's device, floating ones in its dtype.

Processors return float32 pixels (and boxes); a model loaded in ``models.dtype`` (bf16 on the real
presets) needs them in that dtype. Integer tensors (token ids, masks, sizes) keep their dtype.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from transformers import PreTrainedModel


def model_inputs(inputs: Mapping[str, Any], model: PreTrainedModel) -> dict[str, Any]:
    """``inputs`` with tensors moved to ``model``'s device and floating tensors cast to its dtype."""
    device, dtype = model.device, model.dtype

    def move(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        return value.to(device, dtype) if value.is_floating_point() else value.to(device)

    return {key: move(value) for key, value in inputs.items()}
