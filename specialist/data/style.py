"""The dataset's own style, learnt from its answers, and the answers that break it.

No fixed house style is assumed: for each trait (form of address, how answers open and end,
final punctuation, emoji, layout, shouting) the tool measures what the dataset does most of
the time and names the few records that do otherwise. A trait the dataset is not consistent
about (e.g. half the answers end with a question) is left alone."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MIN_RECORDS = 20
RARE = 0.05  # a trait value this rare (in a dataset otherwise consistent about it) breaks the style

# ---- form of address, per language: (informal markers, formal markers)
_ADDRESS: dict[str, tuple[re.Pattern, re.Pattern]] = {
    "pl": (
        re.compile(r"\b(?:Cię|cię|Ci|Ciebie|ciebie|Tobie|tobie|Tobą|tobą|(?i:twó[jj]|twoj(?:a|e|ego|ej|emu|im|ą|ich|imi)|"
                   r"masz|możesz|chcesz|wolisz|lubisz|potrzebujesz|szukasz|jesteś|będziesz|zamówisz|"
                   r"otrzymasz|znajdziesz|dostaniesz|zapłacisz|wybierzesz|wiesz|pijesz|parzysz|mogłeś|mogłaś))\b"),
        re.compile(r"\b(?:Pan|Pani|Pana|Panu|Panią|Panem|Państwo|Państwa|Państwu|Państwem)\b"),
    ),
    "de": (
        re.compile(r"\b(?:du|dich|dir|dein|deine|deinen|deinem|deiner|deines|Du|Dich|Dir|Dein|Deine)\b"),
        re.compile(r"(?<![.!?]\s)(?<!^)\b(?:Sie|Ihnen|Ihr|Ihre|Ihren|Ihrem|Ihrer|Ihres)\b"),
    ),
    # English has no T/V forms; the person matters: the reader as "you", or in the third person.
    "en": (re.compile(r"\b(?:you|your|yours|yourself)\b", re.I),
           re.compile(r"\b(?:the (?:customer|client|user|buyer|guest)s?(?: should| can| may| must| will|'s)|"
                      r"customers (?:should|can|may|must)|the requester)\b", re.I)),
    "fr": (re.compile(r"\b(?:tu|toi|ton|tes|t'|te)\b", re.I), re.compile(r"\b(?:vous|votre|vos)\b", re.I)),
    "es": (re.compile(r"\b(?:tú|contigo|tus|ti)\b", re.I), re.compile(r"\b(?:usted|ustedes)\b", re.I)),
    "it": (re.compile(r"\b(?:tu|ti|te|tuo|tua|tuoi|tue)\b", re.I), re.compile(r"\b(?:Lei|La|Suo|Sua|Suoi|Sue)\b")),
}
ADDRESS_NAMES = {"en": ("the reader as 'you'", "the reader in the third person ('the customer')"),
                 "pl": ("informal Ty", "formal Pan/Pani"), "de": ("informal du", "formal Sie"),
                 "fr": ("informal tu", "formal vous"), "es": ("informal tú", "formal usted"),
                 "it": ("informal tu", "formal Lei")}

_EMOJI = re.compile("[\U0001F300-\U0001FAFF\U00002600-\U000027BF\U0001F1E6-\U0001F1FF]")
_FORMAL_SALUTATION = re.compile(
    r"^(?:dear|szanown[ayie]|sehr geehrte|madame|monsieur|estimad[oa]|gentile|egregi)\b", re.I)
_GREETING = re.compile(
    r"^(?:hi|hello|hey|cześć|witaj|witam|dzień dobry|hej|hallo|guten tag|bonjour|salut|hola|ciao|buongiorno)\b", re.I)
_SIGN_OFF = re.compile(
    r"(?:^|\n)\s*(?:best regards|kind regards|regards|sincerely|cheers|yours|pozdrawiam|z poważaniem|"
    r"serdecznie pozdrawiam|mit freundlichen grüßen|viele grüße|cordialement|saludos|cordiali saluti)"
    r"\b[^\n]*\n?[^\n]*$", re.I)
_MARKDOWN = re.compile(r"(?m)^\s*(?:[-*•]\s|\d+[.)]\s|#{1,6}\s)|\*\*[^*]+\*\*|```")
_SHOUT = re.compile(r"\b[A-ZĄĆĘŁŃÓŚŹŻÄÖÜ]{4,}\b")
_REPEATED_PUNCT = re.compile(r"[!?]{2,}|\.{4,}")


def opening(text: str) -> str:
    t = text.lstrip()
    if _FORMAL_SALUTATION.match(t):
        return "formal salutation"
    if _GREETING.match(t):
        return "greeting"
    first = re.split(r"(?<=[.!?])\s", t, maxsplit=1)[0]
    if first.endswith("!") and len(first.split()) <= 4:
        return "short exclamation"
    return "direct"


def ending(text: str) -> str:
    t = text.rstrip()
    if _SIGN_OFF.search(t):
        return "sign-off"
    if t.endswith("?"):
        return "question"
    if t.endswith("!"):
        return "exclamation"
    return "statement"


def _ends_with_punctuation(text: str) -> bool:
    t = text.rstrip().rstrip("\"'”’»)]*_ ")
    return bool(t) and (t[-1] in ".!?…:;" or bool(_EMOJI.match(t[-1])))


def _starts_upper(text: str) -> bool:
    for ch in text.lstrip():
        if ch.isalpha():
            return ch.isupper()
        if ch.isdigit():
            return True
    return True


@dataclass
class StyleBreak:
    trait: str
    message: str
    indices: list[int]
    code: str = "W109"


# (name, what the majority does / the minority does, predicate)
_BOOLEAN_TRAITS: list[tuple[str, str, str, Callable[[str], bool]]] = [
    ("final punctuation", "end with punctuation", "end without final punctuation", _ends_with_punctuation),
    ("capital letter", "start with a capital letter", "start with a lower-case letter", _starts_upper),
    ("emoji", "use emoji", "use no emoji", lambda t: bool(_EMOJI.search(t))),
    ("layout", "use lists, headings or bold (markdown)", "are plain prose", lambda t: bool(_MARKDOWN.search(t))),
    ("line breaks", "span several lines", "are one paragraph", lambda t: "\n" in t.strip()),
    ("exclamation marks", "use exclamation marks", "use none", lambda t: "!" in t),
    ("shouting", "write words in CAPITALS", "do not shout", lambda t: len(_SHOUT.findall(t)) >= 2),
    ("repeated punctuation", "use repeated punctuation (!!, ??, ....)", "do not",
     lambda t: bool(_REPEATED_PUNCT.search(t))),
]


def style_breaks(answers: Sequence[str], language: str | None) -> list[StyleBreak]:
    """Traits the dataset is consistent about, and the answers that break them."""
    n = len(answers)
    if n < MIN_RECORDS:
        return []
    out: list[StyleBreak] = []
    out.extend(_address_breaks(answers, language))
    for trait, yes, no, predicate in _BOOLEAN_TRAITS:
        flags = [predicate(a) for a in answers]
        share = sum(flags) / n
        if 0 < share <= RARE:
            idx = [i for i, f in enumerate(flags) if f]
            out.append(StyleBreak(trait, f"{len(idx)} of {n} answers {yes}; the rest {no}", idx))
        elif 1 - RARE <= share < 1:
            idx = [i for i, f in enumerate(flags) if not f]
            out.append(StyleBreak(trait, f"{len(idx)} of {n} answers {no}; the rest {yes}", idx))
    for trait, classify in (("opening", opening), ("ending", ending)):
        kinds = [classify(a) for a in answers]
        counts = Counter(kinds)
        usual = ", ".join(f"{k} {c / n:.0%}" for k, c in counts.most_common() if c / n > RARE)
        for kind, count in counts.items():
            # Letter-like salutations and sign-offs stand out whenever they are rare; other
            # kinds only where the dataset otherwise keeps to one kind.
            letter_like = kind in ("formal salutation", "sign-off")
            if count / n <= RARE and (letter_like or counts.most_common(1)[0][1] / n >= 0.8):
                idx = [i for i, k in enumerate(kinds) if k == kind]
                out.append(StyleBreak(trait, f"{len(idx)} of {n} answers have the {trait} '{kind}', "
                                             f"which the rest do not use (usual: {usual})", idx))
    return out


def address_form(text: str, language: str | None) -> str | None:
    """'informal', 'formal', 'mixed' or None (no marker, or a language without T/V forms)."""
    if language not in _ADDRESS:
        return None
    informal, formal = _ADDRESS[language]
    t, v = bool(informal.search(text)), bool(formal.search(text))
    return "mixed" if t and v else "informal" if t else "formal" if v else None


def _address_breaks(answers: Sequence[str], language: str | None) -> list[StyleBreak]:
    forms = [address_form(a, language) for a in answers]
    counts = Counter(f for f in forms if f is not None)
    marked = counts["informal"] + counts["formal"] + counts["mixed"]
    if marked < MIN_RECORDS // 2 or language is None:
        return []
    names = dict(zip(("informal", "formal"), ADDRESS_NAMES[language]))
    major = "informal" if counts["informal"] >= counts["formal"] else "formal"
    if counts[major] / marked < 0.8:
        return []  # the dataset itself mixes both; nothing to learn
    minor = "formal" if major == "informal" else "informal"
    idx = [i for i, f in enumerate(forms) if f in (minor, "mixed")]
    if not idx:
        return []
    return [StyleBreak("form of address",
                       f"{len(idx)} answers use {names[minor]} (or mix both), while {counts[major]} of "
                       f"{marked} answers that address the reader use {names[major]}", idx, code="W108")]
