"""Log-probabilities of tokens under the model: what /v1/completions' `logprobs` and `echo` and
/v1/chat/completions' `logprobs`/`top_logprobs` report, and what evaluation harnesses score.

Convention (vLLM's default, OpenAI's meaning): a token's log-probability is the log-softmax of
the model's raw logits at that position, before temperature and top-p. Sampling settings change
which token is picked, never the numbers reported for it, so a loglikelihood does not depend on
the temperature a request happened to send."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

MAX_TOP_LOGPROBS = 20  # the most alternatives one position may list (vLLM's default limit, OpenAI's chat limit)


@dataclass(frozen=True)
class TokenLogprob:
    """One token of a sequence: its id, its log-probability, and the `top` most likely tokens
    at its position as (id, log-probability), most likely first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def score_positions(logits: torch.Tensor, targets: torch.Tensor, top: int) -> list[TokenLogprob]:
    """logits (n, vocab) at n positions, targets (n,) the tokens that follow them → one
    TokenLogprob each, computed in float32 whatever the model's dtype."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(-1, targets.view(-1, 1)).squeeze(-1).tolist()
    if top > 0:
        values, ids = logprobs.topk(top, dim=-1)
        tops = [tuple(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]
    else:
        tops = [()] * len(chosen)
    return [TokenLogprob(int(t), lp, tp) for t, lp, tp in zip(targets.tolist(), chosen, tops)]


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 byte values (GPT-2's table), reversed."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes)}


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_text(tokenizer: Any, token: int) -> str:
    """A token as text, special tokens included (a part of a UTF-8 character decodes to U+FFFD)."""
    return tokenizer.decode([token], skip_special_tokens=False)


def token_bytes(tokenizer: Any, token: int) -> list[int]:
    """The UTF-8 bytes a token stands for (OpenAI's `bytes`): exact also for a token that holds
    only part of a character, where its text is U+FFFD — SentencePiece's <0xNN> byte tokens and
    byte-level BPE's pieces are mapped back to their bytes."""
    text = token_text(tokenizer, token)
    if "\ufffd" not in text:
        return list(text.encode("utf-8"))
    piece = tokenizer.convert_ids_to_tokens(token)
    if isinstance(piece, str):
        if m := _BYTE_TOKEN.fullmatch(piece):
            return [int(m.group(1), 16)]
        table = _byte_decoder()
        if piece and all(ch in table for ch in piece):
            return [table[ch] for ch in piece]
    return list(text.encode("utf-8"))
