"""How close answers are to the reference completions.

Similarity (free text): chrF (sacrebleu, corpus level, 0-100) and ROUGE-L F1 (rouge-score,
mean over answers, 0-1). Classification-like tasks (the references are short labels) also get
exact match, accuracy and macro-F1 (scikit-learn)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)

# A reference is a "label" when it is this short; a task is classification-like when every
# reference is a label and the labels repeat (few distinct values).
LABEL_MAX_WORDS = 3
LABEL_MAX_CHARS = 40


class _UnicodeTokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9], which turns Polish, German or any
    non-ASCII text into fragments; this one keeps every Unicode word character."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    from sacrebleu.metrics import CHRF

    _check_lengths(hypotheses, references)
    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over answer/reference pairs (0-1)."""
    from rouge_score.rouge_scorer import RougeScorer

    _check_lengths(hypotheses, references)
    if not references:
        return 0.0
    scorer = RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references)]
    return float(sum(scores) / len(scores))


def normalize_label(text: str) -> str:
    """Labels compare case-insensitively, without surrounding whitespace or final punctuation."""
    return text.strip().strip(".!?:;\"'").strip().casefold()


def is_classification(references: Sequence[str]) -> bool:
    """True when every reference is a short label and the labels repeat."""
    if len(references) < 2:
        return False
    for ref in references:
        text = ref.strip()
        if not text or len(text) > LABEL_MAX_CHARS or len(_WORD.findall(text)) > LABEL_MAX_WORDS:
            return False
    distinct = {normalize_label(r) for r in references}
    return len(distinct) <= max(2, len(references) // 2)


def classification_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact_match: the answer is the reference verbatim (stripped); accuracy: the normalized
    labels agree; macro_f1: F1 averaged over the reference labels, so an answer outside the
    label set counts as a miss for its true class and adds no class of its own."""
    from sklearn.metrics import accuracy_score, f1_score

    _check_lengths(predictions, references)
    pred = [normalize_label(p) for p in predictions]
    gold = [normalize_label(r) for r in references]
    labels = sorted(set(gold))
    return {
        "exact_match": sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
    }


def similarity_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    scores = {"chrf": chrf(hypotheses, references), "rouge_l": rouge_l(hypotheses, references)}
    if is_classification(references):
        scores.update(classification_scores(hypotheses, references))
    return scores


def _check_lengths(a: Sequence[str], b: Sequence[str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} answers for {len(b)} references")
