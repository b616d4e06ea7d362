"""Synthetic customer-service records for the data-check benchmark: realistic lengths
(a ~50-character question, a ~200-character answer), a few exact and near duplicates,
contradictions and personal data, so every check has work to do.

    python benchmarks/synthetic_data.py OUT.jsonl [--records 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOPICS = ["wysyłka", "zwrot", "płatność", "subskrypcja", "kawa bezkofeinowa", "espresso", "drip", "AeroPress",
          "French press", "cold brew", "kapsułki", "zestaw degustacyjny", "karta podarunkowa", "faktura VAT",
          "punkty lojalnościowe", "oferta dla biur", "mielenie", "data palenia", "paczkomat", "odbiór osobisty"]
QUESTIONS = ["Jak działa {t}?", "Czy mogę prosić o informacje o: {t}?", "Ile kosztuje {t}?",
             "Co polecacie, jeśli chodzi o {t}?",
             "Mam pytanie o {t}, pomożecie?", "Czy {t} jest dostępna od ręki?", "Jakie są zasady dla: {t}?"]
OPENERS = ["Cześć!", "Oczywiście!", "Jasne!", "Świetne pytanie!", ""]
FACTS = ["Paczki wysyłamy w ciągu 24 godzin, a kurier dostarcza je w 1-2 dni robocze.",
         "Dostawa kosztuje 14,99 zł, a od 150 zł jest darmowa.",
         "Nieotwarte opakowania możesz zwrócić w ciągu 14 dni.",
         "Płacisz BLIK-iem, kartą, przelewem albo przy odbiorze.",
         "Subskrypcja co 2 lub 4 tygodnie daje 10% rabatu.",
         "Każdą kawę mielimy na zamówienie pod Twoją metodę parzenia.",
         "Data palenia jest na każdej paczce, najlepiej wypić kawę w ciągu 4-6 tygodni.",
         "Kawa bezkofeinowa z Kolumbii ma nuty czekolady i orzechów.",
         "Zestaw degustacyjny to cztery kawy po 50 g.",
         "Karty podarunkowe mają wartość od 50 do 300 zł."]
CLOSERS = ["Która metoda parzenia jest Twoją ulubioną?", "Czy mogę pomóc w czymś jeszcze?",
           "Daj znać, jeśli chcesz poznać szczegóły.", "Chętnie coś doradzę!"]


def record(rng: random.Random, i: int) -> dict[str, str]:
    topic = rng.choice(TOPICS)
    prompt = rng.choice(QUESTIONS).format(t=topic) + f" (zamówienie {rng.randint(1000, 999999)})"
    facts = " ".join(rng.sample(FACTS, 2))
    completion = f"{rng.choice(OPENERS)} W sprawie: {topic}. {facts} Numer sprawy {i}. {rng.choice(CLOSERS)}".strip()
    return {"prompt": prompt, "completion": completion}


def write_synthetic(path: Path, records: int = 100_000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [record(rng, i) for i in range(records)]
    for k in range(0, records, 1000):  # duplicates, near-duplicates, contradictions, personal data
        j = rng.randrange(records)
        rows[j] = dict(rows[k])
        if k % 3000 == 0:
            rows[(j + 1) % records] = {"prompt": rows[k]["prompt"], "completion": "Niestety nie wiem."}
        if k % 5000 == 0:
            rows[(j + 2) % records]["completion"] += " Napisz do jan.kowalski@example.org."
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_synthetic(args.out, args.records, args.seed))
