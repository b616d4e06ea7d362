"""Style rules the user declares in an eval config, and their pass rates.

    rules:
      - name: starts with a greeting
        pattern: "^(cześć|dzień dobry|oczywiście|jasne)"
      - name: no English
        not_pattern: "\\b(the|and|you)\\b"
      - name: brief
        max_words: 60
      - name: in Polish
        language: pl

Each rule has a name and exactly one check: `pattern` (a regular expression that must be
found, case-insensitive), `not_pattern` (must not be found), `max_words` / `min_words`
(whitespace-separated words) or `language` (ISO 639-1 code or English name, detected with
lingua)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from specialist.errors import ConfigError
from specialist.io import read_text

CHECKS = ("pattern", "not_pattern", "max_words", "min_words", "language")

# Languages the detector weighs a target against. Detecting among all 75 lingua languages
# costs ~1 GB and ~12 s to load; this set covers what a model drifting off-language produces.
COMMON_LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sk", "uk", "ru", "sv")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    pattern: str | None = None
    not_pattern: str | None = None
    max_words: int | None = None
    min_words: int | None = None
    language: str | None = None

    @field_validator("pattern", "not_pattern")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression ({exc})") from exc
        return value

    @field_validator("max_words", "min_words")
    @classmethod
    def _non_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is not None:
            language_of(value)  # raises ValueError for an unknown name
        return value

    @model_validator(mode="after")
    def _one_check(self) -> Rule:
        given = [c for c in CHECKS if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one of {', '.join(CHECKS)} (got {', '.join(given) or 'none'})")
        return self

    @property
    def check(self) -> str:
        return next(c for c in CHECKS if getattr(self, c) is not None)

    def passes(self, answer: str) -> bool:
        return _CHECKERS[self.check](self, answer)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the eval config may carry other sections

    rules: list[Rule]


def _words(text: str) -> int:
    return len(text.split())


def _detect(text: str, target: str) -> bool:
    if not text.strip():
        return False
    return _detector(language_of(target)).detect_language_of(text) == language_of(target)


_CHECKERS: dict[str, Callable[[Rule, str], bool]] = {
    "pattern": lambda r, a: re.search(r.pattern, a, re.IGNORECASE | re.MULTILINE) is not None,
    "not_pattern": lambda r, a: re.search(r.not_pattern, a, re.IGNORECASE | re.MULTILINE) is None,
    "max_words": lambda r, a: _words(a) <= r.max_words,
    "min_words": lambda r, a: _words(a) >= r.min_words,
    "language": lambda r, a: _detect(a, r.language),
}


def language_of(name: str) -> Any:
    from lingua import IsoCode639_1, Language

    key = name.strip()
    try:
        if len(key) == 2:
            return Language.from_iso_code_639_1(IsoCode639_1.from_str(key.lower()))
        return Language.from_str(key)
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"unknown language {name!r} "
                         "(use an ISO 639-1 code such as 'pl' or a name such as 'polish')") from exc


@lru_cache(maxsize=4)
def _detector(target: Any) -> Any:
    from lingua import LanguageDetectorBuilder

    languages = {language_of(code) for code in COMMON_LANGUAGES} | {target}
    return LanguageDetectorBuilder.from_languages(*languages).build()


# ------------------------------------------------------------------ loading
def load_rules(path: str | Path) -> list[Rule]:
    """Read the `rules:` list of an eval config; errors name file:line and the field."""
    from specialist.config import parse_yaml
    from specialist.errors import SpecialistError

    path = Path(path)
    try:
        text = read_text(path)
    except SpecialistError as exc:
        raise ConfigError(str(exc)) from exc
    doc = parse_yaml(path, text, "not valid YAML")
    if not isinstance(doc, dict) or "rules" not in doc:
        raise ConfigError(f"{path}: expected a top-level `rules:` list")
    try:
        return RuleSet.model_validate(doc).rules
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        line = _line_of(text, loc)
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}:{line}: {field}: {msg}" if line else f"{path}: {field}: {msg}") from exc


def _line_of(text: str, loc: Sequence[Any]) -> int | None:
    """1-based line of the YAML node at `loc` (deepest that exists)."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line = next(k for k, v in node.value if v is match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


# ------------------------------------------------------------------ scoring
@dataclass
class RuleResults:
    per_rule: dict[str, float]      # rule name → share of answers that pass
    pass_rate: float                # share of (answer, rule) checks that pass
    all_pass_rate: float            # share of answers that pass every rule
    passed: list[list[bool]]        # [answer][rule]


def score_rules(rules: Sequence[Rule], answers: Sequence[str]) -> RuleResults | None:
    if not rules or not answers:
        return None
    passed = [[rule.passes(a) for rule in rules] for a in answers]
    n = len(answers)
    per_rule = {rule.name: sum(row[i] for row in passed) / n for i, rule in enumerate(rules)}
    total = sum(sum(row) for row in passed) / (n * len(rules))
    return RuleResults(per_rule, total, sum(all(row) for row in passed) / n, passed)
