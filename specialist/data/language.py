"""Language of each answer, offline, with lingua. The detector is built once per process for
a fixed set of common languages (building it for all 75 is slow and makes short texts
ambiguous); unsure detections come back as None."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache

# ISO 639-1 codes of the languages considered; a dataset in another language gets no
# language warnings (its records come back as None or as a wrong but consistent guess).
LANGUAGES = ("en", "pl", "de", "fr", "es", "it", "pt", "nl", "cs", "sk", "uk", "ru", "sv")
MIN_LETTERS = 30  # shorter texts are too ambiguous to call
_NON_LETTERS = re.compile(r"[\W\d_]+")
MAX_SAMPLE = 5_000


@lru_cache(maxsize=1)
def _detector():
    # Low-accuracy mode loads only trigram models: ~0.2 s instead of ~8 s to build, and
    # reliable on answers of a sentence or more; unsure calls come back as None.
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, code.upper()) for code in LANGUAGES]
    return (LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
            .with_minimum_relative_distance(0.1).with_low_accuracy_mode().build())


def detect_languages(texts: Sequence[str], seed: int = 0) -> tuple[dict[int, str], bool]:
    """{index: iso code} for the texts that could be told apart, and whether a sample was used
    (over MAX_SAMPLE long enough texts)."""
    candidates = [i for i, t in enumerate(texts) if len(_NON_LETTERS.sub("", t[:400])) >= MIN_LETTERS]
    sampled = len(candidates) > MAX_SAMPLE
    if sampled:
        candidates = sorted(random.Random(seed).sample(candidates, MAX_SAMPLE))
    if not candidates:
        return {}, sampled
    detector = _detector()
    found = detector.detect_languages_in_parallel_of([texts[i][:400] for i in candidates])
    return {i: lang.iso_code_639_1.name.lower() for i, lang in zip(candidates, found) if lang is not None}, sampled
