"""Is an answer right, and does it invent? Metrics against eval records' facts and a knowledge base.

- fact accuracy: share of answerable records with `facts` whose answer matches every regex
  (case-insensitive re.search) and none of the record's `wrong` regexes (what a wrong answer
  says: the right figure tied to the wrong thing, a "Jasne!" where the answer is no);
- unsupported-number rate: share of answers stating a number (knowledge.grounding.numbers)
  found neither in the question nor anywhere in the knowledge base (needs a knowledge base);
- abstention rate: share of `"answerable": false` records whose answer offers to check, hand
  over or says it does not know (ABSTAIN_PATTERN), states no unsupported number and matches none
  of the record's `wrong` regexes: an answer that hedges *and* invents a price, or a cafe in
  Gdańsk, has not abstained;
- retrieval recall@k: share of answerable records with facts whose top-k retrieved passages
  (titles and texts joined) match every regex: could the answer have been found at all?

Each function takes plain lists, so the figures are testable on hand-made answers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from specialist.knowledge.analyze import Analyzer, fold
from specialist.knowledge.grounding import FactIndex, normalise_number, unsupported

# An offer to check, to hand over to customer service, or an admission of not knowing, in
# Polish and English. Matched on the folded answer (lower case, no diacritics), so "sprawdzę",
# "sprawdze", "obsługą" and "Obsluga" all count. Redirects to the shop's own pages count too:
# the coffee references answer unknown prices with "zobaczysz na stronie produktu" / "w koszyku".
# The reflexive "sprawdza się"/"się sprawdzi" means "works well" ("sprawdza się w French Pressie"),
# not "checks": the coffee answers use it often, and it counted as an abstention.
ABSTAIN_PATTERN = (
    r"(?<!\bsie )\bsprawdz(?!\w*\s+sie\b)|\bobslug|\bnie mam (?:\w+ ){0,2}informacj|\bnie wiem\b|\bnie znam\b"
    r"|\bskontaktuj|\bkontakt"
    r"|\bnapisz (?:\w+ )?(?:do|na)\b|\bzapytaj|\bzajrzyj|\bna (?:naszej )?stronie\b|\bw opisie\b|\bzobaczysz\b"
    r"|\bpod reka\b"
    r"|\bcheck\b|\bcustomer (?:service|support|care)\b|\bdon'?t know\b|\bdo not know\b|\bnot sure\b"
    r"|\bcontact (?:us|our)\b|\bdon'?t have (?:that|this|the) information\b"
)
_ABSTAIN = re.compile(ABSTAIN_PATTERN)
_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)?(?::\d\d)?(?![\d])")


def offers_to_check(answer: str) -> bool:
    """True when the answer offers to check / hand over or says it does not know."""
    return bool(_ABSTAIN.search(fold(answer)))


def missing_facts(answer: str, facts: Sequence[str]) -> list[str]:
    """The regexes of `facts` the answer does not contain (case-insensitive search)."""
    return [f for f in facts if not re.search(f, answer, re.IGNORECASE)]


def wrong_found(answer: str, wrong: Sequence[str]) -> list[str]:
    """The regexes of `wrong` (what a wrong answer says) the answer contains."""
    return [w for w in wrong if re.search(w, answer, re.IGNORECASE)]


def fact_ok(answer: str, facts: Sequence[str], answerable: bool = True, wrong: Sequence[str] = ()) -> bool | None:
    """True/False for an answerable record with facts; None when there is nothing to check."""
    if not answerable or not facts:
        return None
    return not missing_facts(answer, facts) and not wrong_found(answer, wrong)


class NumberCheck:
    """Numbers of a knowledge base, to find the numbers an answer invents."""

    def __init__(self, texts: Iterable[str], language: str | None = None) -> None:
        self.index = FactIndex(texts, Analyzer(language))

    def unsupported(self, answer: str, question: str = "") -> list[str]:
        """Numbers (as written, with their unit) that neither the knowledge base nor the
        question states."""
        found = unsupported(answer, self.index, also=(question,) if question else (), kinds=("number",))
        return list(dict.fromkeys(f.text for f in found))


def share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def fact_accuracy(answers: Sequence[str], facts: Sequence[Sequence[str]], answerable: Sequence[bool],
                  wrong: Sequence[Sequence[str]] | None = None) -> float | None:
    """Share of answerable records with facts whose answer matches all of them and none of its
    `wrong`; None when none has facts."""
    wrong = wrong or [()] * len(answers)
    oks = [fact_ok(a, f, ok, w) for a, f, ok, w in zip(answers, facts, answerable, wrong, strict=True)]
    return share([x for x in oks if x is not None])


def unsupported_number_rate(unsupported_numbers: Sequence[Sequence[str]] | None) -> float | None:
    """Share of answers with at least one unsupported number; None without a knowledge base."""
    if unsupported_numbers is None:
        return None
    return share([bool(u) for u in unsupported_numbers])


def abstained(answer: str, unsupported_numbers: Sequence[str] = (), wrong: Sequence[str] = ()) -> bool:
    """An offer to check / hand over that does not also state an unsupported number or what
    the record lists as `wrong` (an invented answer built from the knowledge base's own numbers)."""
    return offers_to_check(answer) and not unsupported_numbers and not wrong_found(answer, wrong)


def abstention_rate(answers: Sequence[str], answerable: Sequence[bool],
                    unsupported_numbers: Sequence[Sequence[str]] | None = None,
                    wrong: Sequence[Sequence[str]] | None = None) -> float | None:
    """Share of unanswerable records answered with an abstention; None when there are none."""
    unsupported_numbers = unsupported_numbers or [()] * len(answers)
    wrong = wrong or [()] * len(answers)
    flags = [abstained(a, u, w) for a, ok, u, w in zip(answers, answerable, unsupported_numbers, wrong, strict=True)
             if not ok]
    return share(flags)


def retrieval_recall(retrieved_texts: Sequence[str], facts: Sequence[Sequence[str]],
                     answerable: Sequence[bool]) -> float | None:
    """Share of answerable records with facts whose retrieved passages (joined) match every regex."""
    flags = [not missing_facts(text, f) for text, f, ok in zip(retrieved_texts, facts, answerable, strict=True)
             if ok and f]
    return share(flags)


def number_spans(answer: str, values: Iterable[str]) -> list[tuple[int, int]]:
    """Where numbers whose normalised value is in `values` stand in the answer (for highlighting)."""
    wanted = set(values)
    return [m.span() for m in _NUMBER.finditer(answer) if normalise_number(m.group(0)) in wanted]


def shown_fact(regex: str, reference: str) -> str:
    """A missing fact as a reader understands it: the reference's text the regex matches
    ("14,99 zł"), else the regex itself."""
    m = re.search(regex, reference, re.IGNORECASE)
    return m.group(0) if m and m.group(0).strip() else regex


@dataclass
class FactResults:
    """Per-answer checks and the figures of one contender."""

    metrics: dict[str, float | None]
    per_answer: list[dict[str, Any]] = field(default_factory=list)


def score_answers(answers: Sequence[str], examples: Sequence[Any], numbers: NumberCheck | None) -> FactResults:
    """fact_accuracy, unsupported_number_rate and abstention_rate for one contender's answers to
    `examples` (data.Example: .prompt, .facts, .wrong, .answerable), and per answer: fact_ok,
    missing_facts, wrong_found, unsupported_numbers (None without a knowledge base) and abstained
    (None for answerable records)."""
    facts = [tuple(e.facts) for e in examples]
    wrong = [tuple(e.wrong) for e in examples]
    answerable = [bool(e.answerable) for e in examples]
    unsup = [numbers.unsupported(a, e.prompt) for a, e in zip(answers, examples)] if numbers is not None else None
    per_answer = []
    for i, (a, f, w, ok) in enumerate(zip(answers, facts, wrong, answerable, strict=True)):
        u = unsup[i] if unsup is not None else None
        per_answer.append({
            "fact_ok": fact_ok(a, f, ok, w),
            "missing_facts": missing_facts(a, f) if ok else [],
            "wrong_found": wrong_found(a, w),
            "unsupported_numbers": u,
            "abstained": None if ok else abstained(a, u or (), w),
        })
    metrics = {
        "fact_accuracy": fact_accuracy(answers, facts, answerable, wrong),
        "unsupported_number_rate": unsupported_number_rate(unsup),
        "abstention_rate": abstention_rate(answers, answerable, unsup, wrong),
    }
    return FactResults(metrics, per_answer)
