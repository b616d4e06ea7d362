"""`specialist export` runs what it wrote against the run: parity.json, the verdict, and refusal
of broken exports (a template without its end-of-turn token, altered weights)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from specialist.export.parity import (
    LLAMA_CPP_TOLERANCE,
    NO_LLAMA_CPP,
    SAME,
    CheckSettings,
    Tolerance,
    check_export,
    compare_answers,
    ollama_prompt,
)
from specialist.inference.generator import Answer
from specialist.run_folder import read_summary
from tests.helpers import make_adapter_run, write_run_files

QUICK = CheckSettings(limit=3, max_new_tokens=8)
EVAL = [
    ("Jak długo trwa wysyłka?", "Dwa dni robocze."),
    ("Poleć kawę do espresso.", "Brazylia Santos."),
    ("What is the capital of France?", "Paris."),
    ("Czy macie kawę bezkofeinową?", "Tak, Kolumbię decaf."),
]


@pytest.fixture(scope="module")
def run(lively_chat_model, tmp_path_factory) -> Path:
    """A LoRA run whose run.json records its eval data (relative to the run folder)."""
    out = make_adapter_run(lively_chat_model, tmp_path_factory.mktemp("run-parity"))
    (out / "eval.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n" for p, c in EVAL),
        encoding="utf-8",
    )
    write_run_files(out, base_model=str(lively_chat_model), eval_data="eval.jsonl")
    return out


QUICK_ARGS = ("--check-limit", "3", "--check-max-new-tokens", "8")


def export_merged(run: Path, out: Path, *options: str | Path) -> tuple[str | Path, ...]:
    return ("export", "--model", run, "--format", "merged", "--out", out, *options)


def by_name(parity) -> dict[tuple[str, str], object]:
    return {(c.artefact, c.name): c for c in parity.checks}


def test_merged_export_proves_itself_and_writes_parity_json(run, tmp_path, run_cli):
    out = tmp_path / "merged"
    proc = run_cli(*export_merged(run, out, *QUICK_ARGS))
    assert proc.exit_code == 0, proc.stderr
    assert f"parity: {SAME} (see {out / 'parity.json'})\n" in proc.stdout  # one line
    doc = json.loads((out / "parity.json").read_text(encoding="utf-8"))
    assert doc["ok"] and doc["verdict"] == SAME and doc["prompts"] == 3 and doc["data"].endswith("eval.jsonl")
    assert doc["tolerance"] == {"min_identical": 0.75, "min_chrf": 90.0, "max_task_drop": 5.0}
    checks = {(c["artefact"], c["name"]): c for c in doc["checks"]}
    assert set(checks) == {("merged", "template"), ("merged", "ends"), ("merged", "answers")}
    assert all(c["status"] == "pass" for c in checks.values())
    assert checks[("merged", "answers")]["figures"]["identical"] == 1.0  # float32 merge: greedy answers are the run's
    assert checks[("merged", "template")]["figures"]["conversations"] == 3 + 2  # eval prompts + probes


def test_no_check_writes_no_parity_and_a_missing_check_data_is_usage(run, tmp_path, run_cli):
    proc = run_cli(*export_merged(run, tmp_path / "m", "--no-check"))
    assert proc.exit_code == 0, proc.stderr
    assert not (tmp_path / "m" / "parity.json").exists() and "parity:" not in proc.stdout
    proc = run_cli(*export_merged(run, tmp_path / "x", "--check-data", tmp_path / "nope.jsonl"))
    assert proc.exit_code == 2 and "nope.jsonl" in proc.stderr and not (tmp_path / "x").exists()
    # a run trained elsewhere: its eval data is not here, so the answers are not compared (and it is said)
    moved = tmp_path / "moved-run"
    shutil.copytree(run, moved)
    write_run_files(moved, base_model=read_summary(run).base_model, eval_data="/elsewhere/eval.jsonl")
    parity = check_export(str(moved), "merged", tmp_path / "m", QUICK)
    assert [(c.name, c.status) for c in parity.checks] == [("template", "pass"), ("answers", "skipped")]
    assert parity.verdict == (
        f"{SAME} (not checked: merged answers: the run's eval_data /elsewhere/eval.jsonl "
        "is not here (give --check-data FILE))"
    )


def test_altered_weights_are_refused_with_exit_1(run, tmp_path, monkeypatch, run_cli):
    """In process, so the merge can be sabotaged: the CLI names what differs and exits 1."""
    import specialist.export.build as build

    real = build.save_merged

    def altered(loaded, folder, outtype="auto"):
        with torch.no_grad():
            loaded.model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)
        real(loaded, folder, outtype)

    monkeypatch.setattr(build, "save_merged", altered)
    out = tmp_path / "merged"
    proc = run_cli(*export_merged(run, out, *QUICK_ARGS))
    assert proc.exit_code == 1, proc.stdout
    assert "\nparity: differs: merged answers: " in proc.stdout
    doc = json.loads((out / "parity.json").read_text(encoding="utf-8"))
    answers = next(c for c in doc["checks"] if c["name"] == "answers")
    assert not doc["ok"] and answers["status"] == "fail" and answers["figures"]["identical"] < 0.75
    assert next(c for c in doc["checks"] if c["name"] == "template")["status"] == "pass"  # only the weights changed


def test_a_template_without_its_end_of_turn_token_is_refused(run, tmp_path):
    from specialist.export.build import export

    out = tmp_path / "merged"
    export(str(run), "merged", out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    template_file = out / "chat_template.jinja"
    if template_file.exists():  # newer transformers keep the template in its own file
        template_file.write_text(template_file.read_text(encoding="utf-8").replace("<|im_end|>", ""), encoding="utf-8")
    else:
        config["chat_template"] = config["chat_template"].replace("<|im_end|>", "")
        config_path.write_text(json.dumps(config), encoding="utf-8")
    parity = check_export(str(run), "merged", out, QUICK)
    template = by_name(parity)[("merged", "template")]
    assert template.status == "fail" and "differs from training's on 5 of 5" in template.detail
    assert "<|im_end|>" in template.detail  # where: the first differing characters
    assert parity.verdict.startswith("differs: merged template:")
    assert (
        by_name(parity)[("merged", "prompt tokens")].detail
        == "the prompt tokens differ from the run's on 3 of 3 prompts"
    )
    assert not json.loads((out / "parity.json").read_text(encoding="utf-8"))["ok"]


def test_ollama_template_matches_training_and_a_broken_modelfile_is_refused(run, tmp_path):
    from specialist.export.build import export

    out = tmp_path / "ollama"
    result = export(str(run), "ollama", out, "q8_0", check=QUICK)
    checks = by_name(result.parity)
    assert checks[("ollama", "template")].status == "pass"  # the GGUF's template and EOS
    assert [c.status for c in result.parity.checks if c.name == "template"] == ["pass", "pass"]
    assert "parity.json" in result.files
    assert (
        result.parity.tolerance == LLAMA_CPP_TOLERANCE
    )  # llama.cpp's answers drift word by word: closeness, not identity
    if importlib.util.find_spec("llama_cpp") is None:
        answers = checks[("ollama", "answers")]
        assert answers.status == "skipped" and answers.detail == NO_LLAMA_CPP
        assert result.parity.verdict == f"{SAME} (not checked: ollama answers: {NO_LLAMA_CPP})"
    modelfile = out / "Modelfile"
    good = modelfile.read_text(encoding="utf-8")
    # the answer's end-of-turn token dropped from the TEMPLATE (the stop still there)
    assert "{{ .Response }}<|im_end|>" in good
    modelfile.write_text(good.replace("{{ .Response }}<|im_end|>", "{{ .Response }}"), encoding="utf-8")
    (failed,) = check_export(str(run), "ollama", out, QUICK).failed
    assert (failed.artefact, failed.name) == (
        "ollama",
        "template",
    ) and "differs from training's on 3 of 5" in failed.detail
    # no stop on the end-of-turn token: a model that never ends
    modelfile.write_text(good.replace('PARAMETER stop "<|im_end|>"\n', ""), encoding="utf-8")
    (failed,) = check_export(str(run), "ollama", out, QUICK).failed
    assert "does not stop on the end-of-turn token '<|im_end|>'" in failed.detail


# ---------------------------------------------------------------- the pieces
def test_ollama_prompt_follows_ollamas_rule_for_legacy_templates():
    template = "{{ if .System }}S[{{ .System }}]U[{{ .Prompt }}]{{ else }}U[{{ .Prompt }}]{{ end }}{{ .Response }}<E>"
    assert ollama_prompt(template, [{"role": "user", "content": "q"}]) == "U[q]"
    assert (
        ollama_prompt(template, [{"role": "system", "content": "s"}, {"role": "user", "content": "{{ .Prompt }}"}])
        == "S[s]U[{{ .Prompt }}]"
    )  # one pass: a message is never read as template
    turns = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert ollama_prompt(template, turns) == "S[s]U[a]b<E>U[c]"  # earlier exchanges in full, the system once
    with pytest.raises(ValueError):
        ollama_prompt("{{ .Prompt }}", turns)


def answers(*specs: tuple[str, str]) -> list[Answer]:
    return [Answer(text, 3, 4, reason, 0.0) for text, reason in specs]


def test_compare_answers_stops_identity_and_task_metrics():
    tol = Tolerance()
    run = answers(("Dwa dni robocze.", "stop"), ("Brazylia Santos.", "stop"), ("Paris", "length"))
    refs = ["Dwa dni robocze.", "Brazylia Santos.", "Paris."]
    ids = [[1, 2], [3], [4]]
    same = compare_answers("gguf", run, run, ids, ids, refs, tol)
    assert [c.status for c in same] == ["pass", "pass"]
    assert "runs out of tokens on 1" in same[0].detail  # the run's own cut answer is said, not blamed
    # the export never ends the second answer by itself, and says something else
    drift = answers(
        ("Dwa dni robocze.", "stop"), ("Brazylia Santos. Brazylia Santos. Brazylia", "length"), ("Paris", "length")
    )
    ends, ans = compare_answers("gguf", run, drift, ids, ids, refs, tol)
    assert ends.status == "fail" and ends.figures["lost_stop"] == 1
    assert ans.status == "fail" and "67% of answers identical" in ans.detail and "task chrf" in ans.detail
    # the prompt tokens differ: a template or tokenizer that is not training's
    (tokens, *_) = compare_answers("gguf", run, run, ids, [[1, 2], [3, 9], [4]], refs, tol)
    assert tokens.name == "prompt tokens" and tokens.status == "fail" and "1 of 3 prompts" in tokens.detail


def test_an_interrupted_check_leaves_no_artefact_without_its_parity(run, tmp_path, monkeypatch):
    """The check runs on the folder before it is moved into place: Ctrl-C during it keeps the old
    folder (here: none), not a new artefact whose parity.json was never written."""
    import specialist.export.build as build
    from specialist.export.build import export

    seen: list[list[str]] = []

    def interrupted(model_ref, fmt, folder, settings):
        seen.append(sorted(p.name for p in Path(folder).iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "check_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(str(run), "merged", tmp_path / "merged", check=CheckSettings(limit=1, max_new_tokens=4))
    assert seen and "model.safetensors" in seen[0]  # the artefact was complete when the check began
    assert list(tmp_path.iterdir()) == []
