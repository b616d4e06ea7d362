"""The facts an answer states, and whether a knowledge base backs them.

A fact is a number (with its unit when one follows: 14,99 zł, 24 godzin, 0,1%, 9:00) or a
name (a capitalised word inside a sentence: Kolumbii, Swiss Water, BLIK). Numbers are compared
after normalisation ("14,99" = "14.99", "9:00" = "9"); names by their stemmed, folded term.

Used by training (does a retrieved context hold the answer's facts?), `data check --knowledge`
(W116 a fact the knowledge base contradicts, W117 a fact it lacks) and `eval` (the
unsupported-number rate)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from specialist.knowledge.analyze import Analyzer, fold, words

# unit words (folded) → the kind of quantity; numbers of one kind can contradict each other
_UNITS = {
    "money": r"zl|zlote|zlotych|pln|eur|euro|usd|\$|€",
    "percent": r"%|procent\w*",
    "mass": r"g|kg|gram\w*|kilogram\w*|mg",
    "volume": r"ml|l|litr\w*|mililitr\w*",
    "temperature": r"°c|°|stopni\w*|st\.",
    "seconds": r"s|sek\w*|second\w*",
    "minutes": r"min|minut\w*|minute\w*",
    "hours": r"h|godz\w*|hour\w*",
    "days": r"dni|dzien|dnia|dniach|day\w*",
    "weeks": r"tydz\w*|tygod\w*|week\w*",
    "months": r"mies\w*|month\w*",
    "points": r"pkt|punkt\w*|point\w*",
}
_UNIT_RE = "|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _UNITS.items())
_NUMBER = r"\d+(?:[.,]\d+)?(?::\d\d)?"
_QUANTITY = re.compile(rf"(?<![\w.,])(?P<a>{_NUMBER})(?:\s*(?:-|–|—|do|to)\s*(?P<b>{_NUMBER}))?"
                       rf"(?:\s*(?P<unit>{_UNIT_RE})(?![^\W\d_]))?", re.IGNORECASE)

# Capitalised forms of address and sentence words that are not names (Polish customer service
# capitalises Ty-forms inside sentences).
_NOT_NAMES = {fold(w) for w in """ty ci cie ciebie tobie toba twoj twoja twoje twojego twojej twoim twoja twoich twoimi
    twa twojemu wy was wam wami wasz wasza wasze waszego waszej waszemu waszym waszych waszymi pan pani panstwo
    i a w z o u na do""".split()}


PREFIX = 5  # letters of a name compared when the stems differ


def _prefix(word: str) -> str:
    return fold(word)[:PREFIX]


@dataclass(frozen=True)
class Fact:
    text: str        # as written
    kind: str        # "number" or "name"
    value: str       # normalised number, or the name's term
    unit: str = ""   # quantity kind for numbers ("money", "days", …), "" when none follows


def normalise_number(text: str) -> str:
    value = text.replace(",", ".")
    if ":" in value:  # 9:00 → 9, 9:30 → 9:30
        hours, minutes = value.split(":", 1)
        value = hours if minutes == "00" else f"{hours}:{minutes}"
    if "." in value:  # 14.90 → 14.9, 1.00 → 1
        value = value.rstrip("0").rstrip(".")
    return re.sub(r"^0+(?=\d)", "", value)


def numbers(text: str) -> list[Fact]:
    found: list[Fact] = []
    for m in _QUANTITY.finditer(fold(text)):
        unit = next((kind for kind in _UNITS if m.group(kind)), "") if m.group("unit") else ""
        for part in ("a", "b"):
            if m.group(part):
                found.append(Fact(m.group(0).strip(), "number", normalise_number(m.group(part)), unit))
    return found


_SENTENCE_START = re.compile(r"(?:^|[.!?…:]\s+|[\n„\"(]\s*)$")
_CAPITALISED = re.compile(r"\b[A-ZĄĆĘŁŃÓŚŹŻ][\w’'-]*", re.UNICODE)


def names(text: str, analyzer: Analyzer) -> list[Fact]:
    """Capitalised words that do not start a sentence (a crude but language-neutral name test)."""
    found = []
    for m in _CAPITALISED.finditer(text):
        word = m.group(0)
        if _SENTENCE_START.search(text[: m.start()]) or fold(word) in _NOT_NAMES or len(word) < 3:
            continue
        terms = analyzer.terms(word)
        if terms:
            found.append(Fact(word, "name", terms[0]))
    return found


def facts(text: str, analyzer: Analyzer) -> list[Fact]:
    return numbers(text) + names(text, analyzer)


class FactIndex:
    """The numbers (by unit) and terms of a set of texts, for quick support checks."""

    def __init__(self, texts: Iterable[str], analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.numbers: set[str] = set()
        self.by_unit: dict[str, set[str]] = {}
        self.terms: set[str] = set()
        self.prefixes: set[str] = set()
        for text in texts:
            for f in numbers(text):
                self.numbers.add(f.value)
                if f.unit:
                    self.by_unit.setdefault(f.unit, set()).add(f.value)
            self.terms.update(analyzer.terms(text))
            self.prefixes.update(_prefix(w) for w in words(text) if len(w) >= PREFIX)

    def supports(self, fact: Fact) -> bool:
        if fact.kind == "number":
            return fact.value in self.numbers
        # a stemmer does not meet every inflection of a name (Brytania / Brytanii): the start of
        # the word is compared too
        return fact.value in self.terms or (len(fact.text) >= PREFIX and _prefix(fact.text) in self.prefixes)


def unsupported(text: str, index: FactIndex, also: Sequence[str] = (),
                kinds: Sequence[str] = ("number", "name")) -> list[Fact]:
    """Facts of `text` that neither the index nor the `also` texts (e.g. the question) state."""
    extra = FactIndex(also, index.analyzer) if also else None
    return [f for f in facts(text, index.analyzer) if f.kind in kinds
            and not index.supports(f) and not (extra is not None and extra.supports(f))]
