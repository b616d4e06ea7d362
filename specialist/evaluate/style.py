"""Style consistency: a light classifier of the target style, and the spread of answers.

The classifier is character n-gram TF-IDF + logistic regression, learnt from the training
completions (the target style) against generic answers to the same training prompts (what
the base model says without being specialised). Its held-out accuracy is measured by
stratified cross-validation, so a reader can tell whether its verdicts mean anything.
Style adherence = the share of answers it scores at or above 0.5."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

THRESHOLD = 0.5


@dataclass
class StyleClassifier:
    pipeline: Any
    heldout_accuracy: float | None  # mean cross-validated accuracy; None with too few examples
    folds: int
    n_target: int
    n_generic: int

    def scores(self, answers: Sequence[str]) -> list[float]:
        """Probability that each answer is in the target style."""
        if not answers:
            return []
        return [float(p) for p in self.pipeline.predict_proba(list(answers))[:, 1]]

    def adherence(self, answers: Sequence[str]) -> float:
        scores = self.scores(answers)
        return sum(s >= THRESHOLD for s in scores) / len(scores) if scores else 0.0

    def describe(self) -> dict[str, Any]:
        return {"method": "char 2-5-gram TF-IDF + logistic regression", "target_examples": self.n_target,
                "generic_examples": self.n_generic, "heldout_accuracy": self.heldout_accuracy,
                "cv_folds": self.folds, "threshold": THRESHOLD}


def _pipeline(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=1, lowercase=True),
        LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000, random_state=seed),
    )


def train_style_classifier(target: Sequence[str], generic: Sequence[str], seed: int = 0,
                           max_folds: int = 5) -> StyleClassifier:
    """Fit target (label 1) vs generic (label 0). Generic texts identical to a target text are
    dropped: the same string cannot be both."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    target = list(target)
    target_set = set(target)
    generic = [g for g in generic if g not in target_set]
    if not target or not generic:
        raise ValueError("the style classifier needs both target-style and generic examples")
    texts = target + generic
    labels = np.array([1] * len(target) + [0] * len(generic))
    folds = min(max_folds, len(target), len(generic))
    accuracy = None
    if folds >= 2:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        accuracy = float(np.mean(cross_val_score(_pipeline(seed), texts, labels, cv=cv, scoring="accuracy")))
    model = _pipeline(seed).fit(texts, labels)
    return StyleClassifier(model, accuracy, folds if folds >= 2 else 0, len(target), len(generic))


# ------------------------------------------------------------------ spread
def word_count(text: str) -> int:
    return len(text.split())


def dispersion(values: Sequence[float]) -> dict[str, float]:
    """Mean, population standard deviation and interquartile range (linear interpolation,
    numpy's default); a consistent contender has a small std and IQR."""
    if not values:
        return {"mean": 0.0, "std": 0.0, "iqr": 0.0}
    arr = np.asarray(values, dtype=float)
    q75, q25 = np.percentile(arr, [75, 25])
    return {"mean": float(arr.mean()), "std": float(arr.std()), "iqr": float(q75 - q25)}
