"""Grounded numbers: an answer may state only numbers that its prompt holds.

A small model that reads a shipping price in its context still writes a different one now and
then ("14,49 zł" for "14,99 zł"), and one asked something its context does not answer makes a
figure up. With a knowledge base the prompt holds the retrieved passages, so a figure that is
in none of the prompt's texts (system prompt, passages, the customer's own words) is invented.
NumberGuard makes that impossible at decoding time: while the answer is writing a number, only
tokens that keep it a prefix of one of the prompt's numbers are allowed, and the number may end
only where it equals one of them. Everything else about the answer is left to the model.

Numbers are runs of ASCII digits with inner separators ("14,99", "9:00", "1.5"); "14,99" also allows
"14.99", "14,9"; "9:00" also allows "9". Digits glued to a word ("V60", "H2O") are names, not
quantities, and are left alone, as the unsupported-number metric leaves them
(knowledge.grounding). The guard works on the text of token pieces, so it holds for tokenizers
that split digits one by one (Gemma, Llama 2) as for those with multi-digit tokens (Llama 3).
Log-probabilities stay the model's own (the guard changes the pick, as temperature does)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

NUMBER = re.compile(r"[0-9]+(?:[.,:][0-9]+)*")
SEPARATORS = ".,:"
_SEPARATOR_PIECES = frozenset(SEPARATORS)
# the end of an answer's text that a number in progress occupies: digits with inner separators
# and possibly one separator still waiting for its next digit
_TAIL = re.compile(r"[0-9]+(?:[.,:][0-9]+)*[.,:]?\Z")  # \Z: $ would also match before a final newline
_DIGIT = re.compile(r"[0-9]")
_SPECIAL = re.compile(r"^<[^<>]*>$")  # <unused12>, <start_of_turn>: never pieces of an answer's number


def number_forms(number: str) -> set[str]:
    """A number as the prompt writes it, and the forms an answer may give it in."""
    forms = {number, number.replace(",", "."), number.replace(".", ",")}
    for form in list(forms):
        if form.endswith(":00"):
            forms.add(form[:-3])  # 9:00 → 9
        head, sep, decimals = form.rpartition("," if "," in form else ".")
        if sep and head and decimals.endswith("0") and ":" not in form:
            trimmed = decimals.rstrip("0")
            forms.add(f"{head}{sep}{trimmed}" if trimmed else head)  # 14,90 → 14,9; 1,00 → 1
    return forms


def prompt_numbers(texts: Iterable[str]) -> frozenset[str]:
    """Every number in `texts`, in every form an answer may give it."""
    return frozenset(form for text in texts for m in NUMBER.finditer(text) for form in number_forms(m.group(0)))


class NumberVocab:
    """The tokens that can write part of a number (`pieces`: id → text): pieces with a digit, and
    the bare separators."""

    def __init__(self, pieces: dict[int, str]) -> None:
        self.pieces = pieces

    @classmethod
    def of(cls, tokenizer: Any) -> NumberVocab:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        pieces: dict[int, str] = {}
        raw = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        for token_id, token in enumerate(raw):
            if token is None or token_id in special or _SPECIAL.match(token):
                continue
            if _DIGIT.search(token) or token in _SEPARATOR_PIECES:
                piece = tokenizer.convert_tokens_to_string([token])
                if _DIGIT.search(piece) or piece in _SEPARATOR_PIECES:
                    pieces[token_id] = piece
        return cls(pieces)


@functools.lru_cache(maxsize=8)
def number_vocab(tokenizer: Any) -> NumberVocab:
    """NumberVocab of a tokenizer, built once per tokenizer object (a scan of its vocabulary)."""
    return NumberVocab.of(tokenizer)


class NumberGuard:
    """The numbers one answer may state (`allowed`, every form) and, at each decoding step, the
    tokens that keep it so (`constraint`)."""

    def __init__(self, allowed: frozenset[str], vocab: NumberVocab) -> None:
        self.allowed = allowed
        self.vocab = vocab
        self.prefixes = {n[:i] for n in allowed for i in range(1, len(n) + 1)}
        self._memo: dict[tuple[bool, str], tuple[list[int], list[int], bool]] = {}

    @classmethod
    def for_prompt(cls, tokenizer: Any, prompt_ids: Sequence[int]) -> NumberGuard:
        text = tokenizer.decode(list(prompt_ids), skip_special_tokens=True)
        return cls(prompt_numbers([text]), number_vocab(tokenizer))

    def _fits(self, text: str, glued: bool) -> bool:
        """`text` (a number in progress, or nothing, then a candidate piece) holds only allowed
        numbers: closed ones whole, the one still open at its end as a prefix of an allowed
        number. `glued`: the text follows a letter, so a number at its very start is a name."""
        for m in NUMBER.finditer(text):
            before = text[m.start() - 1] if m.start() > 0 else ("a" if glued else "")
            if before.isalpha():  # V60: a name
                continue
            rest = text[m.end():]
            number = m.group(0)
            if not rest:  # still open
                if number not in self.prefixes:
                    return False
            elif rest[0] in SEPARATORS and len(rest) == 1:  # "14," : a decimal to come, or punctuation
                if number + rest not in self.prefixes and number not in self.allowed:
                    return False
            elif number not in self.allowed:
                return False
        return True

    def constraint(self, text: str) -> tuple[list[int], list[int], bool] | None:
        """For an answer whose text so far is `text`: (number pieces allowed next, number pieces
        banned, whether any other token may come next). None: no constraint (a dead end the
        model got into before the guard, with no way out that fits)."""
        m = _TAIL.search(text)
        tail = m.group(0) if m else ""
        start = m.start() if m else len(text)
        glued = start > 0 and text[start - 1].isalpha()  # V60, or a piece that may glue digits to V
        key = (glued, tail)
        if key not in self._memo:
            ok, banned = [], []
            for tid, piece in self.vocab.pieces.items():
                (ok if self._fits(tail + piece, glued) else banned).append(tid)
            # a number in progress may end (any other token) only where it is whole: "14" or
            # "14," (the comma then punctuation) when 14 is allowed, not when only 14,99 is
            others = not tail or glued or tail.rstrip(SEPARATORS) in self.allowed
            self._memo[key] = (ok, banned, others)
        ok, banned, others = self._memo[key]
        if not ok and not others:
            return None
        return ok, banned, others

    def apply(self, text: str, scores: Any) -> None:
        """Mask one row's logits (a torch tensor or numpy array, the vocabulary wide) in place."""
        rule = self.constraint(text)
        if rule is None:
            return
        ok, banned, others = rule
        if others:
            if banned:
                scores[banned] = float("-inf")
            return
        kept = scores[ok].clone() if hasattr(scores, "clone") else scores[ok].copy()
        scores[:] = float("-inf")
        scores[ok] = kept
