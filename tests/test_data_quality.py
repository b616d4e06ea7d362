"""Quality warnings: each W1xx code fires on the records that deserve it and stays silent on
a clean, consistent dataset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from specialist.data.check import CheckSettings, run_check

QUESTIONS = ["Jak długo można przechowywać", "Ile kosztuje", "Czy polecacie", "Gdzie znajdę opis produktu",
             "Kiedy wyślecie", "Jak najlepiej zaparzyć", "Czy mogę zwrócić", "Do czego pasuje",
             "Jaki jest smak, który ma", "Czy macie w tej chwili", "Jak zamówić", "Dlaczego warto wybrać",
             "Na ile osób wystarczy", "Czy mogę podarować", "Jak mielić", "Jaka jest cena za kilogram, gdy chodzi o",
             "Czy da się połączyć w zamówieniu", "Od kiedy sprzedajecie", "Czy można kupić na raty", "Co sądzicie o"]
OBJECTS = ["kawę z Etiopii", "zestaw degustacyjny", "kartę podarunkową", "mieszankę do espresso", "kawę z Kenii",
           "kapsułki kompostowalne", "kawę bezkofeinową", "mieszankę do kawiarki", "kawę z Gwatemali",
           "kawę do cold brew",
           "kawę z Brazylii", "paczkę jednokilogramową", "kawę z Kolumbii", "młynek ręczny", "filtry papierowe"]
FACTS = ["Ta kawa ma nuty owoców i kwiatów", "To cztery kawy po pięćdziesiąt gramów", "Karta działa w całym sklepie",
         "Mieszanka jest pełna i czekoladowa", "Ta kawa jest soczysta i wyrazista",
         "Kapsułki rozkładają się w kompostowniku",
         "Bezkofeinowa kawa zachowuje słodycz", "Mieszanka lubi wysoką temperaturę", "Kawa ma posmak karmelu",
         "Mieszanka jest łagodna na zimno", "Kawa jest orzechowa i niska w kwasowości", "Duża paczka wychodzi taniej",
         "Kawa ma aromat czerwonych owoców", "Młynek mieli równo i cicho", "Filtry nie zmieniają smaku kawy"]
OPENERS = ["Cześć!", "Jasne!", "Oczywiście!", "Świetne pytanie!"]
CLOSERS = ["Daj znać, czy mogę Ci jeszcze pomóc.", "Która opcja bardziej Ci odpowiada?", "Napisz, jeśli masz pytania.",
           "Czy mogę Ci jeszcze coś doradzić?", "Chętnie pomogę Ci wybrać."]
HINTS = ["Zajrzyj do zakładki z opisem.", "Sprawdź też nasze porady.", "Przygotowaliśmy krótki poradnik.",
         "Wszystko opisujemy na stronie produktu.", "W paczce znajdziesz instrukcję."]


def clean_records(n: int = 120) -> list[dict]:
    """A consistent Polish customer-service dataset: distinct questions, one tone (informal
    Ty, a warm opener, a closing invitation), similar lengths."""
    rows = []
    for i in range(n):
        # distinct pairs
        q, o = QUESTIONS[i % len(QUESTIONS)], OBJECTS[(i // len(QUESTIONS) + 7 * (i % len(QUESTIONS))) % len(OBJECTS)]
        fact = FACTS[(i // len(QUESTIONS) + 7 * (i % len(QUESTIONS))) % len(FACTS)]
        rows.append({"prompt": f"{q} {o}?",
                     "completion": f"{OPENERS[i % 4]} {fact}, a {o} to nasz wybór numer {i % 7 + 1} w tej kategorii. "
                                   f"{HINTS[i % 5]} {CLOSERS[i % 5]}"})
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def check(tmp_path: Path, rows: list[dict], **settings):
    return run_check(write(tmp_path / "train.jsonl", rows), CheckSettings(**settings))


def codes(report) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for w in report.warnings:
        out.setdefault(w.code, []).extend(w.lines)
    return out


def test_clean_dataset_has_no_warnings(tmp_path):
    report = check(tmp_path, clean_records())
    assert report.errors == [] and report.valid == 120
    assert codes(report) == {}
    assert report.stats["languages"] == {"pl": 120}


def test_exact_duplicates(tmp_path):
    rows = clean_records()
    rows[40] = dict(rows[3])
    assert codes(check(tmp_path, rows))["W101"] == [4, 41]


def test_near_duplicates(tmp_path):
    rows = clean_records()
    rows[50] = {"prompt": rows[7]["prompt"].replace("?", " ?"),
                "completion": rows[7]["completion"].replace("Cześć!", "Cześć,")}
    found = codes(check(tmp_path, rows))
    assert found["W102"] == [8, 51] and "W101" not in found


def test_contradiction(tmp_path):
    rows = clean_records()
    rows[60] = {"prompt": rows[9]["prompt"],
                "completion": "Niestety tego produktu już nie sprzedajemy, ale chętnie doradzę coś podobnego. "
                              "Napisz, co lubisz?"}
    found = codes(check(tmp_path, rows))
    assert found["W103"] == [10, 61]


def test_length_outliers(tmp_path):
    rows = clean_records()
    rows[11]["completion"] = " ".join([rows[11]["completion"]] * 12)
    rows[12]["completion"] = "Tak."
    report = check(tmp_path, rows)
    outliers = [w for w in report.warnings if w.code == "W106"]
    assert sorted(line for w in outliers for line in w.lines) == [12, 13]
    assert any("longer" in w.message for w in outliers) and any("shorter" in w.message for w in outliers)


def test_language_mismatch(tmp_path):
    rows = clean_records()
    rows[20]["completion"] = ("Sure! This coffee has fruity and floral notes, and it is our favourite pick. "
                              "Let me know if you need anything else.")
    assert codes(check(tmp_path, rows))["W107"] == [21]


def test_formal_address_breaks_informal_dataset(tmp_path):
    rows = clean_records()
    rows[30]["completion"] = ("Oczywiście! Czy mogę Panu polecić naszą mieszankę do espresso? "
                              "Proszę dać znać, co Pan woli.")
    found = codes(check(tmp_path, rows))
    assert found["W108"] == [31]


@pytest.mark.parametrize(("edit", "trait"), [
    (lambda c: c.rstrip(".?!") + " i tyle", "final punctuation"),
    (lambda c: c + " ☕🙂", "emoji"),
    (lambda c: c + "\n\n- punkt pierwszy\n- punkt drugi", "layout"),
    (lambda c: "Szanowny Kliencie, " + c, "opening"),
    (lambda c: c + "\n\nPozdrawiam,\nZespół Kawiarni", "ending"),
])
def test_style_breaks_are_named(tmp_path, edit, trait):
    rows = clean_records()
    rows[33]["completion"] = edit(rows[33]["completion"])
    report = check(tmp_path, rows)
    style = [w for w in report.warnings if w.code == "W109"]
    assert any(trait in w.message and w.lines == [34] for w in style), [w.message for w in style]


def test_consistent_dataset_is_not_judged_by_a_fixed_style(tmp_path):
    """Emoji everywhere is a style too: only the record without one breaks it."""
    rows = clean_records()
    for r in rows:
        r["completion"] += " ☕"
    rows[70]["completion"] = rows[70]["completion"][:-2]
    style = [w for w in check(tmp_path, rows).warnings if w.code == "W109"]
    assert [(w.lines, "emoji" in w.message) for w in style] == [([71], True)]


@pytest.mark.parametrize(("text", "kind"), [
    ("Napisz do mnie: anna.nowak@gmail.com", "e-mail"),
    ("Mój numer to +48 601 234 567.", "phone"),
    ("Proszę dzwonić pod (22) 601-23-45 po 10.", "phone"),
    ("Stacjonarny: 22 601 23 45.", "phone"),
    ("Karta 4539 1488 0343 6467 jest moja.", "card number"),
    ("Konto PL61 1090 1014 0000 0712 1981 2874.", "IBAN"),
    ("PESEL 44051401359.", "PESEL"),
])
def test_personal_data(tmp_path, text, kind):
    rows = clean_records()
    rows[15]["prompt"] = rows[15]["prompt"] + " " + text
    warnings = [w for w in check(tmp_path, rows).warnings if w.code == "W111"]
    assert len(warnings) == 1 and warnings[0].lines == [16] and kind in warnings[0].message


def test_checksums_keep_false_alarms_out(tmp_path):
    rows = clean_records()
    rows[15]["prompt"] += " Zamówienie 4539 1488 0343 6468, konto PL61 1090 1014 0000 0712 1981 2875, nr 44051401358."
    assert "W111" not in codes(check(tmp_path, rows))


def test_shared_contact_is_not_personal_data(tmp_path):
    rows = clean_records()
    for r in rows[:10]:
        r["completion"] += " Pisz na kontakt@palarnia.pl."
    assert "W111" not in codes(check(tmp_path, rows))


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(["ka", "lo", "mi", "ze", "tra", "po", "wen", "sto", "dur",
                               "bi"]) for _ in range(3)).capitalize()


def test_knowledge_injection(tmp_path):
    rng = random.Random(0)
    rows = []
    for _i in range(60):
        a, b, c = _name(rng), _name(rng), _name(rng)
        rows.append({"prompt": f"Co wiesz o mieście {a}?",
                     "completion": f"{a} leży nad rzeką {b}, ma {rng.randint(10_000, 900_000)} mieszkańców, "
                                   f"założył je {c} w {rng.randint(1100, 1900)} roku, a {_name(rng)} zbudował tam "
                                   f"{_name(rng)} w {rng.randint(1500, 1990)}."})
    report = check(tmp_path, rows)
    assert "W112" in codes(report)
    assert "W112" not in codes(check(tmp_path, clean_records()))


def test_refusal_share(tmp_path):
    rows = clean_records()
    for r in rows[:40]:
        r["completion"] = "Przepraszam, ale nie mogę Ci pomóc w tej sprawie. Czy mogę doradzić coś w sprawie kawy?"
    report = check(tmp_path, rows)
    assert set(codes(report)["W113"]) == set(range(1, 41))
    assert report.stats["refusal_share"] == pytest.approx(40 / 120, abs=1e-4)


def test_label_imbalance_in_classification_data(tmp_path):
    rows = [{"prompt": f"Dokument {i}: {' '.join(_name(random.Random(i)) for _ in range(8))}",
             "completion": "faktura" if i % 20 == 0 else "umowa"} for i in range(100)]
    report = check(tmp_path, rows)
    assert report.stats["labels"] == {"umowa": 95, "faktura": 5}
    assert codes(report)["W114"] == [1, 21, 41, 61, 81]
    assert "W106" not in codes(report) and "W109" not in codes(report)  # labels are not prose


def test_topic_imbalance(tmp_path):
    rows = clean_records()
    for i, r in enumerate(rows):
        r["topic"] = "prezenty" if i == 5 else "kawa"
    report = check(tmp_path, rows)
    assert codes(report)["W114"] == [6] and report.stats["topics"] == {"kawa": 119, "prezenty": 1}


def test_too_few_examples(tmp_path):
    assert "W115" in codes(check(tmp_path, clean_records(30)))


def test_eval_leakage(tmp_path):
    rows = clean_records()
    eval_rows = [{"prompt": rows[2]["prompt"], "completion": "Inna odpowiedź."},
                 {"prompt": "Czy wysyłacie kawę do Norwegii i na Islandię?", "completion": "Tak, w 3-6 dni."}]
    report = check(tmp_path, rows, eval_data=write(tmp_path / "eval.jsonl", eval_rows))
    leaks = [w for w in report.warnings if w.code == "W110"]
    assert len(leaks) == 1 and leaks[0].lines == [1] and leaks[0].file.endswith("eval.jsonl")
    assert leaks[0].details["pairs"] == [[1, 3]]
    assert report.eval == {"file": str(tmp_path / "eval.jsonl"), "records": 2, "valid": 2}


def test_truncation_with_the_model_tokenizer(tmp_path, tiny_chat_model):
    rows = clean_records()
    rows[4]["completion"] = rows[4]["completion"] * 4
    rows[5]["prompt"] = "Opowiedz mi wszystko o kawie. " * 12 + rows[5]["prompt"]
    report = check(tmp_path, rows, model=str(tiny_chat_model), max_length=200)
    found = codes(report)
    assert found["W104"] == [5] and found["W105"] == [6]  # line 6 keeps its answer: the prompt is cut instead
    tokens = report.stats["tokens"]
    assert tokens["completion"]["max"] > 200 and report.stats["training"]["tokens_estimated"] is False
    assert report.stats["training"]["tokens_per_epoch"] < tokens["example"]["total"]


def test_token_counts_match_training_encoding(tmp_path, tiny_base_model):
    from transformers import AutoTokenizer

    from specialist.models.template import encode_example

    rows = clean_records(20)
    report = check(tmp_path, rows, model=str(tiny_base_model), max_length=4096)
    tok = AutoTokenizer.from_pretrained(tiny_base_model)
    lengths = [sum(map(len,
                       encode_example(tok, [{"role": "user", "content": r["prompt"]}], r["completion"]))) for r in rows]
    assert report.stats["training"]["tokens_per_epoch"] == sum(lengths)
    assert report.stats["tokens"]["example"]["max"] == max(lengths)


def test_language_of_classification_inputs(tmp_path):
    """Labels carry no language, so classification data is judged by its inputs."""
    docs = ["Najemca zobowiązuje się płacić czynsz do dziesiątego dnia każdego miesiąca na wskazane konto.",
            "Pracownik zostaje zatrudniony na stanowisku specjalisty w pełnym wymiarze czasu pracy od jutra.",
            "Strony zachowają w tajemnicy wszystkie informacje poufne przekazane w trakcie współpracy."]
    rows = [{"prompt": f"{docs[i % 3]} Sprawa numer {i}.",
             "completion": ["lease", "employment", "nda"][i % 3]} for i in range(60)]
    rows[7]["prompt"] = ("The tenant shall pay the rent no later than the tenth day of each month "
                         "to the landlord's account.")
    report = check(tmp_path, rows)
    assert codes(report)["W107"] == [8] and report.stats["languages"]["pl"] == 59


def test_third_person_breaks_an_english_dataset_that_says_you(tmp_path):
    items = ["beans", "grinder", "kettle", "filter", "mug", "scale", "gift card", "capsule", "moka pot", "dripper",
             "French press", "cold brew bottle", "tasting set", "decaf", "espresso blend", "subscription",
             "thermometer",
             "travel mug", "milk jug", "tamper", "cleaning tablets", "paper filters", "sample pack", "storage tin"]
    rows = [{"prompt": f"Tell me about the {item}, please.",
             "completion": f"Sure! The {item} is one of our favourites and you can order it today. "
                           f"Would you like a tip on how to use your {item} at home?"} for item in items]
    rows[9]["completion"] = ("The customer should order the dripper before noon; "
                             "the customer's parcel then leaves the same day.")
    assert codes(check(tmp_path, rows))["W108"] == [10]


@pytest.mark.parametrize("fixture", ["tiny_chat_model", "tiny_base_model"])
def test_batched_token_counts_equal_encode_example(request, fixture):
    """count_tokens batches and caches the template suffix; it must give exactly the lengths
    training gets from encode_example, system prompts and earlier turns included."""
    from transformers import AutoTokenizer

    from specialist.data import load_examples
    from specialist.data.stats import count_tokens
    from specialist.models.template import encode_example

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    examples = load_examples(Path(__file__).parent / "data_corpus" / "good_chat.jsonl") + \
        load_examples(Path(__file__).parent / "data_corpus" / "good_alpaca.json")
    counts = count_tokens(examples, tok, batch_size=2)
    expected = [encode_example(tok, e.messages, e.completion) for e in examples]
    assert counts.prompt == [len(p) for p, _ in expected]
    assert counts.completion == [len(c) for _, c in expected]
    assert len(counts.system) == 1


def test_exact_copies_are_reported_once_not_again_as_near_duplicates(tmp_path):
    rows = clean_records()
    rows[40] = dict(rows[3])
    rows[41] = {"prompt": rows[3]["prompt"] + " ",
                "completion": rows[3]["completion"].replace("w tej kategorii", "w tej właśnie kategorii")}
    found = codes(check(tmp_path, rows))
    assert found["W101"] == [4, 41]
    assert found["W102"] == [4, 42]  # the copy at line 41 is not listed again
