"""A specialist-sized output head: logits only over the tokens this specialist can need.

Gemma 3's output head projects onto 262,144 tokens: on a CPU without native bf16 it reads
671 MB of fp32 weights per generated token and is most of the work per trained completion
token. A coffee-shop specialist writes Polish, digits and punctuation. Its kept vocabulary
(`kept_token_ids`) is:

- every token of its training examples as they are rendered (prompts with their retrieved
  passages, completions, the chat template's turn tokens) and of its knowledge base;
- every token made of digits, punctuation, symbols and whitespace only;
- every token of up to SPELLING_LETTERS letters of the alphabet those texts use (their script
  and language's letters, the diacritics included): any word of that language, a customer's
  name for one, can still be written, in a few pieces;
- the tokenizer's special tokens and its byte-fallback tokens.

The input embedding stays whole: a customer may type anything. `KeptHead` replaces the model's
output head with one that projects onto the kept rows only. In training it returns the kept
logits (the loss maps each target into them: `kept_targets`; one more logit estimates
the other tokens' share, so training still pushes them down); in generation it returns logits
over the whole vocabulary with -inf outside the kept set, so `generate`, the logits processors
and the reported logprobs see ordinary token ids. A run's set is its vocabulary.json: generation
always uses it, training does with `output_head: kept` (TrainConfig), so the two agree.
`whole_vocabulary` turns it off for a block: the base model's own answers in eval, the scoring of
prompt tokens and held-out losses use the full head."""

from __future__ import annotations

import contextlib
import math
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from specialist.errors import SpecialistError

SPELLING_LETTERS = 3
# Training over the kept set alone never pushes the other tokens down, so the full head's
# held-out loss drifts up (+1.8% on the coffee run). One extra logit estimates the rest's
# softmax mass from this many rows drawn uniformly (without replacement) per step: sampled
# softmax (Jean et al. 2015), at a seventh of the full head's cost for Gemma 3.
REST_SAMPLES = 8192
REPLACEMENT = "\ufffd"  # what a piece holding part of a character's UTF-8 bytes decodes to


def _no_letters(text: str) -> bool:
    """Digits, punctuation, symbols, whitespace: nothing of any language's words."""
    return all(unicodedata.category(c)[0] in "NPSZ" or c in "\n\t\r" for c in text)


def _spells_bytes(piece: str, surface: str) -> bool:
    """A piece that writes raw bytes: SentencePiece's byte fallback (<0x41>) or a byte-level
    BPE's piece of a character's bytes (" Ä" starts " ą"). With them any character at all can
    still be written."""
    word = surface.strip()
    return (len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")) or (
        0 < len(word) <= SPELLING_LETTERS and word == REPLACEMENT * len(word))


def token_surfaces(tokenizer: Any, size: int) -> list[str]:
    """The text each token id writes alone, as `tokenizer.batch_decode` gives it. A fast
    tokenizer that does not clean up spaces decodes the same in its Rust backend, in parallel
    and without a Python call per id (Gemma 3's 262k tokens: 0.6 s instead of 2.3 s)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    ids = [[i] for i in range(size)]
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return backend.decode_batch(ids, skip_special_tokens=False)
    return tokenizer.batch_decode(ids)


def kept_token_ids(tokenizer: Any, token_lists: Iterable[Iterable[int]], texts: Iterable[str] = ()) -> list[int]:
    """The sorted kept vocabulary for the examples already tokenized (`token_lists`, e.g. the
    training features' input_ids) and other `texts` the specialist answers from (its knowledge
    base). See the module's docstring for what is kept and why."""
    kept: set[int] = set()
    letters: set[str] = set()
    for ids in token_lists:
        ids = list(ids)
        kept.update(ids)
        letters.update(c for c in tokenizer.decode(ids, skip_special_tokens=True) if c.isalpha())
    for text in texts:
        kept.update(tokenizer(text, add_special_tokens=False)["input_ids"])
        letters.update(c for c in text if c.isalpha())
    kept.update(tokenizer.all_special_ids)
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    surfaces = token_surfaces(tokenizer, size)
    for i, (piece, surface) in enumerate(zip(pieces, surfaces)):
        if piece is None or not surface:
            continue
        word = surface.strip()
        if (_spells_bytes(piece, surface) or (REPLACEMENT not in surface and _no_letters(surface))
                or (word and len(word) <= SPELLING_LETTERS and all(c in letters for c in word))):
            kept.add(i)
    return sorted(i for i in kept if 0 <= i < size)


class KeptHead(torch.nn.Module):
    """The output head over the kept token ids only. `head` is the model's own output head (its
    weights, tied to the input embedding or not, stay where they are: training gradients reach
    them through the selected rows). `vocab_logits`: return logits over the whole vocabulary
    (-inf outside the kept set) instead of the kept logits. `rest_samples` > 0: in training mode
    the kept logits get one more column, the sampled estimate of the rest's mass (REST_SAMPLES)."""

    def __init__(self, head: torch.nn.Module, kept: Iterable[int], vocab_size: int, vocab_logits: bool,
                 rest_samples: int = 0) -> None:
        super().__init__()
        self.head = head
        kept_ids = torch.tensor(sorted(set(kept)), dtype=torch.long)
        if kept_ids.numel() == 0 or int(kept_ids[-1]) >= vocab_size:
            raise ValueError(f"kept token ids must lie in 0..{vocab_size - 1}")
        position = torch.full((vocab_size,), -1, dtype=torch.long)
        position[kept_ids] = torch.arange(kept_ids.numel())
        self.register_buffer("kept", kept_ids, persistent=False)
        self.register_buffer("position", position, persistent=False)
        self.rest_samples = min(rest_samples, vocab_size - kept_ids.numel())
        # the ids outside the set, to draw from; only a training head with the rest logit needs them
        rest = (position == -1).nonzero().squeeze(-1) if self.rest_samples > 0 else position[:0]
        self.register_buffer("rest", rest, persistent=False)
        self.vocab_size = vocab_size
        self.vocab_logits = vocab_logits
        self.active = True
        self.rows: torch.nn.Linear | None = None  # frozen kept rows for generation (materialize)

    @property
    def weight(self) -> Any:
        return self.head.weight  # the whole head's, as callers of get_output_embeddings expect

    @property
    def bias(self) -> Any:
        return getattr(self.head, "bias", None)

    def materialize(self) -> None:
        """Copy the kept rows into a Linear of their own: generation then reads only them
        (and int8 quantization finds a Linear to quantize). For frozen weights only."""
        weight = self.head.weight
        bias = self.bias
        rows = torch.nn.Linear(weight.shape[1], self.kept.numel(), bias=bias is not None,
                               device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            rows.weight.copy_(weight.index_select(0, self.kept))
            if bias is not None:
                rows.bias.copy_(bias.index_select(0, self.kept))
        rows.requires_grad_(False)
        self.rows = rows

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return self.head(hidden)
        logits = self.rows(hidden) if self.rows is not None else self._project(hidden, self.kept)
        if not self.vocab_logits:
            if self.training and self.rest_samples > 0:
                logits = torch.cat([logits, self._rest_logit(hidden).to(logits.dtype)], dim=-1)
            return logits
        out = logits.new_full((*logits.shape[:-1], self.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.kept, logits)

    def _project(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The head's logits for the token ids `ids` only (their rows, read from the whole head)."""
        bias = self.bias
        return F.linear(hidden, self.head.weight.index_select(0, ids),
                        None if bias is None else bias.index_select(0, ids))

    def _rest_logit(self, hidden: torch.Tensor) -> torch.Tensor:
        """log of the estimated sum of exp(logit) over the tokens outside the kept set: an extra
        column no target points at, so the cross-entropy's normaliser counts the rest's mass."""
        n = self.rest.numel()
        drawn = self.rest[torch.randperm(n, device=self.rest.device)[:self.rest_samples]]
        sampled = self._project(hidden, drawn)
        return torch.logsumexp(sampled.float(), dim=-1, keepdim=True) + math.log(n / self.rest_samples)


def kept_head(model: Any) -> KeptHead | None:
    """The model's KeptHead, through DDP's and PEFT's wrappers; None when it has the full head."""
    while not hasattr(model, "get_output_embeddings") and hasattr(model, "module"):
        model = model.module  # DistributedDataParallel
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, KeptHead) else None


def use_kept_head(model: Any, kept: Iterable[int], vocab_logits: bool, frozen: bool = False,
                  rest_samples: int = 0) -> KeptHead:
    """Swap `model`'s output head (a transformers model or a PEFT model around one) for a
    KeptHead over `kept`; `frozen` copies the rows for generation; `rest_samples` > 0 adds, in
    training mode, the sampled logit of the tokens outside the set (REST_SAMPLES). Call it after PEFT wrapped
    the model: LoRA's all-linear would otherwise take the head's rows for a layer to adapt."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    if isinstance(head, KeptHead):
        head = head.head
    vocab_size = int(head.weight.shape[0])
    new = KeptHead(head, kept, vocab_size, vocab_logits, rest_samples)
    if frozen:
        new.materialize()
    base.set_output_embeddings(new)
    return new


def kept_targets(model: Any, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Target token ids → positions in the kept logits (unchanged without a KeptHead in kept
    mode). A target outside the kept set has no logit: the set is built from every example the
    run trains and evaluates on, so only data changed under a resumed run can bring one, and
    that is an error, not a token to skip."""
    head = kept_head(model)
    if head is None or head.vocab_logits or not head.active:
        return targets
    mapped = torch.where(targets == ignore_index, targets, head.position[targets.clamp(min=0)])
    if bool((mapped == -1).any()):
        token = int(targets[mapped == -1][0])
        raise SpecialistError(f"training token {token} lies outside the run's kept vocabulary (vocabulary.json): "
                              "its data changed since the run started; resume with the data it started with, "
                              "or start a new run")
    return mapped


@contextlib.contextmanager
def whole_vocabulary(model: Any) -> Iterator[None]:
    """The block runs with the model's full output head (no-op without a KeptHead)."""
    head = kept_head(model)
    if head is None:
        yield
        return
    was, head.active = head.active, False
    try:
        yield
    finally:
        head.active = was
