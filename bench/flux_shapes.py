"""FLUX.1-dev shapes and FLOP counts shared by the benchmarks (no model needed)."""

from __future__ import annotations

HIDDEN, HEADS, HEAD_DIM = 3072, 24, 128
DOUBLE, SINGLE = 19, 38
TEXT_TOKENS = 512
H100_BF16_DENSE_TFLOPS = 989.0


def tokens(side: int) -> int:
    return (side // 16) ** 2


def forward_flop(side: int, batch: int = 1, text: int = TEXT_TOKENS) -> float:
    """One transformer forward: every block does 24·D² FLOPs per token in linear layers (double
    blocks: each stream with its own weights; single blocks: qkv + 4D MLP + fused out) plus
    4·S²·D in attention (Q·Kᵀ and P·V)."""
    seq = tokens(side) + text
    linear = (DOUBLE + SINGLE) * 24 * HIDDEN**2 * seq
    attention = (DOUBLE + SINGLE) * 4 * seq**2 * HIDDEN
    return batch * float(linear + attention)


def value_cache_bytes(side: int, layers: int, steps: int, batch: int = 1, bytes_per: int = 2,
                      text: int = TEXT_TOKENS) -> int:
    return layers * steps * batch * (tokens(side) + text) * HEADS * HEAD_DIM * bytes_per
