"""Words → index terms for lexical retrieval and fact matching.

Lower-cased words, stop words dropped, Snowball-stemmed in the knowledge base's language
(PyStemmer: Polish, English, German and 30 more), then with diacritics folded, so "wysyłka",
"wysyłki", "wysylke" and "Wysyłkę" all meet at one term. Numbers stay whole ("14,99")."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache

from specialist.console import err_console

# ISO 639-1 → Snowball algorithm name (PyStemmer).
SNOWBALL = {"pl": "polish", "en": "english", "de": "german", "fr": "french", "es": "spanish", "it": "italian",
            "pt": "portuguese", "nl": "dutch", "cs": "czech", "sv": "swedish", "ru": "russian", "da": "danish",
            "fi": "finnish", "hu": "hungarian", "ro": "romanian", "tr": "turkish", "no": "norwegian"}

# Function words that only add noise to a short question (BM25's IDF handles the rest).
STOP_WORDS = {
    "pl": set("""a aby ale albo az bo by byc byl czy co czego czemu do dla gdy gdzie go i ich ile im in inne
        ja jak jaka jakie jaki jakim jako je jego jej jest jestem jesli jeszcze juz ktora ktore ktory ktorych
        ma mam macie mamy mi mnie moge moze mozna mu my na nad nam nas nasz nasza nasze nie niz no o od
        oraz po pod przez przy sa sie si ta tak taki tam te tego tej ten to tu ty tym u w we wam was z za ze
        zeby prosze czesc dzien dobry hej witam""".split()),
    "en": set("""a an and are as at be but by can could do does for from have how i if in is it me my of on
        or our please the their there this to was we what when where which who why will with would you your
        hi hello""".split()),
}

_WORD = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)


def fold(text: str) -> str:
    """Lower case without diacritics (Polish ł → l too)."""
    text = text.lower().replace("ł", "l")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    return _WORD.findall(text)


@cache
def _stemmer(language: str):
    name = SNOWBALL.get(language)
    if name is None:
        return None
    try:
        import Stemmer
    except ImportError:  # declared as a dependency; a broken install still retrieves, unstemmed, and says so
        err_console.print(f"[yellow]warning: PyStemmer is not installed, so {name} words are matched unstemmed "
                          "and retrieval finds fewer passages; `pip install PyStemmer` fixes it[/yellow]")
        return None
    return Stemmer.Stemmer(name)


class Analyzer:
    """Text → terms for one language (None: no stemming, no stop words)."""

    def __init__(self, language: str | None) -> None:
        self.language = language
        self.stop = {fold(w) for w in STOP_WORDS.get(language or "", ())}
        self.stemmer = _stemmer(language) if language else None

    def terms(self, text: str) -> list[str]:
        raw = [w.lower() for w in words(text)]
        raw = [w for w in raw if fold(w) not in self.stop]
        stems = self.stemmer.stemWords(raw) if self.stemmer is not None else raw
        return [fold(s) for s in stems if s]

    def terms_many(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]


def detect_language(texts: Sequence[str]) -> str | None:
    """The main language of a set of texts (lingua, offline), None when unclear."""
    from collections import Counter

    from specialist.data.language import detect_languages

    found, _ = detect_languages(list(texts)[:500])
    if not found:
        return None
    language, count = Counter(found.values()).most_common(1)[0]
    return language if count >= 0.5 * len(found) else None
