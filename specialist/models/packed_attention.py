"""Attention over a padding-free batch, each example on its own.

A padding-free batch is one row holding several examples, told apart by position_ids that
restart at 0. transformers' sdpa path turns that row into a (tokens × tokens) block-diagonal
mask and computes attention over the whole square, masked: with eight examples in a row that
is eight times the work of each example attending to itself, and a mask to build and read on
top. With a knowledge base every prompt carries passages (eight examples of ~400 tokens make a
3,200-token row), so that square is most of a training step. Here each example attends to
itself through the causal kernel, without a mask, the way flash-attention's varlen kernels do
on GPUs; the model registers it under `NAME` and is loaded with `attn_implementation=NAME`.

Anything that is not an unmasked full-length pass (a padding mask, decoding over a cache) goes
to transformers' own sdpa unchanged. tests/test_packed_attention.py checks the loss and the
gradients against transformers' masked sdpa."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F

NAME = "sdpa_packed"


def segments(position_ids: torch.Tensor | None, length: int) -> list[tuple[int, int]]:
    """[(start, end)] of the examples in one row: a new example starts wherever the position
    does not follow the previous one (transformers' own rule for packed rows)."""
    if position_ids is None:
        return [(0, length)]
    starts = (torch.nonzero(position_ids[1:] - position_ids[:-1] != 1).flatten() + 1).tolist()
    bounds = [0, *starts, length]
    return list(pairwise(bounds))


def _causal_window_mask(length: int, window: int, device: torch.device) -> torch.Tensor:
    """True where a query may attend: earlier or itself, and fewer than `window` tokens back
    (transformers' sliding_window_overlay)."""
    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    return (k <= q) & (q - k < window)


def packed_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        sliding_window: int | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (batch, heads, q_len, dim), key and
    value (batch, kv_heads, kv_len, dim); returns (batch, q_len, heads, dim)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len = query.shape[2]
    if attention_mask is not None or q_len != key.shape[2] or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    position_ids = kwargs.get("position_ids")
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    rows = []
    for b in range(query.shape[0]):
        row_positions = None if position_ids is None else position_ids[min(b, position_ids.shape[0] - 1)]
        pieces = []
        for start, end in segments(row_positions, q_len):
            q, k, v = (t[b:b + 1, :, start:end] for t in (query, key, value))
            if sliding_window is not None and end - start > sliding_window:
                mask = _causal_window_mask(end - start, sliding_window, query.device)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scaling,
                                                     enable_gqa=gqa)
            else:
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, scale=scaling,
                                                     enable_gqa=gqa)
            pieces.append(out)
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def packed_mask(batch_size: int, q_length: int, kv_length: int, q_offset: Any = 0, kv_offset: int = 0,
                attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
    """No mask for a full-length pass without padding (the attention finds the examples from
    position_ids); transformers' sdpa mask for everything else."""
    from transformers.masking_utils import sdpa_mask

    first_pass = not isinstance(q_offset, torch.Tensor) and q_offset == 0 and kv_offset == 0
    if attention_mask is None and first_pass and q_length == kv_length:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def register() -> str:
    """Make `NAME` an attn_implementation transformers can load a model with; returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, packed_mask)
    return NAME
