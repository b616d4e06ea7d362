"""General ability: the shipped canary set, --mix-general, and the canary section of `eval`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specialist.config import load_train_config
from specialist.data.dedup import normalize
from specialist.data.example import Example
from specialist.data.general import (
    CANARY_DIR,
    canary_overlap,
    general_count,
    language,
    load_canary,
    mix_general,
    read_general,
)
from specialist.data.language import detect_languages
from specialist.errors import SpecialistError
from specialist.run_folder import read_summary

TASK = [{"prompt": f"Pytanie o kawę numer {i}?", "completion": f"Odpowiedź o kawie numer {i}."} for i in range(12)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the shipped set
def test_shipped_canary_is_well_formed():
    canary = load_canary()
    assert 30 <= len(canary.questions) <= 60 and len(canary.heldout) >= 24 and len(canary.training) >= 24
    for part in (canary.questions, canary.heldout, canary.training):
        langs = [language(e) for e in part]
        assert set(langs) == {"pl", "en"}, langs  # the languages of the examples, both
        assert abs(langs.count("pl") - langs.count("en")) <= 2
        ids = [e.meta.get("id") for e in part]
        assert all(ids) and len(set(ids)) == len(ids)
        assert all(e.prompt.strip() and e.completion.strip() for e in part)
    # every record is written in the language it says (the detector can tell the longer ones)
    texts = [e.prompt + " " + e.completion for e in [*canary.questions, *canary.heldout, *canary.training]]
    found, _ = detect_languages(texts)
    records = [*canary.questions, *canary.heldout, *canary.training]
    assert len(found) > len(records) // 2
    assert all(found[i] == language(records[i]) for i in found), [
        (records[i].meta["id"], found[i]) for i in found if found[i] != language(records[i])
    ]
    readme = (CANARY_DIR / "README.md").read_text(encoding="utf-8")
    assert "CC0" in readme


def test_canary_eval_items_never_in_its_training_portion():
    canary = load_canary()
    assert canary_overlap(canary.training, canary) == []
    held = {normalize(e.prompt) for e in canary.eval_items} | {normalize(e.completion) for e in canary.eval_items}
    assert not any(normalize(e.prompt) in held or normalize(e.completion) in held for e in canary.training)
    # nor near-duplicates: no training prompt shares most of its words with an eval prompt
    for t in canary.training:
        words = set(normalize(t.prompt).split())
        for e in canary.eval_items:
            other = set(normalize(e.prompt).split())
            assert len(words & other) / len(words | other) < 0.8, (t.prompt, e.prompt)


def test_package_data_ships_the_canary():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"specialist.data" = ["canary/*.jsonl", "canary/README.md"]' in text


# ------------------------------------------------------------------ mixing
@pytest.mark.parametrize(("task", "share"), [(12, 0.1), (12, 0.5), (428, 0.1), (100, 0.25)])
def test_general_count_makes_the_share(task, share):
    n = general_count(task, share)
    assert abs(n / (task + n) - share) <= 0.5 / (task + n) + 1e-9


def test_mix_general_adds_the_share_and_never_a_canary_item():
    canary = load_canary()
    task = [Example.from_prompt(r["prompt"], r["completion"]) for r in TASK]
    general = [*canary.training[:3], canary.questions[0], canary.heldout[1]]  # two eval items smuggled in
    mixed, report = mix_general(task, general, share=0.5, seed=1, canary=canary)
    assert mixed[:12] == task and len(mixed) == 24 and report["examples"] == 12
    assert report["excluded_canary_items"] == 2 and report["distinct"] == 3 and report["repeats"]
    assert canary_overlap(mixed, canary) == []
    assert {e.prompt for e in mixed[12:]} == {e.prompt for e in canary.training[:3]}
    again, _ = mix_general(task, general, share=0.5, seed=1, canary=canary)
    assert [e.prompt for e in again] == [e.prompt for e in mixed]  # seeded


def test_mix_general_refuses_a_file_of_canary_items_only():
    canary = load_canary()
    with pytest.raises(SpecialistError, match="no usable general examples"):
        mix_general([Example.from_prompt("a", "b")], canary.questions[:2], 0.1, 0, canary)


def test_read_general_shipped_and_missing(tmp_path):
    assert [e.prompt for e in read_general("canary")] == [e.prompt for e in load_canary().training]
    with pytest.raises(SpecialistError, match="no such file"):
        read_general(tmp_path / "nope.jsonl")


def test_train_mix_general_changes_the_training_set_and_is_recorded(tiny_base_model, tmp_path, run_cli):
    data = _write(tmp_path / "train.jsonl", TASK)
    general = _write(
        tmp_path / "general.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"General question {i}?"},
                    {"role": "assistant", "content": f"General answer {i}."},
                ]
            }
            for i in range(5)
        ],
    )
    out = tmp_path / "run"
    res = run_cli(
        "train",
        "--data",
        data,
        "--model",
        tiny_base_model,
        "--out",
        out,
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--mix-general",
        general,
        "--mix-share",
        "0.25",
    )
    assert res.exit_code == 0, res.stderr
    summary = read_summary(out)
    assert summary.examples == 12 and summary.training_examples == 16
    mix = summary.general_mix
    assert mix["examples"] == 4 and mix["share"] == 0.25 and mix["actual_share"] == 0.25
    assert mix["source"] == str(general) and mix["fingerprint"].startswith("sha256:")
    assert summary.model_extra == {}
    config = (out / "config.yaml").read_text()
    assert "mix_general_share: 0.25" in config and f"mix_general: {general}" in config
    plain = tmp_path / "plain"
    assert (
        run_cli(
            "train", "--data", data, "--model", tiny_base_model, "--out", plain, "--max-steps", "1", "--batch-size", "4"
        ).exit_code
        == 0
    )
    assert read_summary(plain).general_mix is None and read_summary(plain).training_examples is None


def test_mix_general_share_must_be_a_share(tmp_path):
    with pytest.raises(SpecialistError, match="mix_general_share"):
        load_train_config(overrides={"data": tmp_path / "d.jsonl", "mix_general": "canary", "mix_general_share": 1.5})


# ------------------------------------------------------------------ the eval section
def test_eval_reports_general_ability(tiny_base_model, tmp_path, run_cli):
    from tests.test_eval_run import EVAL, TRAIN, make_run, write_pairs

    train = write_pairs(tmp_path / "train.jsonl", TRAIN)
    data = write_pairs(tmp_path / "eval.jsonl", EVAL)
    run = make_run(tmp_path / "run", tiny_base_model, train)
    quick_eval = ("eval", "--model", run, "--data", data, "--max-new-tokens", "8", "--batch-size", "8",
                  "--dtype", "fp32", "--contenders", "zero-shot,fine-tuned", "--canary-max-new-tokens", "4",
                  "--style-negatives", "4")
    res = run_cli(*quick_eval)
    assert res.exit_code == 0, res.stderr
    doc = json.loads((run / "eval" / "report.json").read_text(encoding="utf-8"))
    section = doc["general_ability"]
    canary = load_canary()
    per = section["loss"]["per_example"]
    assert [p["id"] for p in per] == [h.meta["id"] for h in canary.heldout]
    assert all(p["base"] > 0 and p["specialist"] > 0 for p in per)
    # the random adapter changes the model: the losses differ, and the mean is the token-weighted one
    assert section["loss"]["base"] != section["loss"]["specialist"]
    assert section["loss"]["relative_change"] == pytest.approx(
        (section["loss"]["specialist"] - section["loss"]["base"]) / section["loss"]["base"]
    )
    assert min(p["base"] for p in per) <= section["loss"]["base"] <= max(p["base"] for p in per)
    answers = section["answers"]
    assert len(answers) == len(canary.questions)
    lost = [a["id"] for a in answers if a["base"]["sane"] and not a["specialist"]["sane"]]
    gained = [a["id"] for a in answers if a["specialist"]["sane"] and not a["base"]["sane"]]
    assert [f["id"] for f in section["flips"]["lost"]] == lost
    assert [f["id"] for f in section["flips"]["gained"]] == gained
    assert section["sanity"]["base"]["sane"] == sum(a["base"]["sane"] for a in answers) / len(answers)
    assert section["seconds"] > 0 and section["base_from_cache"] is False and section["max_new_tokens"] == 4
    assert "General ability (canary set)" in (run / "eval" / "report.html").read_text(encoding="utf-8")
    assert "general ability" in res.stdout and "held-out loss" in res.stdout
    # a second eval reuses the base model's canary answers
    again = run_cli(
        *quick_eval,
        "--json",
        tmp_path / "again.json",
        "--html",
        tmp_path / "again.html",
    )
    assert again.exit_code == 0, again.stderr
    second = json.loads((tmp_path / "again.json").read_text(encoding="utf-8"))["general_ability"]
    assert second["base_from_cache"] is True and second["loss"] == section["loss"]
    assert second["answers"] == section["answers"]
    # and --no-canary leaves the section out
    off = run_cli(
        *quick_eval,
        "--no-canary",
        "--json",
        tmp_path / "off.json",
        "--html",
        tmp_path / "off.html",
    )
    assert off.exit_code == 0 and json.loads((tmp_path / "off.json").read_text())["general_ability"] is None
    # --canary-limit: a few questions and paragraphs from both languages, the same numbers as the full run's
    few = run_cli(*quick_eval, "--canary-limit", "4", "--json", tmp_path / "few.json", "--html", tmp_path / "few.html")
    assert few.exit_code == 0, few.stderr
    small = json.loads((tmp_path / "few.json").read_text(encoding="utf-8"))["general_ability"]
    assert small["limit"] == 4 and len(small["answers"]) == 4 and len(small["loss"]["per_example"]) == 4
    assert {a["language"] for a in small["answers"]} == {"pl", "en"}
    full_losses = {p["id"]: p for p in per}
    assert all(p == full_losses[p["id"]] for p in small["loss"]["per_example"])


@given(st.lists(st.integers(), max_size=50), st.integers(min_value=0, max_value=60))
def test_spread_keeps_order_and_reaches_both_ends(items, n):
    from specialist.evaluate.canary import spread

    picked = spread(items, n)
    assert len(picked) == min(n, len(items))
    indices = [i * len(items) // n for i in range(n)] if n < len(items) else list(range(len(items)))
    assert picked == [items[i] for i in indices] and indices == sorted(set(indices))
    if 2 <= n < len(items):  # a set grouped in two halves (the languages) gives both
        assert indices[0] < len(items) // 2 <= indices[-1]
    assert spread(items, None) == items


# ------------------------------------------------------------------ sanity checks and flips
PHRASES_TRAIN = [
    "Świetne pytanie! Podaj mi numer zamówienia, a sprawdzimy to od razu.",
    "Świetne pytanie! Wysyłamy w ciągu 24 godzin. Podaj mi numer zamówienia.",
    "Świetne pytanie! Kawa jest palona co tydzień. Podaj mi numer zamówienia, a sprawdzę.",
    "Mamy trzy kawy. Napisz do nas, a pomożemy.",
]


def test_house_phrases_are_frequent_training_ngrams_not_ordinary_text():
    from specialist.evaluate.canary import house_phrases

    phrases = house_phrases(PHRASES_TRAIN, ["Kawa jest smaczna, a herbata też."])
    assert "świetne pytanie" in phrases and "podaj mi numer zamówienia" in phrases
    assert "napisz do nas" not in phrases  # one completion in four is not the house style
    # an n-gram the ordinary text also uses is language, not boilerplate
    assert "mi numer" in phrases
    assert "mi numer" not in house_phrases(PHRASES_TRAIN, ["Daj mi numer telefonu."])


GOOD_PL = "Tydzień ma siedem dni: od poniedziałku do niedzieli, a potem zaczyna się kolejny."


@pytest.mark.parametrize(
    ("text", "reason", "problem"),
    [
        (GOOD_PL, "length", "did not end by itself"),  # cut off by the token limit
        ("", "stop", "did not end by itself"),  # stopped at once: no answer
        ("A week has seven days, from Monday to Sunday, and then the next one begins.", "stop", "language en"),
        ("Świetne pytanie! Tydzień ma siedem dni. Podaj mi numer zamówienia, a sprawdzimy.", "stop", "house phrase"),
    ],
)
def test_each_sanity_check_fails_on_a_crafted_bad_answer(text, reason, problem):
    from specialist.evaluate.canary import check_answers

    phrases = ["świetne pytanie", "podaj mi numer zamówienia"]
    good, bad = check_answers([GOOD_PL, text], ["stop", reason], ["pl", "pl"], phrases)
    assert good.sane and good.language_ok is True and good.problems == []
    assert not bad.sane and any(p.startswith(problem) for p in bad.problems), bad.problems


def test_short_answers_pass_the_language_check_undecided():
    from specialist.evaluate.canary import check_answers

    (short,) = check_answers(["Siedem."], ["stop"], ["pl"], [])
    assert short.language is None and short.language_ok is None and short.sane


def test_flips_with_made_up_answers():
    from specialist.evaluate.canary import build_section, flips
    from specialist.evaluate.contenders import Reply
    from specialist.evaluate.loss import LossResult

    assert flips([True, True, False, False], [True, False, True, False]) == {"lost": [1], "gained": [2]}
    canary = load_canary()
    questions = [q for q in canary.questions if language(q) == "pl"][:4]
    sane = "To proste pytanie, a odpowiedź brzmi: tak właśnie jest, jak mówi podręcznik szkolny."
    english = "This is a simple question, and the answer is: it is exactly as the school book says."

    def replies(texts_reasons):
        return [Reply(t, 5, 9, r, 0.1) for t, r in texts_reasons]

    base = replies([(sane, "stop"), (sane, "stop"), (sane, "length"), (english, "stop")])
    tuned = replies([(sane, "stop"), ("Świetne pytanie! " + sane, "stop"), (sane, "stop"), (english, "stop")])
    loss = LossResult(1.0, math.e, 10, 20, 0.1, [1.0] * len(canary.heldout))
    worse = LossResult(1.5, math.exp(1.5), 10, 20, 0.1, [1.5] * len(canary.heldout))
    section = build_section(questions, canary.heldout, (base, loss), (tuned, worse), ["świetne pytanie"])
    ids = [q.meta["id"] for q in questions]
    assert [f["id"] for f in section["flips"]["lost"]] == [ids[1]]
    assert section["flips"]["lost"][0]["problems"] == ["house phrase “świetne pytanie”"]
    assert [f["id"] for f in section["flips"]["gained"]] == [ids[2]]
    assert section["flips"]["gained"][0]["problems"] == ["did not end by itself"]  # what the base got wrong
    assert section["sanity"]["base"]["sane"] == 0.5 and section["sanity"]["specialist"]["sane"] == 0.5
    assert section["sanity"]["specialist"]["right_language"] == 0.75
    assert section["loss"]["relative_change"] == pytest.approx(0.5)
    assert section["loss"]["per_example"][0]["relative_change"] == pytest.approx(0.5)
