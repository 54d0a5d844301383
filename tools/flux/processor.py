"""The attention processor that injects positions and values (no fork of the FLUX model).

One ``InjectionProcessor`` per attention layer, all sharing one ``InjectionState`` that the engine
updates in place before every transformer call. Everything that changes per step is a tensor, and
which layers inject is fixed per processor at install time, so ``torch.compile`` traces the
denoising loop once. With the state's gates closed the processor computes exactly what diffusers'
``FluxAttnProcessor`` computes.

* positional injection (layers in the PE set): queries and keys are rotated with per-sample RoPE
  tables in which a target token's row is its reference token's row;
* value caching (value layers, inversion): V of every token is written to the value cache slot
  the state names (a scratch slot when the step is not cached);
* value injection (value layers, denoising): the rows the state names (by default the image
  tokens that are not targets, as the method's authors: text keeps its live V) take their cached
  V of the paired inversion step; then every target token takes the V its reference token has at
  that point — cached for a background reference, live for a reference that is itself a target
  (a distortion's permuted cells); gated per sample. A target whose positional steps have ended is
  back in the background: its own cached V (``release_ended_targets``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb


@dataclass
class InjectionState:
    """Per-call inputs of the processors; tensors updated in place by the engine."""

    cos_pe: torch.Tensor  # (B, S, D): RoPE with reference rows written into target rows (or stock)
    sin_pe: torch.Tensor
    value_index: torch.Tensor  # (B, S) long: the token whose V each token takes (itself, or its reference)
    cached_rows: torch.Tensor  # (B, S, 1, 1) bool: rows replaced by their cached V before targets read
    value_gate: torch.Tensor  # (B, 1, 1, 1) float: 1 while a sample injects values, else 0
    write_slot: torch.Tensor  # () long: cache slot to write this call (the scratch slot if none)
    read_slot: torch.Tensor  # () long: cache slot to read this call
    cache: list[torch.Tensor]  # per value layer (slots + 1, B, S, H, D); one tensor each so that
    # in-place slot writes stay in place under torch.compile (a view of one big buffer gets copied)


def release_ended_targets(state: InjectionState, injected_index: torch.Tensor, injected_cached: torch.Tensor,
                          ended: torch.Tensor) -> None:
    """Targets whose positional steps have ended (``ended``, (B, S) bool) leave the injected set, as in
    the authors' model: they read their own cached V like the background, not their reference's.
    In place, so compiled processors see it."""
    own = torch.arange(ended.shape[1], device=ended.device).expand_as(ended)
    state.value_index.copy_(torch.where(ended, own, injected_index))
    state.cached_rows.copy_(injected_cached | ended[:, :, None, None])


def qkv_projections(attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None):
    """The image (and, in a double block, text) query, key and value projections of a FLUX attention
    block, fused (``to_qkv`` after ``fuse_projections``) or not; the text ones are None in single blocks."""
    if attn.fused_projections:
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        text = (attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
                if encoder_hidden_states is not None and hasattr(attn, "to_added_qkv") else (None, None, None))
        return query, key, value, *text
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    if encoder_hidden_states is None or attn.added_kv_proj_dim is None:
        return query, key, value, None, None, None
    return (query, key, value, attn.add_q_proj(encoder_hidden_states), attn.add_k_proj(encoder_hidden_states),
            attn.add_v_proj(encoder_hidden_states))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """diffusers' real-valued RoPE (``use_real_unbind_dim=-1``) with per-sample tables (B, S, D)."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    x_rotated = torch.stack([-x_imag, x_real], dim=-1).flatten(3)
    return (x.float() * cos + x_rotated.float() * sin).to(x.dtype)


class InjectionProcessor:
    _attention_backend = None
    _parallel_config = None

    def __init__(self, state: InjectionState | None, positional: bool = False, value_slot: int | None = None):
        self.state = state
        self.positional = positional  # this layer uses the injected RoPE tables
        self.value_slot = value_slot  # this layer's index in the value cache, or None

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None,
                 image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        query, key, value, encoder_query, encoder_key, encoder_value = qkv_projections(
            attn, hidden_states, encoder_hidden_states)
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
            encoder_query = attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim)))
            encoder_key = attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim)))
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([encoder_query, query], dim=1)
            key = torch.cat([encoder_key, key], dim=1)
            value = torch.cat([encoder_value, value], dim=1)

        state = self.state
        if state is not None and self.positional:
            query = rotate(query, state.cos_pe, state.sin_pe)
            key = rotate(key, state.cos_pe, state.sin_pe)
        elif image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if state is not None and self.value_slot is not None and state.cache:
            layer_cache = state.cache[self.value_slot]
            layer_cache.index_copy_(0, state.write_slot.to(layer_cache.device),
                                    value.detach()[None].to(layer_cache.device, layer_cache.dtype,
                                                            non_blocking=True))
            cached = layer_cache.index_select(0, state.read_slot.to(layer_cache.device))[0]
            cached = cached.to(value.device, value.dtype, non_blocking=True)
            replaced = torch.where(state.cached_rows, cached, value)
            index = state.value_index[:, :, None, None].expand(-1, -1, *cached.shape[2:])
            injected = torch.gather(replaced, 1, index)
            value = value + state.value_gate.to(value.dtype) * (injected - value)

        hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask,
                                              backend=self._attention_backend,
                                              parallel_config=self._parallel_config)
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is not None:
            text_len = encoder_hidden_states.shape[1]
            encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                [text_len, hidden_states.shape[1] - text_len], dim=1)
            hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())
            return hidden_states, encoder_hidden_states
        return hidden_states
