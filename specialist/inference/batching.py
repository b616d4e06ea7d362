"""Token rows of different lengths → one batch, padded on the left; and how many leading tokens
rows share (a prompt start read once: the held-out loss's shared pass, llama.cpp's prompt cache)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def common_start(rows: Sequence[Sequence[int]], cap: int | None = None) -> int:
    """How many tokens all `rows` begin with (at most `cap`)."""
    n = min(map(len, rows)) if cap is None else min(cap, *map(len, rows))
    first = rows[0]
    for k in range(max(n, 0)):
        if any(r[k] != first[k] for r in rows[1:]):
            return k
    return max(n, 0)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), every row right-aligned: each row's last token sits in the
    last column, where generation continues and where a completion's logits are read."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask
