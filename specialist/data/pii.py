"""Possible personal data in text: e-mail addresses, phone numbers, payment card numbers
(Luhn checksum), IBANs (mod-97 checksum) and Polish PESEL numbers (checksum and date).

Checksums keep false alarms low: an order number of 16 digits is reported as a card number
only when it passes the Luhn test."""

from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(r"(?<![\w+])(?:\+|00)\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}(?!\d)"
                   r"|(?<![\w+-])\d{3}[ -]\d{3}[ -]\d{3}(?![\d-])"
                   # Polish landlines: (22) 601-23-45, 22 601 23 45
                   r"|(?<![\w+-])\(?\d{2}\)?[ -]\d{3}[ -]\d{2}[ -]\d{2}(?![\d-])")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
PESEL = re.compile(r"(?<!\d)\d{11}(?!\d)")
# Every kind above needs an @ or nine-plus digits close together: a cheap first pass that
# lets most texts skip the detailed patterns.
_MAYBE = re.compile(r"@|\d(?:[ .()/-]{0,2}\d){8}")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def pesel_ok(pesel: str) -> bool:
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    d = [int(c) for c in pesel]
    if (10 - sum(w * x for w, x in zip(weights, d)) % 10) % 10 != d[10]:
        return False
    month = (d[2] * 10 + d[3]) % 20  # the century is coded into the month (+20, +40, …)
    day = d[4] * 10 + d[5]
    return 1 <= month <= 12 and 1 <= day <= 31


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, value) for every possible piece of personal data in text."""
    found: list[tuple[str, str]] = []
    if not _MAYBE.search(text):
        return found
    for m in EMAIL.finditer(text):
        found.append(("e-mail", m.group()))
    taken: list[tuple[int, int]] = []
    for m in IBAN.finditer(text):
        if iban_ok(m.group()):
            found.append(("IBAN", m.group()))
            taken.append(m.span())
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1 and not _inside(m.span(), taken):
            found.append(("card number", m.group()))
            taken.append(m.span())
    for m in PESEL.finditer(text):
        if pesel_ok(m.group()) and not _inside(m.span(), taken):
            found.append(("PESEL", m.group()))
            taken.append(m.span())
    for m in PHONE.finditer(text):
        if not _inside(m.span(),
                       taken) and sum(c.isdigit() for c in m.group()) >= 9 and not _in_longer_number(text, *m.span()):
            found.append(("phone", m.group().strip()))
    return found


def _in_longer_number(text: str, start: int, end: int) -> bool:
    """Digit groups go on before or after the match: an account or card number, not a phone."""
    before, after = text[max(0, start - 2):start], text[end:end + 2]
    return bool(re.search(r"\d[ -]?$", before) or re.match(r"[ -]?\d", after))


def _inside(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(s < span[1] and span[0] < e for s, e in taken)
