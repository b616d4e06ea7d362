"""`specialist data check`: read, validate, measure and judge a dataset in one pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specialist.data import quality
from specialist.data.findings import DataError, DataWarning
from specialist.data.formats import DEFAULT_MAX_RECORD_BYTES
from specialist.data.language import detect_languages
from specialist.data.stats import (
    DEFAULT_PRICE_PER_MILLION,
    DEFAULT_TOKENS_PER_SECOND,
    build_stats,
    count_tokens,
    train_defaults,
    truncation_warnings,
)
from specialist.data.validate import DEFAULT_MAX_ERRORS, LoadedData, read_dataset


@dataclass
class CheckSettings:
    format: str | None = None
    model: str | None = None  # tokenizer for token counts and truncation; None = no tokenizer checks
    max_length: int | None = None  # default: the training default
    eval_data: Path | None = None
    epochs: float | None = None  # default: the training default
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND
    price_per_million: float = DEFAULT_PRICE_PER_MILLION
    max_errors: int = DEFAULT_MAX_ERRORS
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    knowledge: Path | None = None  # a knowledge base (or a run folder with one): W116/W117 fact checks


@dataclass
class CheckReport:
    file: str
    format: str
    records: int
    valid: int
    errors: list[DataError]
    warnings: list[DataWarning]
    stats: dict[str, Any]
    eval: dict[str, Any] | None = None
    flagged: dict[int, dict[str, str]] = field(default_factory=dict)  # line → prompt/answer, for the HTML page
    lengths: dict[str, list[float]] = field(default_factory=dict)  # per-record lengths, for the histograms
    knowledge: dict[str, Any] | None = None  # the knowledge base checked against, and what it found

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def to_json(self) -> dict[str, Any]:
        doc = {"file": self.file, "format": self.format, "records": self.records, "valid": self.valid,
               "errors": [e.to_dict() for e in self.errors], "warnings": [w.to_dict() for w in self.warnings],
               "stats": self.stats}
        if self.eval is not None:
            doc["eval"] = self.eval
        if self.knowledge is not None:
            doc["knowledge"] = self.knowledge
        return doc


def run_check(path: str | Path, settings: CheckSettings | None = None,
              progress: Callable[[str], None] = lambda _msg: None) -> CheckReport:
    settings = settings or CheckSettings()
    default_length, default_epochs = train_defaults()
    max_length = settings.max_length or default_length
    epochs = settings.epochs or default_epochs

    context = None
    if settings.knowledge is not None:
        # The data stage runs the knowledge checks but owns none of them: imported only when asked.
        from specialist.knowledge.check import open_for_check

        progress("reading the knowledge base")
        context = open_for_check(settings.knowledge)  # before the data: a bad --knowledge fails fast

    progress("reading and validating")
    data = read_dataset(path, settings.format, settings.max_errors, settings.max_record_bytes)
    examples = data.examples
    errors = list(data.errors)
    warnings: list[DataWarning] = []

    eval_data: LoadedData | None = None
    if settings.eval_data is not None:
        eval_data = read_dataset(settings.eval_data, None, settings.max_errors, settings.max_record_bytes)
        errors.extend(eval_data.errors)

    languages: dict[int, str] = {}
    refusals: list[int] = []
    labels = topics = None
    knowledge = {"fact_density": 0.0, "unique_word_share": 0.0}
    tokens = None
    if examples:
        progress("near-duplicates and contradictions")
        similarity = quality.Similarity(examples)
        warnings += quality.duplicate_warnings(examples, similarity)
        if eval_data is not None:
            warnings += quality.leakage_warnings(examples, similarity, eval_data.examples)
        labels, topics = quality.labels_of(examples), quality.topics_of(examples)
        warnings += quality.length_warnings(examples, labels)
        progress("languages")
        # Labels say nothing about language: for classification data the inputs are checked.
        languages, sampled = detect_languages([e.user_text if labels else e.completion for e in examples])
        warnings += quality.language_warnings(examples, languages, sampled)
        progress("style")
        warnings += quality.style_warnings(examples, quality.main_language(languages), labels)
        warnings += quality.pii_warnings(examples)
        knowledge = quality.knowledge_profile(examples)
        warnings += quality.knowledge_warnings(examples, labels, knowledge)
        refusals = quality.refusal_indices(examples)
        warnings += quality.refusal_warnings(examples, refusals)
        warnings += quality.balance_warnings(examples, labels, "label")
        warnings += quality.balance_warnings(examples, topics, "topic")
        if settings.model:
            progress(f"token counts with {settings.model}")
            tokens = count_tokens(examples, _tokenizer(settings.model))
            warnings += truncation_warnings(examples, tokens, max_length)
    knowledge_doc = None
    if context is not None:
        from specialist.knowledge.check import data_warnings, knowledge_summary

        progress("facts against the knowledge base")
        findings = data_warnings(examples, context)
        warnings += findings.warnings
        knowledge_doc = knowledge_summary(context, findings, len(examples))
    warnings += quality.size_warnings(examples)
    warnings.sort(key=lambda w: (w.code, w.lines[:1]))

    stats = build_stats(examples, schemas=data.schemas, records=data.records, tokens=tokens, max_length=max_length,
                        epochs=epochs, tokens_per_second=settings.tokens_per_second,
                        price_per_million=settings.price_per_million, languages=languages, refusals=refusals,
                        labels=labels, topics=topics, knowledge=knowledge, model=settings.model)
    eval_doc = None
    if eval_data is not None:
        eval_doc = {"file": eval_data.file, "records": eval_data.records, "valid": eval_data.valid}
    flagged_lines = {line for w in warnings if w.file == data.file for line in w.lines}
    flagged = {e.line: {"prompt": e.prompt, "completion": e.completion} for e in examples if e.line in flagged_lines}
    lengths = {"prompt characters": [len(e.user_text) for e in examples],
               "answer characters": [len(e.completion) for e in examples]}
    if tokens is not None:
        lengths.update({"prompt tokens": tokens.prompt, "answer tokens": tokens.completion})
    return CheckReport(data.file, data.format, data.records, data.valid, errors, warnings, stats, eval_doc, flagged,
                       lengths,
                       knowledge_doc)


def _tokenizer(model: str) -> Any:
    from specialist.models.resolve import load_tokenizer

    return load_tokenizer(model)
