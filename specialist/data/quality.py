"""Quality warnings (W1xx): trainable records that would teach the model something you
probably do not want. Each check takes the valid examples and returns DataWarnings that name
the records involved (their line numbers)."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from specialist.data import dedup
from specialist.data.example import Example
from specialist.data.findings import DataWarning
from specialist.data.pii import find_pii
from specialist.data.style import style_breaks

MIN_EXAMPLES = 100
OUTLIER_Z = 3.5
OUTLIER_FACTOR = 3.0  # …and at least this many times longer/shorter than the median: a tight
                      # dataset makes small differences look extreme in z alone
REFUSAL_MAX_SHARE = 0.25
LABEL_MAX_RATIO = 10.0
CONTRADICTION_MAX_ANSWER_SIMILARITY = 0.5
# Knowledge injection: a median answer where one word in eight is a number or a name, and a
# quarter of its words appear in no other answer. Style data (e.g. a shop's customer service)
# sits far below both: about 0.05 and 0.1.
FACT_DENSITY = 0.125
UNIQUE_WORD_SHARE = 0.25

REFUSAL = re.compile(
    r"\b(?:I can(?:no|')t (?:help|assist)|I(?:'m| am) (?:sorry|afraid|unable)|I (?:do not|don't) know|as an AI|"
    r"I(?:'m| am) not able to|I can only help|outside (?:of )?my (?:scope|expertise)|"
    r"nie (?:mogę|potrafię) (?:Ci |ci |w tym |tu )?pomóc|nie wiem|nie jestem w stanie|nie mam (?:informacji|wiedzy)|"
    r"niestety,? nie (?:mogę|mam|znam|potrafię)|(?:mogę|potrafię) pomóc (?:tylko|wyłącznie)|"
    r"zajmuję się (?:tylko|wyłącznie)|"
    r"kann (?:ich )?(?:Ihnen |dir )?(?:leider )?nicht helfen|weiß (?:ich )?(?:es )?nicht|"
    r"je ne peux pas|no puedo ayudar)", re.I)


def _warn(code: str, examples: Sequence[Example], idx: Sequence[int], message: str, **kw: Any) -> DataWarning:
    lines = sorted({examples[i].line for i in idx})
    return DataWarning(code, lines, message, file=examples[idx[0]].file if idx else "", **kw)


def _lines(examples: Sequence[Example], idx: Sequence[int], limit: int = 12) -> str:
    lines = sorted(examples[i].line for i in idx)
    text = ", ".join(map(str, lines[:limit]))
    return text + (f" … (+{len(lines) - limit})" if len(lines) > limit else "")


# ---------------------------------------------------------------- duplicates, contradictions
class Similarity:
    """Signatures of every example's prompt side and answer, computed once and shared by the
    duplicate, contradiction, leakage and split checks."""

    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = examples
        self.prompt_sigs = dedup.signatures([prompt_key(e) for e in examples])
        self.answer_sigs = dedup.signatures([e.completion for e in examples])
        self.index = dedup.NearIndex(self.prompt_sigs)

    def prompt_pairs(self) -> list[tuple[int, int, float, float]]:
        """(i, j, prompt similarity, answer similarity) of every pair of near-same prompts."""
        pairs = list(self.index.pairs(dedup.NEAR))
        if not pairs:
            return []
        left = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
        right = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
        answer_sims = (self.answer_sigs[left] == self.answer_sigs[right]).mean(axis=1)
        return [(i, j, sim, float(a)) for (i, j, sim), a in zip(pairs, answer_sims.tolist())]


def prompt_key(e: Example) -> str:
    return "\n".join(m["content"] for m in e.messages if m["role"] != "system")


def duplicate_warnings(examples: Sequence[Example], sim: Similarity) -> list[DataWarning]:
    warnings: list[DataWarning] = []
    exact: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        exact[exact_key(e)].append(i)
    first_copy = {}  # exact copies are reported once (W101) and stand in by their first copy below
    for idx in exact.values():
        first_copy.update(dict.fromkeys(idx, idx[0]))
        if len(idx) > 1:
            warnings.append(_warn("W101", examples, idx,
                                  f"{len(idx)} identical records (lines {_lines(examples, idx)})"))

    near = dedup.UnionFind(len(examples))
    contra = dedup.UnionFind(len(examples))
    for i, j, _p_sim, a_sim in sim.prompt_pairs():
        i, j = first_copy[i], first_copy[j]
        if i == j:
            continue
        if a_sim >= dedup.NEAR:
            near.union(i, j)
        elif a_sim < CONTRADICTION_MAX_ANSWER_SIMILARITY and examples[i].system == examples[j].system:
            contra.union(i, j)
    for group in near.groups():
        warnings.append(_warn("W102", examples, group,
                              f"{len(group)} near-identical records (lines {_lines(examples, group)})"))
    for group in contra.groups():
        warnings.append(_warn("W103", examples, group,
                              f"the same question is answered differently in {len(group)} records "
                              f"(lines {_lines(examples, group)}): '{_short(examples[group[0]].prompt)}'"))
    return warnings


def exact_key(e: Example) -> tuple:
    return (tuple((m["role"], m["content"].strip()) for m in e.messages), e.completion.strip())


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def leakage_warnings(train: Sequence[Example], sim: Similarity, eval_examples: Sequence[Example]) -> list[DataWarning]:
    """Evaluation records whose prompt is (nearly) a training prompt: the evaluation would
    measure memory, not skill."""
    if not eval_examples:
        return []
    eval_sigs = dedup.signatures([prompt_key(e) for e in eval_examples])
    train_keys = {dedup.normalize(prompt_key(e)): i for i, e in enumerate(train)}
    leaks: list[tuple[int, int]] = []
    for k, e in enumerate(eval_examples):
        hit = train_keys.get(dedup.normalize(prompt_key(e)))
        if hit is None:
            near = [j for j in sim.index.query(eval_sigs[k])
                    if dedup.similarity(eval_sigs[k], sim.prompt_sigs[j]) >= dedup.NEAR]
            hit = min(near) if near else None
        if hit is not None:
            leaks.append((k, hit))
    if not leaks:
        return []
    pairs = ", ".join(f"{eval_examples[k].line}↔{train[j].line}" for k, j in leaks[:10])
    return [DataWarning("W110", sorted(eval_examples[k].line for k, _ in leaks),
                        f"{len(leaks)} of {len(eval_examples)} evaluation records repeat a training prompt "
                        f"(eval↔train lines: {pairs}{' …' if len(leaks) > 10 else ''})",
                        file=eval_examples[0].file,
                        details={"pairs": [[eval_examples[k].line, train[j].line] for k, j in leaks]})]


# ---------------------------------------------------------------- lengths, language, style
def robust_outliers(values: Sequence[float], z: float = OUTLIER_Z) -> list[int]:
    """Indices whose log-length is more than z robust standard deviations from the median."""
    if len(values) < 20:
        return []
    logs = np.log1p(np.asarray(values, dtype=float))
    median = float(np.median(logs))
    mad = float(np.median(np.abs(logs - median)))
    if mad == 0:
        return []
    scores = 0.6745 * (logs - median) / mad
    return [int(i) for i in np.nonzero(np.abs(scores) > z)[0]]


def length_warnings(examples: Sequence[Example], labels: dict | None) -> list[DataWarning]:
    if labels:  # classification answers are labels; their lengths say nothing
        return []
    lengths = [len(e.completion) for e in examples]
    idx = robust_outliers(lengths)
    if not idx:
        return []
    median = statistics.median(lengths)
    long_ = [i for i in idx if lengths[i] > median * OUTLIER_FACTOR]
    short = [i for i in idx if lengths[i] * OUTLIER_FACTOR < median]
    out = []
    if long_:
        out.append(_warn("W106", examples, long_,
                         f"{len(long_)} answers are far longer than the median of {median:.0f} characters "
                         f"(lines {_lines(examples, long_)}; up to {max(lengths[i] for i in long_)} characters)"))
    if short:
        out.append(_warn("W106", examples, short,
                         f"{len(short)} answers are far shorter than the median of {median:.0f} characters "
                         f"(lines {_lines(examples, short)}; down to {min(lengths[i] for i in short)} characters)"))
    return out


def language_warnings(examples: Sequence[Example], languages: dict[int, str], sampled: bool) -> list[DataWarning]:
    counts = Counter(languages.values())
    if not counts:
        return []
    main, main_count = counts.most_common(1)[0]
    if main_count / sum(counts.values()) < 0.6:
        return []  # a multilingual dataset: nothing is "the" language
    odd = sorted(i for i, lang in languages.items() if lang != main)
    if not odd:
        return []
    others = ", ".join(f"{lang} {c}" for lang, c in counts.most_common() if lang != main)
    note = " (a sample of the records was checked)" if sampled else ""
    return [_warn("W107", examples, odd, f"{len(odd)} records are not in the dataset's language ({main}): {others}; "
                                          f"lines {_lines(examples, odd)}{note}")]


def main_language(languages: dict[int, str]) -> str | None:
    counts = Counter(languages.values())
    return counts.most_common(1)[0][0] if counts else None


def style_warnings(examples: Sequence[Example], language: str | None, labels: dict | None) -> list[DataWarning]:
    if labels:
        return []
    answers = [e.completion for e in examples]
    return [_warn(b.code, examples, b.indices, f"{b.trait}: {b.message} (lines {_lines(examples, b.indices)})")
            for b in style_breaks(answers, language)]


# ---------------------------------------------------------------- personal data
def pii_warnings(examples: Sequence[Example]) -> list[DataWarning]:
    """Values that look personal. A value repeated in many records (the shop's own e-mail or
    phone number) is the organisation's contact, not a person's data, and is left alone."""
    hits: list[tuple[int, str, str]] = []
    value_records: dict[str, set[int]] = defaultdict(set)
    for i, e in enumerate(examples):
        for text in [m["content"] for m in e.messages] + [e.completion]:
            for kind, value in find_pii(text):
                hits.append((i, kind, value))
                value_records[value].add(i)
    shared = {v for v, recs in value_records.items() if len(recs) >= 3}
    by_kind: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, kind, value in hits:
        if value not in shared:
            by_kind[kind].append((i, value))
    out = []
    for kind, found in sorted(by_kind.items()):
        idx = sorted({i for i, _ in found})
        sample = ", ".join(f"{examples[i].line}: {_mask(v)}" for i, v in found[:5])
        out.append(_warn("W111", examples, idx, f"{len(idx)} records contain what looks like a {kind} ({sample})"))
    return out


def _mask(value: str) -> str:
    return value if len(value) <= 6 else value[:3] + "…" + value[-2:]


# ---------------------------------------------------------------- knowledge injection
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
_PROPER = re.compile(r"(?<=[^.!?\s]\s)[A-ZĄĆĘŁŃÓŚŹŻ][a-ząćęłńóśźż]+")


def knowledge_profile(examples: Sequence[Example]) -> dict[str, float]:
    """How fact-heavy and how unique the answers are: facts (numbers, names) per word, and
    the share of each answer's words that no other answer uses."""
    doc_freq: Counter = Counter()
    words_per = []
    for e in examples:
        words = {w.lower() for w in _WORD.findall(e.completion)}
        words_per.append(words)
        doc_freq.update(words)
    densities, unique = [], []
    for e, words in zip(examples, words_per):
        n_words = max(1, len(e.completion.split()))
        densities.append((len(_NUMBER.findall(e.completion)) + len(_PROPER.findall(e.completion))) / n_words)
        if words:
            unique.append(sum(doc_freq[w] == 1 for w in words) / len(words))
    return {"fact_density": float(statistics.median(densities)) if densities else 0.0,
            "unique_word_share": float(statistics.median(unique)) if unique else 0.0}


def knowledge_warnings(examples: Sequence[Example], labels: dict | None,
                       profile: dict[str, float]) -> list[DataWarning]:
    if labels or len(examples) < 20:
        return []
    if profile["fact_density"] >= FACT_DENSITY and profile["unique_word_share"] >= UNIQUE_WORD_SHARE:
        return [DataWarning("W112", [], (
            f"the answers read like a knowledge base: a median {profile['fact_density']:.0%} of words are numbers "
            f"or names, and {profile['unique_word_share']:.0%} of an answer's words appear in no other answer"),
            file=examples[0].file)]
    return []


# ---------------------------------------------------------------- balance
def refusal_indices(examples: Sequence[Example]) -> list[int]:
    return [i for i, e in enumerate(examples) if REFUSAL.search(e.completion)]


def refusal_warnings(examples: Sequence[Example], refusals: list[int]) -> list[DataWarning]:
    if len(examples) < 20 or len(refusals) / len(examples) <= REFUSAL_MAX_SHARE:
        return []
    return [_warn("W113", examples, refusals,
                  f"{len(refusals) / len(examples):.0%} of the answers are refusals or fallbacks "
                  f"({len(refusals)} of {len(examples)}; lines {_lines(examples, refusals)})")]


def labels_of(examples: Sequence[Example]) -> dict[str, list[int]] | None:
    """{label: indices} for classification-like data: an explicit label field, or answers that
    are a few short distinct values. None for free-text answers."""
    for key in ("label", "labels", "category", "intent"):
        values = [e.meta.get(key) for e in examples]
        if sum(v is not None for v in values) >= 0.9 * len(examples) > 0:
            return _group(values)
    answers = [e.completion.strip() for e in examples]
    distinct = set(answers)
    if len(examples) >= 20 and len(distinct) <= min(50, len(examples) // 5) and \
            sum(len(a) <= 40 for a in answers) >= 0.95 * len(answers):
        return _group(answers)
    return None


def _group(values: Sequence[str | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, v in enumerate(values):
        if v is not None:
            groups[v].append(i)
    return dict(groups)


def topics_of(examples: Sequence[Example]) -> dict[str, list[int]] | None:
    values = [e.meta.get("topic") for e in examples]
    if sum(v is not None for v in values) >= 0.9 * len(examples) > 0:
        return _group(values)
    return None


def balance_warnings(examples: Sequence[Example], groups: dict[str, list[int]] | None, what: str) -> list[DataWarning]:
    if not groups or len(groups) < 2:
        return []
    sizes = {k: len(v) for k, v in groups.items()}
    largest = max(sizes.values())
    rare = sorted((k for k, s in sizes.items() if largest / s >= LABEL_MAX_RATIO), key=sizes.get)
    if not rare:
        return []
    idx = sorted(i for k in rare for i in groups[k])
    top = max(sizes, key=sizes.get)
    desc = ", ".join(f"'{_short(k, 30)}' {sizes[k]}" for k in rare[:8])
    return [_warn("W114", examples, idx, f"rare {what}s: {desc} — against '{_short(top, 30)}' with {largest} records "
                                          f"(ratio ≥ {LABEL_MAX_RATIO:.0f}:1)")]


def size_warnings(examples: Sequence[Example]) -> list[DataWarning]:
    if len(examples) >= MIN_EXAMPLES:
        return []
    return [DataWarning("W115", [],
                        f"only {len(examples)} valid examples; fine-tuning needs hundreds, better thousands",
                        file=examples[0].file if examples else "")]
