"""Retrieval-augmented fine-tuning examples: teach the specialist to answer from its context.

Every training example gets the passages retrieved for its question (top k with the same
score cut, exactly as at inference) in its prompt (models.template.format_context). Two additions make the context
worth reading:

- the answer's passage: when the retrieved passages miss a fact the answer states (a number or
  a name) and a passage of the knowledge base has it, that passage replaces the lowest-ranked
  one, at a seeded position. The model never learns to state what its context does not show.
- abstention examples: a share of the examples that state facts from the knowledge base are
  repeated without the passages that hold those facts and with an answer that offers to check
  or hand over instead of inventing. Those answers come from the dataset's own records marked
  `"answerable": false` when it has at least MIN_OWN_ABSTENTIONS of them, else from
  ABSTENTIONS in the dataset's language (Polish and English, informal address). Most get
  unrelated passages; a share (`abstain_related`) gets a near miss: the passages retrieval
  finds for the question once every passage holding the answer's facts, or most like the
  answer, is gone. That is what an unanswerable question meets at inference ("how high does
  your Kenya grow?" retrieves the Kenya passage, which does not say), and unrelated passages
  alone never teach it: a model trained only on them answers from any passage on the topic.

Evaluation examples get retrieval only (no added passage, no abstention examples)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from specialist.knowledge.grounding import FactIndex, facts, numbers
from specialist.knowledge.passages import Passage
from specialist.knowledge.retrieve import MIN_SHARE, Retriever
from specialist.models.template import Message, attach_context, last_user_text

MIN_OWN_ABSTENTIONS = 3
UNRELATED_EXCLUDE = 10  # abstention contexts avoid the question's top passages this deep
ANSWER_LIKE = 2  # near-miss contexts also leave out the answer's own best passages (retrieved for it)

ABSTENTIONS = {
    "pl": [
        "Nie mam tej informacji pod ręką, a nie chcę Cię wprowadzić w błąd. Napisz proszę do naszej obsługi "
        "klienta, chętnie to sprawdzimy.",
        "Tego nie wiem na pewno, więc nie będę zgadywać. Daj znać naszej obsłudze klienta, a sprawdzimy to dla Ciebie.",
        "Muszę to sprawdzić, żeby podać Ci pewną informację. Napisz proszę do obsługi klienta, chętnie pomożemy.",
        "Nie mam tu takiej informacji. Zapytaj proszę naszą obsługę klienta, a sprawdzimy to dla Ciebie.",
    ],
    "en": [
        "I don't have that information at hand and don't want to guess. Please ask our customer service and "
        "we'll gladly check it for you.",
        "I'm not sure about that, so I won't guess. Drop our customer service a line and we'll check it for you.",
        "I need to check that before I tell you. Please contact our customer service and we'll be happy to help.",
    ],
}


@dataclass
class AugmentSettings:
    top_k: int = 3
    min_share: float = MIN_SHARE  # retrieval's score cut (Retriever.search), as at inference
    abstain_share: float = 0.15  # abstention examples added, as a share of the training examples
    abstain_related: float = 0.0  # share of those whose context is a near miss (related, without the answer)
    seed: int = 0


@dataclass
class ContextExample:
    messages: list[Message]  # the last user turn carries the context
    completion: str
    source: Any              # the record it came from, as the caller identifies it (file:line, its Example)
    kind: str                # "retrieved", "answer-passage" or "abstention"
    passage_ids: list[str] = field(default_factory=list)


@dataclass
class AugmentReport:
    examples: int = 0
    answer_passage_added: int = 0
    abstentions: int = 0
    abstention_source: str = ""
    abstentions_related: int = 0  # of the abstentions, those with a near-miss context
    grounded: int = 0  # examples whose stated facts their context holds (all of them)
    stating_facts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _with_answer_passage(hits: list[Passage], completion: str, retriever: Retriever, rng: random.Random,
                         top_k: int) -> tuple[list[Passage], bool]:
    index = FactIndex([p.text for p in hits], retriever.analyzer)
    missing = [f for f in facts(completion, retriever.analyzer) if not index.supports(f)]
    if not missing:
        return hits, False
    best, best_cover = None, 0
    for hit in retriever.search(completion, k=5):
        if hit.passage in hits:
            continue
        own = FactIndex([hit.passage.text], retriever.analyzer)
        cover = sum(own.supports(f) for f in missing)
        if cover > best_cover:
            best, best_cover = hit.passage, cover
    if best is None:
        return hits, False
    kept = hits[:-1] if len(hits) >= top_k else list(hits)
    kept.insert(rng.randrange(len(kept) + 1), best)
    return kept, True


def augment_examples(examples: Sequence[tuple[list[Message], str, Any]], retriever: Retriever,
                     settings: AugmentSettings, answerable: Sequence[bool] | None = None,
                     training: bool = True) -> tuple[list[ContextExample], AugmentReport]:
    """(messages, completion, source) → examples with context. `answerable[i]` False marks a
    record the dataset itself gives as an abstention (its own answer, no facts expected)."""
    rng = random.Random(settings.seed)
    report = AugmentReport()
    out: list[ContextExample] = []
    fact_bearing: list[int] = []
    own_abstentions = [c for (_, c, _), ok in zip(examples, answerable or [True] * len(examples)) if not ok]
    for i, (messages, completion, source) in enumerate(examples):
        question = last_user_text(messages) or ""
        hits = [h.passage for h in retriever.search(question, settings.top_k, min_share=settings.min_share)]
        kind = "retrieved"
        if training and (answerable is None or answerable[i]):
            hits, added = _with_answer_passage(hits, completion, retriever, rng, settings.top_k)
            if added:
                kind = "answer-passage"
                report.answer_passage_added += 1
            stated = facts(completion, retriever.analyzer)
            if stated:
                report.stating_facts += 1
                index = FactIndex([p.text for p in hits], retriever.analyzer)
                if all(index.supports(f) for f in stated):
                    report.grounded += 1
                    if any(f.kind == "number" for f in stated):
                        fact_bearing.append(i)
        out.append(ContextExample(attach_context(messages, hits), completion, source, kind, [p.id for p in hits]))
    report.examples = len(out)
    if not training or settings.abstain_share <= 0 or not fact_bearing:
        return out, report
    if len(own_abstentions) >= MIN_OWN_ABSTENTIONS:
        answers, report.abstention_source = own_abstentions, "dataset"
    else:
        answers = abstention_answers(retriever.language)
        report.abstention_source = f"template ({retriever.language or 'en'})"
    n = min(len(fact_bearing), round(settings.abstain_share * len(examples)))
    chosen = sorted(rng.sample(fact_bearing, n))
    near = set(rng.sample(chosen, round(settings.abstain_related * n)))
    # each passage's numbers and facts once, not once per abstention example
    passage_numbers = {p.id: {f.value for f in numbers(p.text)} for p in retriever.kb.passages}
    passage_facts = {p.id: FactIndex([p.text], retriever.analyzer) for p in retriever.kb.passages} if near else {}
    for i in chosen:
        messages, completion, source = examples[i]
        question = last_user_text(messages) or ""
        stated = facts(completion, retriever.analyzer)
        figures = {f.value for f in stated if f.kind == "number"}
        context: list[Passage] = []
        if i in near:
            # the knowledge base as if it lacked the answer: no passage stating one of its facts, and
            # not the passages the answer reads like (it may say more than its figures: "a few days")
            holding = [p.id for p in retriever.kb.passages
                       if figures & passage_numbers[p.id] or any(passage_facts[p.id].supports(f) for f in stated)]
            holding += [h.passage.id for h in retriever.search(completion, ANSWER_LIKE, min_share=MIN_SHARE)
                        if h.score > 0]
            hits = retriever.search(question, settings.top_k, exclude=holding, min_share=settings.min_share)
            # BM25: related = sharing a term with the question; dense and hybrid scores rank
            # every passage, so there the near miss is the best of what is left
            context = [h.passage for h in hits if h.score > 0]
        if context:
            report.abstentions_related += 1
        else:
            # related: what retrieval would find for the question (BM25 scores 0 share no term with it)
            related = {h.passage.id for h in retriever.search(question, UNRELATED_EXCLUDE) if h.score > 0}
            pool = [p for p in retriever.kb.passages if p.id not in related and not figures & passage_numbers[p.id]]
            if len(pool) < settings.top_k:
                continue
            context = rng.sample(pool, settings.top_k)
        out.append(ContextExample(attach_context(messages, context), rng.choice(answers), source, "abstention",
                                  [p.id for p in context]))
        report.abstentions += 1
    return out, report


def abstention_answers(language: str | None) -> list[str]:
    return ABSTENTIONS.get(language or "en", ABSTENTIONS["en"])


def kinds(examples: Sequence[ContextExample]) -> Counter:
    return Counter(e.kind for e in examples)
