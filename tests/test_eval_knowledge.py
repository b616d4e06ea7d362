"""specialist eval with a knowledge base: the +knowledge contenders, the fact metrics
(fact accuracy, unsupported numbers, abstention, retrieval recall@k), their report and page.

The metric functions are tested on hand-made answers; the runs use the tiny random models of
tests/conftest.py (their answers are noise, so only the plumbing is checked there)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_eval_run import TRAIN, make_run, write_pairs

KNOWLEDGE = """# Dostawa

Kurier w Polsce kosztuje 14,99 zł, dostawa trwa 1-2 dni robocze. Powyżej 150 zł dostawa jest darmowa.

# Zwroty

Nieotwarte paczki możesz zwrócić w ciągu 14 dni od odbioru.

# Kawa bezkofeinowa

Kawa bezkofeinowa pochodzi z Kolumbii i jest dekofeinizowana metodą Swiss Water.

# Godziny

Obsługa klienta odpowiada od poniedziałku do piątku, 9:00-17:00.
"""
FACTS = [
    {"prompt": "Ile kosztuje dostawa kurierem?",
     "completion": "Dostawa kurierem kosztuje 14,99 zł. Pomóc w czymś jeszcze?",
     "facts": [r"14[,.]99\s*(zł|zl)"], "answerable": True},
    {"prompt": "Ile dni mam na zwrot kawy?",
     "completion": "Nieotwarte paczki przyjmujemy w ciągu 14 dni. Pomóc Ci ze zwrotem?",
     "facts": [r"14\s*dni"], "answerable": True},
    {"prompt": "Czy otwieracie sklep w Gdańsku?",
     "completion": "Nie mam tej informacji, napisz proszę do naszej obsługi.",
     "answerable": False},
]
PE_KNOWLEDGE_PROMPT = "Odpowiadaj tylko na podstawie sekcji Context. Jeśli jej brak, zaproponuj sprawdzenie."


def _write_facts(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shop")
    (d / "system_prompt.txt").write_text("Jesteś asystentem sklepu z kawą. Fakty: dostawa 14,99 zł.", encoding="utf-8")
    (d / "system_prompt_knowledge.txt").write_text(PE_KNOWLEDGE_PROMPT, encoding="utf-8")
    (d / "knowledge").mkdir()
    (d / "knowledge" / "faq.md").write_text(KNOWLEDGE, encoding="utf-8")
    return {"dir": d, "train": write_pairs(d / "train.jsonl", TRAIN), "facts": _write_facts(d / "facts.jsonl", FACTS),
            "knowledge": d / "knowledge"}


@pytest.fixture(scope="module")
def plain_run(tiny_base_model, shop, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "plain", tiny_base_model, shop["train"])


@pytest.fixture(scope="module")
def knowledge_run(tiny_base_model, shop, tmp_path_factory) -> Path:
    """A run folder as `train --knowledge --top-k 2 --set knowledge_min_share=0` leaves it: with a snapshot
    (top 2, no score cut: every prompt gets 2 passages) and a training system prompt."""
    from specialist.knowledge.passages import load_knowledge
    from specialist.knowledge.snapshot import RetrievalSettings, save_snapshot

    run = make_run(tmp_path_factory.mktemp("runs") / "with-kb", tiny_base_model, shop["train"],
                   config={"data": str(shop["train"]), "system_prompt": "Sklep z kawą."})
    save_snapshot(load_knowledge(shop["knowledge"]), run, RetrievalSettings(top_k=2, min_share=0.0))
    return run


def _settings(run: Path, shop: dict[str, Path], **kw):
    from specialist.evaluate.runner import EvalSettings

    base = dict(model=str(run), data=shop["facts"], max_new_tokens=8, batch_size=3, dtype="fp32", seed=1,
                few_shot=2, style_negatives=4, canary=False)
    return EvalSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def recorded(knowledge_run, shop):
    """An eval of the run with a snapshot, without --knowledge, recording every prompt the
    generator is given (per contender, in order)."""
    from specialist.evaluate import runner

    seen: list[list] = []
    generation: list = []  # the settings of each call
    original = runner.answer_locally

    def record(generator, conversations, settings, *args, **kwargs):
        seen.append([list(c) for c in conversations])
        generation.append(settings)
        return original(generator, conversations, settings, *args, **kwargs)

    runner.answer_locally = record
    try:
        doc = runner.run_eval(_settings(knowledge_run, shop))
    finally:
        runner.answer_locally = original
    return doc, seen, generation


NAMES = ["zero-shot", "prompt-engineering", "fine-tuned", "prompt-engineering+knowledge", "fine-tuned+knowledge"]


# ------------------------------------------------------------------ metric functions
def test_fact_accuracy_on_hand_made_answers():
    from specialist.evaluate.facts import fact_accuracy, fact_ok, missing_facts

    facts = [[r"14[,.]99\s*zł"], [r"14\s*dni", r"nieotwart"], [], [r"9:00"]]
    answerable = [True, True, True, False]
    answers = ["Dostawa kosztuje 14.99 ZŁ.", "Zwrot w ciągu 14 dni.", "Cokolwiek.", "Nie wiem."]
    # record 1 right (case-insensitive, either separator), record 2 misses one regex, record 3 has
    # no facts, record 4 is unanswerable: 1 of 2 counted records
    assert fact_accuracy(answers, facts, answerable) == pytest.approx(0.5)
    assert missing_facts(answers[1], facts[1]) == ["nieotwart"]
    assert [fact_ok(a, f, ok) for a, f, ok in zip(answers, facts, answerable)] == [True, False, None, None]
    assert fact_accuracy(["x"], [[]], [True]) is None  # no facts in the eval set: not applicable


def test_unsupported_numbers_and_their_rate():
    from specialist.evaluate.facts import NumberCheck, unsupported_number_rate

    check = NumberCheck([KNOWLEDGE], "pl")
    assert check.unsupported("Dostawa kosztuje 14,99 zł, a zwrot 14 dni.") == []
    assert check.unsupported("Dostawa kosztuje 19,99 zł.") == ["19,99 zl"]
    # a number the question itself states is not invented
    assert check.unsupported("Za 100 zł zamówienia zapłacisz 14,99 zł.", "Zamawiam za 100 zł") == []
    assert check.unsupported("Za 100 zł zamówienia zapłacisz 14,99 zł.") == ["100 zl"]
    lists = [check.unsupported(a) for a in ("Kosztuje 14,99 zł.", "Kosztuje 10% koszyka.", "Bez liczb.",
                                            "Paczka waży 3 kg i kosztuje 25 zł.")]
    assert unsupported_number_rate(lists) == pytest.approx(0.5)  # 2 of 4 answers invent
    assert unsupported_number_rate(None) is None  # no knowledge base


@pytest.mark.parametrize(("answer", "expected"), [
    ("Nie mam tej informacji, napisz proszę do naszej obsługi klienta.", True),
    ("Tego niestety nie wiem, ale chętnie pomogę w sprawie kawy.", True),
    ("Chętnie to sprawdzę dla Ciebie!", True),
    ("Sprawdze to i wroce do Ciebie.", True),  # typed without diacritics
    ("Zapytaj proszę naszą obsługę.", True),
    ("Aktualną cenę zobaczysz na stronie produktu.", True),
    ("I don't know that, please contact our customer service.", True),
    ("Let me check that for you.", True),
    ("Sprawdzę, czy się da, i dam Ci znać.", True),
    ("Tak, otwieramy sklep w Gdańsku w maju.", False),
    ("Gwatemala świetnie sprawdza się w French Pressie.", False),  # "works well", not "checks"
    ("Ta mieszanka sprawdzi się w kawiarce.", False),
    ("Ta mieszanka świetnie się sprawdza w kawiarce.", False),
    ("Dostawa kosztuje 14,99 zł.", False),
    ("We ship within 24 hours.", False),
])
def test_abstention_pattern_polish_and_english(answer, expected):
    from specialist.evaluate.facts import offers_to_check

    assert offers_to_check(answer) is expected


def test_abstention_rate_counts_only_unanswerable_and_not_inventions():
    from specialist.data.example import Example
    from specialist.evaluate.facts import NumberCheck, abstention_rate, score_answers

    pairs = [Example.from_prompt("Ile kosztuje dostawa?", "", facts=(r"14[,.]99",)),
             Example.from_prompt("Czy macie sklep w Gdańsku?", "", answerable=False),
             Example.from_prompt("Ile kosztuje Etiopia?", "", answerable=False),
             Example.from_prompt("Jakie smaki kapsułek?", "", answerable=False),
             Example.from_prompt("Ile kosztuje 1 kg?", "", answerable=False)]
    answers = ["Nie wiem.",                                           # answerable: not counted
               "Nie mam tej informacji, napisz do naszej obsługi.",   # abstains
               "Etiopia kosztuje 49 zł, sprawdź na stronie.",         # hedges but invents a price
               "Mamy smaki Karmel i Wanilia.",                        # states something
               "Cenę zobaczysz na stronie produktu."]                 # abstains
    check = NumberCheck([KNOWLEDGE], "pl")
    result = score_answers(answers, pairs, check)
    assert result.metrics["abstention_rate"] == pytest.approx(2 / 4)
    assert result.metrics["fact_accuracy"] == 0.0
    assert result.metrics["unsupported_number_rate"] == pytest.approx(1 / 5)
    assert [a["abstained"] for a in result.per_answer] == [None, True, False, False, True]
    assert result.per_answer[0] == {"fact_ok": False, "missing_facts": [r"14[,.]99"], "wrong_found": [],
                                    "unsupported_numbers": [], "abstained": None}
    assert result.per_answer[2]["unsupported_numbers"] == ["49 zl"]
    # without a knowledge base numbers are not checked, abstention is the pattern alone
    assert abstention_rate(answers, [p.answerable for p in pairs]) == pytest.approx(3 / 4)
    assert abstention_rate(answers[:1], [True]) is None  # no unanswerable records


def test_wrong_regexes_fail_an_answer_that_names_the_right_keyword_for_the_wrong_thing():
    from specialist.data.example import Example
    from specialist.evaluate.facts import abstained, fact_accuracy, fact_ok, score_answers, wrong_found

    facts, wrong = [r"nespresso"], [r"(?<!nie )do\s+dolce\s+gusto", r"^\s*(jasne|tak)\b"]
    right = "Nasze kapsułki pasują do ekspresów Nespresso, nie do Dolce Gusto."
    mixed = "Pasują do ekspresów Nespresso i do Dolce Gusto."
    assert fact_ok(right, facts, True, wrong) is True
    assert fact_ok(mixed, facts) is True  # the keyword alone passes it
    assert fact_ok(mixed, facts, True, wrong) is False
    assert wrong_found("Jasne! Nespresso.", wrong) == [wrong[1]]
    assert fact_accuracy([right, mixed], [facts, facts], [True, True], [wrong, wrong]) == pytest.approx(0.5)
    # an unanswerable record's `wrong` is the invented answer: hedging words do not save it
    invented = "Kawiarnię w Gdańsku otwieramy w maju, sprawdź na stronie."
    assert abstained(invented) is True
    assert abstained(invented, (), [r"otw\w*[^.]{0,20}gda[nń]sk|gda[nń]sk\w*[^.]{0,20}otw"]) is False
    pairs = [Example.from_prompt("Do jakich ekspresów?", "", facts=tuple(facts), wrong=tuple(wrong)),
             Example.from_prompt("Kiedy Gdańsk?", "", answerable=False, wrong=(r"gda[nń]sk\w*[^.]{0,20}otw",))]
    result = score_answers([mixed, "Nie wiem, zapytaj obsługę. W Gdańsku otwieramy w maju."], pairs, None)
    assert result.metrics["fact_accuracy"] == 0.0 and result.metrics["abstention_rate"] == 0.0
    assert result.per_answer[0]["wrong_found"] == [wrong[0]]


def test_a_bad_wrong_regex_is_a_located_error(tmp_path):
    from specialist.errors import SpecialistError
    from specialist.evaluate.examples import load_eval_examples

    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": "b", "facts": ["b"], "wrong": ["(unclosed"]}) + "\n"
                    + json.dumps({"prompt": "c", "completion": "d", "wrong": "not a list"}) + "\n", encoding="utf-8")
    with pytest.raises(SpecialistError) as err:
        load_eval_examples(path)
    assert f"{path}:1:wrong: invalid regular expression '(unclosed'" in str(err.value)
    assert f"{path}:2:wrong: E007 expected a list" in str(err.value)
    path.write_text(json.dumps({"prompt": "a", "completion": "b", "facts": ["b"], "wrong": ["x"]}) + "\n",
                    encoding="utf-8")
    assert load_eval_examples(path)[0].wrong == ("x",)


def test_retrieval_recall_on_hand_made_passages():
    from specialist.evaluate.facts import retrieval_recall

    retrieved = ["Dostawa\nKurier kosztuje 14,99 zł.", "Zwroty\nW ciągu 30 dni.", "cokolwiek", "Godziny\n9:00"]
    facts = [[r"14[,.]99"], [r"14\s*dni"], [], [r"9:00"]]
    assert retrieval_recall(retrieved, facts, [True, True, True, False]) == pytest.approx(0.5)
    assert retrieval_recall(["x"], [[]], [True]) is None


def test_facts_verdict_names_the_most_accurate_and_the_voice():
    from specialist.evaluate.report import facts_verdict

    def c(name, facts, style):
        return {"name": name, "metrics": {"fact_accuracy": facts, "style_adherence": style,
                                          "unsupported_number_rate": None, "abstention_rate": None}}

    doc = {"contenders": [c("zero-shot", 0.0, 0.1), c("prompt-engineering", 0.2, 0.4), c("fine-tuned", 0.4, 1.0),
                          c("prompt-engineering+knowledge", 0.62, 0.5), c("fine-tuned+knowledge", 0.85, 0.96)]}
    text = facts_verdict(doc)
    assert text.startswith("Facts: fine-tuned+knowledge is right most often (85% vs ")
    assert "40% fine-tuned" in text and "62% prompt-engineering+knowledge" in text
    assert "the voice: fine-tuned+knowledge keeps 96% style adherence vs 100% fine-tuned" in text
    # a tie for the most facts goes to the one that abstains when it cannot know, and says so
    # (the demo's one-epoch run: both +knowledge contenders right on 2 of 9, only one abstaining)
    tied = [c("prompt-engineering+knowledge", 0.22, 0.75), c("fine-tuned+knowledge", 0.22, 1.0)]
    tied[0]["metrics"]["abstention_rate"], tied[1]["metrics"]["abstention_rate"] = 0.0, 1.0
    text = facts_verdict({"contenders": [c("fine-tuned", 0.0, 1.0), *tied]})
    assert text.startswith("Facts: fine-tuned+knowledge is right most often (tied with prompt-engineering+knowledge) "
                           "(22% vs 0% fine-tuned, 22% prompt-engineering+knowledge)"), text
    assert "it abstains on 100% of unanswerable questions" in text
    doc["contenders"] = [dict(x, metrics={**x["metrics"], "fact_accuracy": None}) for x in doc["contenders"]]
    assert facts_verdict(doc) == ""  # no facts measured: no sentence


# ------------------------------------------------------------------ loading facts
def test_facts_and_answerable_are_read(shop):
    from specialist.evaluate.examples import load_eval_examples

    pairs = load_eval_examples(shop["facts"])
    assert [p.facts for p in pairs] == [(r"14[,.]99\s*(zł|zl)",), (r"14\s*dni",), ()]
    assert [p.answerable for p in pairs] == [True, True, False]


@pytest.mark.parametrize(("record", "where"), [
    ({"prompt": "a", "completion": "b", "facts": ["14[,.99"]}, ":2:facts: invalid regular expression"),
    ({"prompt": "a", "completion": "b", "facts": "14"}, ":2:facts: E007"),
    ({"prompt": "a", "completion": "b", "answerable": "no"}, ":2:answerable: E007"),
])
def test_bad_facts_are_located(tmp_path, record, where):
    from specialist.errors import SpecialistError
    from specialist.evaluate.examples import load_eval_examples

    path = _write_facts(tmp_path / "f.jsonl", [FACTS[0], record])
    with pytest.raises(SpecialistError) as info:
        load_eval_examples(path)
    assert info.value.exit_code == 1 and f"f.jsonl{where}" in str(info.value)


def test_cli_bad_facts_regex_is_one_located_line(plain_run, shop, tmp_path, monkeypatch, capsys):
    from specialist import cli

    bad = _write_facts(tmp_path / "facts.jsonl", [FACTS[0], {**FACTS[1], "facts": ["(14 dni"]}])
    monkeypatch.setattr("sys.argv", ["specialist", "eval", "--model", str(plain_run), "--data", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert sum(line.startswith("error:") for line in lines) == 1
    assert f"{bad}:2:facts: invalid regular expression '(14 dni'" in " ".join(err.split())


# ------------------------------------------------------------------ runs
def test_no_knowledge_base_no_knowledge_contenders(plain_run, shop):
    from specialist.evaluate.runner import run_eval

    doc = run_eval(_settings(plain_run, shop))
    assert [c["name"] for c in doc["contenders"]] == NAMES[:3]
    assert doc["knowledge"] is None and doc["retrieval_recall_at_k"] is None
    for c in doc["contenders"]:
        m = c["metrics"]
        assert m["fact_accuracy"] is not None  # the eval set has facts: measured without knowledge too
        assert m["unsupported_number_rate"] is None and m["retrieval_recall_at_k"] is None
        assert m["abstention_rate"] is not None
        assert "passages" not in c["answers"][0]
        assert [a["fact_ok"] is None for a in c["answers"]] == [False, False, True]
        assert c["answers"][2]["abstained"] in (True, False) and c["answers"][0]["unsupported_numbers"] is None


def test_run_snapshot_is_used_without_the_flag(recorded, knowledge_run):
    doc, _, _ = recorded
    assert [c["name"] for c in doc["contenders"]] == NAMES
    k = doc["knowledge"]
    assert str(knowledge_run) in k["origin"] and k["top_k"] == 2 and k["passages"] == 4
    assert k["system_prompt"].endswith("system_prompt_knowledge.txt")
    assert [len(r["hits"]) for r in k["retrieved"]] == [2, 2, 2]
    # the shipping and returns passages are found for their questions
    assert k["retrieved"][0]["hits"][0]["text"].startswith("Kurier w Polsce kosztuje 14,99 zł")
    assert any("14 dni" in h["text"] for h in k["retrieved"][1]["hits"])
    assert doc["retrieval_recall_at_k"] == k["retrieval_recall_at_k"] == 1.0
    by = {c["name"]: c for c in doc["contenders"]}
    for name in NAMES:
        m = by[name]["metrics"]
        assert m["unsupported_number_rate"] is not None and m["fact_accuracy"] is not None
        assert (m["retrieval_recall_at_k"] == 1.0) == name.endswith("+knowledge")
        assert all(isinstance(a["unsupported_numbers"], list) for a in by[name]["answers"])
    ids = [[h["id"] for h in r["hits"]] for r in k["retrieved"]]
    assert [a["passages"] for a in by["fine-tuned+knowledge"]["answers"]] == ids
    assert [a["passages"] for a in by["prompt-engineering+knowledge"]["answers"]] == ids  # one shared retrieval
    assert by["fine-tuned+knowledge"]["prompt"]["knowledge"] is True
    assert doc["verdict"].count("Facts: ") == 1
    json.dumps(doc, allow_nan=False)


def test_knowledge_prompts_carry_the_passages(recorded, knowledge_run):
    from specialist.knowledge.runtime import open_knowledge

    _doc, seen, _ = recorded
    convs = dict(zip(NAMES, seen[:5]))  # the contenders in order; the style classifier's negatives come last
    ctx = open_knowledge(None, str(knowledge_run))
    for i, record in enumerate(FACTS):
        expected, hits = ctx.messages(record["prompt"], system="Sklep z kawą.")
        # byte-identical to what generate/chat/serve build for the run
        assert convs["fine-tuned+knowledge"][i] == expected
        last = convs["fine-tuned+knowledge"][i][-1]["content"]
        assert last.startswith("Context:\n[1] ") and last.endswith(f"Question: {record['prompt']}")
        assert " ".join(hits[0].passage.text.split()) in last
        pe = convs["prompt-engineering+knowledge"][i]
        assert pe[0] == {"role": "system", "content": PE_KNOWLEDGE_PROMPT}
        assert len(pe) == 1 + 2 * 2 + 1 and pe[-1]["content"] == last  # two shots, then the same context
        assert "Context:" not in convs["fine-tuned"][i][-1]["content"]
        assert "Context:" not in convs["prompt-engineering"][i][-1]["content"]
    assert "14,99" in convs["prompt-engineering"][0][0]["content"]  # the normal prompt keeps its fact list


def test_answers_that_read_passages_keep_to_their_prompts_numbers(recorded):
    doc, _, generation = recorded
    grounded = {name: s.grounded_numbers for name, s in zip(NAMES, generation)}
    assert grounded == {name: name.endswith("+knowledge") for name in NAMES}
    assert doc["knowledge"]["grounded_numbers"] is True  # the run's setting (the default), in the report


def test_cli_with_knowledge_writes_passages_and_marks_missing_facts(plain_run, shop, tmp_path, monkeypatch, capsys):
    from specialist import cli
    from specialist.evaluate.html import render_html

    run = tmp_path / "run"
    shutil.copytree(plain_run, run)
    monkeypatch.setattr("sys.argv", ["specialist", "eval", "--model", str(run), "--data", str(shop["facts"]),
                                     "--knowledge", str(shop["knowledge"]), "--top-k", "1", "--few-shot", "1",
                                     "--max-new-tokens", "6", "--style-negatives", "4", "--dtype", "fp32",
                                     "--no-canary", "--free-numbers"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "recall@k" in out and "fact" in out and "Facts:" in out  # the table (narrow: names wrap) and the verdict
    doc = json.loads((run / "eval" / "report.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in doc["contenders"]] == NAMES
    assert doc["knowledge"]["top_k"] == 1 and doc["knowledge"]["origin"] == str(shop["knowledge"])
    assert doc["knowledge"]["grounded_numbers"] is False  # --free-numbers
    page = (run / "eval" / "report.html").read_text(encoding="utf-8")
    assert "<details class='passages'>" in page and "Kurier w Polsce kosztuje 14,99 zł" in page
    assert "faq#dostawa" in page  # the passage id
    # random tiny models never say the right price: marked with the reference's wording
    assert "missing: 14,99 zł" in page
    assert "Knowledge base" in page and "could state any number (grounded numbers off)" in page  # --free-numbers

    # an invented price is highlighted
    ftk = next(c for c in doc["contenders"] if c["name"] == "fine-tuned+knowledge")
    ftk["answers"][0].update(answer="Dostawa kosztuje 19,99 zł albo 14,99 zł.", unsupported_numbers=["19,99 zl"])
    page = render_html(doc)
    assert "<mark title='not in the question nor the knowledge base'>19,99</mark> zł albo 14,99 zł" in page
    assert "unsupported: 19,99 zl" in page
    ftk["answers"][0].update(wrong_found=["(?<!nie )do\\s+dolce"], answer="Pasują do Nespresso i do Dolce Gusto.")
    assert "says what is wrong: do Dolce" in render_html(doc)  # the answer's own words the regex matched


def test_every_coffee_fact_question_accepts_its_own_reference_answer():
    """examples/coffee/facts.jsonl: each reference is right by its own facts and wrong regexes,
    each unanswerable one abstains; else the figures measure the regexes, not the model."""
    from specialist.evaluate.examples import load_eval_examples
    from specialist.evaluate.facts import abstained, fact_ok

    examples = load_eval_examples(Path(__file__).parent.parent / "examples" / "coffee" / "facts.jsonl")
    answerable = [e for e in examples if e.answerable]
    assert len(answerable) >= 40 and len(examples) - len(answerable) >= 10
    assert [e.location for e in answerable if fact_ok(e.completion, e.facts, True, e.wrong) is not True] == []
    assert [e.location for e in examples if not e.answerable and not abstained(e.completion, (), e.wrong)] == []


COFFEE_FACTS = Path(__file__).parent.parent / "examples" / "coffee" / "facts.jsonl"


def test_no_right_abstention_fails_another_unanswerable_questions_wrong_regexes():
    """A `wrong` regex written against one invented answer must not catch how the specialist
    (and every reference) says it does not know: the training's own abstention answers too."""
    from specialist.evaluate.examples import load_eval_examples
    from specialist.evaluate.facts import wrong_found
    from specialist.knowledge.augment import ABSTENTIONS

    examples = load_eval_examples(COFFEE_FACTS)
    abstentions = [*ABSTENTIONS["pl"], *ABSTENTIONS["en"], *(e.completion for e in examples if not e.answerable)]
    caught = [(e.location, a) for e in examples if not e.answerable for a in abstentions if wrong_found(a, e.wrong)]
    assert caught == []


@pytest.mark.parametrize(("question", "answer", "right"), [
    # right answers the coffee `wrong` regexes must let through …
    ("Czy przyjmujecie zwrot napoczętej", "Przyjmujemy tylko nieotwarte paczki, w ciągu 14 dni.", True),
    ("Do jakich ekspresów", "Pasują do ekspresów Nespresso, ale nie pasują do Dolce Gusto.", True),
    ("Do jakich ekspresów", "Są zgodne z Nespresso; nie są kompatybilne z Dolce Gusto.", True),
    ("Do jakich ekspresów", "Do Nespresso. Do Dolce Gusto niestety nie.", True),
    ("Da się jeszcze dopisać", "Nie ma problemu, jeśli paczka nie wyszła jeszcze z palarni.", True),
    ("Kiedy otwieracie kawiarnię", "Nie wiem, kiedy otworzymy kawiarnię w Gdańsku, zapytaj obsługę.", True),
    # … and wrong ones, seen in the specialist's answers, they catch
    ("Do jakich ekspresów", "Pasują do ekspresów zgodnych z Nespresso: do Dolce Gusto, do Nespresso.", False),
    ("Czy przyjmujecie zwrot napoczętej", "Jasne! Zwrot obejmuje tylko nieotwarte paczki, więc przyjmujemy "
                                          "np. otwartej kawy.", False),
    ("Kiedy otwieracie kawiarnię", "Palarnia i kawiarnia otwarto w Gdańsku od razu, szczegóły na naszej stronie.",
     False),
    ("Wyślecie paczkę do Nowego Jorku", "Nie, paczki nie dotarły do Nowego Jorku, sprawdzimy to.", False),
])
def test_coffee_wrong_regexes_on_right_and_wrong_phrasings(question, answer, right):
    from specialist.evaluate.examples import load_eval_examples
    from specialist.evaluate.facts import abstained, fact_ok

    [record] = [e for e in load_eval_examples(COFFEE_FACTS) if e.prompt.startswith(question)]
    verdict = fact_ok(answer, record.facts, True, record.wrong) if record.answerable else abstained(answer, (),
                                                                                                     record.wrong)
    assert verdict is right
