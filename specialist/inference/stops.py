"""When an answer ends, and which of its text may go out already.

Every engine feeds each row's tokens to a RowDecoder, one at a time: it decodes them
incrementally, cuts the text at the first stop string, finishes the row on an end-of-turn
token, on its token budget or when the reader cancels, and hands out text pieces only once
they are final (never half a stop string, never half a UTF-8 character)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

from specialist.inference.logprobs import TokenLogprob, score_positions
from specialist.inference.numbers import NumberGuard


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _partial_stop_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string; that
    much is held back so a stop string is never half-streamed to the client."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if s.startswith(text[-n:]):
                best = n
                break
    return best


class RowDecoder:
    """Follows one row of a batch: collects its tokens, decodes them incrementally and decides
    when the row is finished. `on_piece` receives each new piece of text as it becomes final.

    `logprobs` (the number of alternatives to list, 0 for none) asks the engine to score every
    token the row takes, end-of-turn included, into `scores`; `prompt_logprobs` asks it to score
    the prompt's tokens into `prompt_scores` (None for the first, which nothing predicts). A row
    with max_new_tokens 0 is finished from the start: only its prompt is scored."""

    def __init__(self, tokenizer, eos_ids: Sequence[int], stops: Sequence[str], max_new_tokens: int,
                 prompt_tokens: int, on_piece: Callable[[str], None] | None = None,
                 logprobs: int | None = None, prompt_logprobs: int | None = None,
                 guard: NumberGuard | None = None, contrast: Sequence[int] | None = None,
                 contrast_alpha: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.guard = guard  # the numbers this answer may state (inference/numbers.py), or None
        # context-aware decoding (contrast.py): the prompt without its context, and how strongly;
        # the row's own, since a server batch may mix specialists and requests with and without it
        self.contrast = contrast if contrast_alpha > 0 else None
        self.contrast_alpha = contrast_alpha
        self.eos_ids = set(eos_ids)
        self.stops = [s for s in stops if s]
        self.max_new_tokens = max_new_tokens
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0  # of them, read for an earlier request and taken from the engine's cache
        self.on_piece = on_piece
        self.tokens: list[int] = []
        self.completion_tokens = 0
        self.text = ""  # the answer so far, cut at a stop string
        self.lead = ""  # the whitespace the answer began with, cut off its text (an echo puts it back)
        self.emitted = 0  # how much of self.text went out through on_piece
        self.finish_reason: str | None = "length" if max_new_tokens <= 0 else None
        self.cancelled = threading.Event()
        self.logprobs = logprobs
        self.prompt_logprobs = prompt_logprobs
        self.scores: list[TokenLogprob] = []
        self.prompt_scores: list[TokenLogprob | None] | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int, scored: TokenLogprob | None = None) -> None:
        """Take the row's next token; `scored` is its log-probability, when the row asked for them."""
        if self.done:
            return
        if self.cancelled.is_set():
            self.finish_reason = "cancelled"
            return
        self.completion_tokens += 1
        if scored is not None and self.logprobs is not None:
            self.scores.append(scored)
        if token in self.eos_ids:
            self.finish("stop")
            return
        self.tokens.append(token)
        full = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        text = full.lstrip()
        self.lead = full[:len(full) - len(text)]
        text, hit = _cut_at_stop(text, self.stops)
        self.text = text
        if hit:
            self.finish("stop")
        elif len(self.tokens) >= self.max_new_tokens:
            self.finish("length")
        else:
            # hold back an incomplete UTF-8 character (byte tokens), a possible stop string's start
            # and the whitespace before them (cut if the answer ends there)
            safe = len(text.rstrip("\ufffd"))
            safe -= _partial_stop_len(text[:safe], self.stops)
            self._emit(len(text[:safe].rstrip()))

    def finish(self, reason: str) -> None:
        """End the row ("stop" or "length"), e.g. when the engine's context is full, and hand
        out the rest of its text."""
        self.text = self.text.rstrip()
        self.finish_reason = reason
        self._emit(len(self.text))

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            piece = self.text[self.emitted:upto]
            self.emitted = upto
            if self.on_piece is not None:
                self.on_piece(piece)


class GuardRows:
    """A transformers logits processor: each row with a NumberGuard gets its logits masked by it,
    from the row's text so far (RowDecoder has taken every token before this step)."""

    def __init__(self, rows: Sequence[RowDecoder]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for i, row in enumerate(self.rows):
            if row.guard is not None and not row.done:
                row.guard.apply(row.text, scores[i])
        return scores


def wants_logprobs(rows: Sequence[RowDecoder]) -> bool:
    return any(row.logprobs is not None for row in rows)


class StepLogits:
    """A forward hook on the model that keeps the last position's logits of its latest forward
    pass: during `generate`, the step being decoded, as the model gave them, before anything
    transformers' logits processors do (penalties from the model's generation config,
    temperature, top-p). See inference/logprobs.py."""

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None
        self.paused = False  # set around forward passes that are not decoding steps (contrast.py)

    def __call__(self, module, args, output) -> None:
        if self.paused:
            return
        logits = output.logits if hasattr(output, "logits") else output[0]
        self.logits = logits[:, -1, :].detach().clone()


class FollowRows:
    """A transformers stopping criterion: after every decoding step it feeds each row's new
    token to that row's RowDecoder and reports which rows are finished. With `step` (a
    StepLogits hooked on the model), rows that asked for log-probabilities get their token
    scored from the logits of the step that picked it."""

    def __init__(self, rows: Sequence[RowDecoder], step: StepLogits | None = None) -> None:
        self.rows = rows
        self.step = step

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1]
        scored: dict[int, TokenLogprob] = {}
        if self.step is not None and self.step.logits is not None:
            want = [i for i, row in enumerate(self.rows) if row.logprobs is not None and not row.done]
            if want:
                top = max(self.rows[i].logprobs for i in want)
                for i, s in zip(want, score_positions(self.step.logits[want], last[want], top)):
                    scored[i] = TokenLogprob(s.token, s.logprob, s.top[:self.rows[i].logprobs])
        for i, (row, token) in enumerate(zip(self.rows, last.tolist())):
            row.push(token, scored.get(i))
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)
