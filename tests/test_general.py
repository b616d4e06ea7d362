"""General ability: the shipped canary set, --mix-general, and the canary section of `eval`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specialist.config import load_train_config
from specialist.data.dedup import normalize
from specialist.data.general import (
    CANARY_DIR,
    CanarySet,
    canary_overlap,
    general_count,
    language,
    load_canary,
    mix_general,
    read_general,
)
from specialist.data.language import detect_languages
from specialist.data.example import Example
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
        (records[i].meta["id"], found[i]) for i in found if found[i] != language(records[i])]
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
    general = _write(tmp_path / "general.jsonl", [
        {"messages": [{"role": "user", "content": f"General question {i}?"},
                      {"role": "assistant", "content": f"General answer {i}."}]} for i in range(5)])
    out = tmp_path / "run"
    res = run_cli("train", "--data", data, "--model", tiny_base_model, "--out", out, "--max-steps", "1",
                  "--batch-size", "4", "--mix-general", general, "--mix-share", "0.25")
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
    assert run_cli("train", "--data", data, "--model", tiny_base_model, "--out", plain, "--max-steps", "1",
                   "--batch-size", "4").exit_code == 0
    assert read_summary(plain).general_mix is None and read_summary(plain).training_examples is None


def test_mix_general_share_must_be_a_share(tmp_path):
    with pytest.raises(SpecialistError, match="mix_general_share"):
        load_train_config(overrides={"data": tmp_path / "d.jsonl", "mix_general": "canary", "mix_general_share": 1.5})
