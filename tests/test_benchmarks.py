"""The benchmarks' own logic: registration, the two training recipes' loss coverage, the
common held-out yardstick, and the data-check benchmark's entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import load_benchmark as load


def write_data(path: Path, n: int) -> Path:
    rows = [{"prompt": f"Pytanie numer {i} o kawę?", "completion": f"Odpowiedź {i}: mamy kawę z Etiopii i Kolumbii."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_benchmark_is_registered():
    from specialist.bench import discover

    expected = {"train_speed", "data_check", "eval", "generation", "engine_quality", "multi_serve", "demo"}
    assert expected <= set(discover())


def test_engine_quality_compares_answers_with_the_torch_engine():
    quality = load("bench_engine_quality")
    ref = {0: {"answer": "Dzień dobry! Mamy sernik.", "finish_reason": "stop", "completion_tokens": 8},
           1: {"answer": "Latte kosztuje 16 zł.", "finish_reason": "stop", "completion_tokens": 7}}
    same = quality.compare(ref, ref)
    assert same["chrf_vs_torch"] == 100.0 and same["identical"] == 2 and same["ended_on_their_own"] == 2
    broken = {0: {"answer": "kaw kaw kaw albo kawom albo kawom", "finish_reason": "length", "completion_tokens": 128},
              1: {"answer": "Latte kosztuje 16 zł.", "finish_reason": "stop", "completion_tokens": 7}}
    worse = quality.compare(ref, broken)
    assert worse["identical"] == 1 and worse["ended_on_their_own"] == 1 and worse["chrf_vs_torch"] < 80
    assert worse["mean_answer_tokens"] == 67.5


def test_recipes_train_different_tokens_and_are_scored_alike(tiny_base_model, tmp_path):
    """TRL's prompt/completion path also trains the template text after the end-of-turn token
    (the default template's "\\n\\n" after <eos>); specialist trains answer + end-of-turn only.
    Both adapters are then scored by one function over the same fp32 base."""
    speed, reference = load("bench_train_speed"), load("reference_trl_sft")
    data = write_data(tmp_path / "train.jsonl", 8)
    ours = speed.run_specialist(data, str(tiny_base_model), None, 1, adapter_out=tmp_path / "ours")
    ref = reference.run(data, str(tiny_base_model), None, 1, adapter_out=tmp_path / "ref")
    assert ours["steps"] == ref["steps"] == 1
    assert ours["loss_covers"] == "completion + <|endoftext|>"
    assert ref["loss_covers"] == "completion + <|endoftext|> + '\\n\\n'"
    assert ref["trained_tokens"] > ours["trained_tokens"]

    eval_path = write_data(tmp_path / "eval.jsonl", 4)
    scores = [speed.heldout(str(tiny_base_model), tmp_path / name, eval_path, None) for name in ("ours", "ref")]
    assert all(s["heldout_examples"] == 4 for s in scores)
    assert scores[0]["heldout_tokens"] == scores[1]["heldout_tokens"]  # the same tokens for both


def test_heldout_of_an_untrained_adapter_is_the_base_models_loss(tiny_base_model, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specialist.evaluate.loss import heldout_loss
    from specialist.models.resolve import load_tokenizer, resolve
    from specialist.train.dataset import read_examples

    speed = load("bench_train_speed")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32)
    get_peft_model(base,
                   LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(tmp_path / "a")
    eval_path = write_data(tmp_path / "eval.jsonl", 3)
    got = speed.heldout(str(tiny_base_model), tmp_path / "a", eval_path, None)["heldout_loss"]
    examples = read_examples(eval_path)
    plain = AutoModelForCausalLM.from_pretrained(tiny_base_model, dtype=torch.float32)
    want = heldout_loss(plain, load_tokenizer(resolve(str(tiny_base_model))), [e.messages for e in examples],
                        [e.completion for e in examples]).loss
    assert got == pytest.approx(want, abs=1e-4)


def test_data_check_benchmark_entry_point(monkeypatch):
    module = load("bench_data_check")
    monkeypatch.setattr(module, "QUICK_RECORDS", 300)
    doc = module.bench(quick=True)
    [row] = doc["rows"]
    assert row["records"] == 300 and row["seconds"] > 0 and row["peak_rss_mb"] > 0
    assert isinstance(doc["ok"], bool) and "quick run" in doc["summary"]["goal"]


@pytest.mark.slow
def test_eval_benchmark_runs_on_the_embedded_model():
    doc = load("bench_eval").bench(quick=True)
    assert [r["pass"] for r in doc["rows"]] == ["sequential", "batched", "held-out loss (prefill)"]
    assert all(r["tokens_per_s"] > 0 for r in doc["rows"])


def test_data_check_help_states_the_measured_default_speed():
    import inspect

    from specialist import cli
    from specialist.data.stats import DEFAULT_TOKENS_PER_SECOND

    option = inspect.signature(cli.data_check).parameters["tokens_per_second"].default
    assert f"(default: {DEFAULT_TOKENS_PER_SECOND:g})" in option.help


def test_output_head_benchmark_builds_the_kept_set_as_training_does(tiny_chat_model, tmp_path):
    """The coffee specialist's kept set: every token of its training prompts and answers (with
    their retrieved passages), a small share of the vocabulary, most of held-out text covered."""
    from specialist.config import load_train_config
    from specialist.train.dataset import tokenize_examples
    from specialist.train.run import training_set

    head = load("bench_output_head")
    kept, vocab, tokenizer = head.coffee_kept(str(tiny_chat_model))
    config = load_train_config(overrides={"data": head.COFFEE / "train.jsonl", "model": str(tiny_chat_model),
                                          "knowledge": head.COFFEE / "knowledge", "out": tmp_path / "unused"})
    features = tokenize_examples(tokenizer, training_set(config).train, config.max_length)
    assert {i for f in features for i in f["input_ids"]} <= set(kept)
    assert len(kept) < vocab / 2
    reference = [json.loads(line)["completion"] for line in (head.COFFEE / "eval.jsonl").read_text().splitlines()
                 if line.strip() and "completion" in json.loads(line)]
    assert 0.9 < head.coverage(tokenizer, kept, reference) <= 1.0
    assert head.coverage(tokenizer, kept, ["Привет, как дела?"]) < 0.9


def test_knowledge_rescore_scores_saved_answers_against_todays_fact_questions(tmp_path):
    knowledge = load("bench_knowledge")
    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"prompt": "Do jakich ekspresów?", "completion": "Do Nespresso.", "facts": ["nespresso"],
         "wrong": ["(?<!nie )do\\s+dolce"]},
        {"prompt": "Ile kosztuje dostawa?", "completion": "14,99 zł.", "facts": ["14[,.]99"]},
        {"prompt": "Kiedy Gdańsk?", "completion": "Nie wiem, zapytaj obsługę.", "answerable": False,
         "wrong": ["gda[nń]sk\\w*[^.]{0,20}otw"]},
    ]), encoding="utf-8")
    answers = [  # as an older facts.jsonl scored them: both facts right, the abstention counted
        {"prompt": "Do jakich ekspresów?", "answer": "Pasują do Nespresso i do Dolce Gusto.", "fact_ok": True},
        {"prompt": "Ile kosztuje dostawa?", "answer": "Dostawa to 14,99 zł.", "fact_ok": True},
        {"prompt": "Kiedy Gdańsk?", "answer": "W Gdańsku otwieramy w maju, sprawdź na stronie.", "abstained": True,
         "unsupported_numbers": []},
        {"prompt": "Pytanie spoza zbioru", "answer": "…", "fact_ok": None},
    ]
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"contenders": [
        {"name": "fine-tuned+knowledge", "answers": answers,
         "metrics": {"fact_accuracy": 1.0, "abstention_rate": 1.0}},
        {"name": "zero-shot", "answers": [{"prompt": "x", "answer": "y", "fact_ok": None, "abstained": None}]},
    ]}), encoding="utf-8")
    [row] = knowledge.rescore([report], facts)
    assert row["contender"] == "fine-tuned+knowledge"
    assert (row["reported_fact_accuracy"], row["fact_accuracy"]) == (1.0, 0.5)
    assert (row["reported_abstention_rate"], row["abstention_rate"]) == (1.0, 0.0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"contenders": [{"name": "x", "answers": [{"prompt": "p"}]}]}), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad\.json: not an eval report"):
        knowledge.rescore([bad], facts)
    verdicts = knowledge.rescored(json.loads(report.read_text())["contenders"][0], facts)["verdicts"]
    assert verdicts == {"Do jakich ekspresów?": (False, None), "Ile kosztuje dostawa?": (True, None),
                        "Kiedy Gdańsk?": (None, False)}


def test_train_speed_times_each_recipe_as_a_whole_process():
    speed = load("bench_train_speed")
    cmd = [sys.executable, "-c", "import json, time; time.sleep(0.3); print(json.dumps({'tokens': 1}))"]
    result = speed._finish(speed._start(cmd), cmd)
    assert result["tokens"] == 1 and 0.3 <= result["process_seconds"] < 30


def test_train_speed_judges_the_whole_process_not_the_training_alone():
    speed = load("bench_train_speed")
    ref = {"tokens_per_second": 50.0, "tokens_per_cpu_second": 25.0, "steps": 20, "heldout_loss": 2.0}
    # 10,000 tokens trained at 250 tok/s (5x): a 40 s training span, inside a process of 60 s (3.33x)
    ours = {"tokens": 10_000, "tokens_per_second": 250.0, "process_seconds": 60.0, "tokens_per_cpu_second": 125.0,
            "steps": 20, "heldout_loss": 2.0}
    slow_start = speed.verdict(ours, ref)
    assert (slow_start["speedup"], slow_start["speedup_whole_process"], slow_start["ok"]) == (5.0, 3.33, False)
    assert speed.verdict({**ours, "process_seconds": 48.0}, ref)["ok"] is True  # 4.17x as a whole
    assert speed.verdict({**ours, "process_seconds": 48.0, "heldout_loss": 2.03}, ref)["ok"] is False
    assert speed.verdict({**ours, "process_seconds": 48.0, "steps": 19}, ref)["ok"] is False


def test_train_speed_isa_cap_is_inherited_by_the_recipes_and_reported(monkeypatch):
    from specialist.models import device

    speed = load("bench_train_speed")
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):  # cap_isa sets them: restored after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert "isa_cap" not in speed.machine()
    monkeypatch.setattr(device, "parse_cpu_features", lambda text: frozenset({"avx512_bf16", "avx512", "avx2"}))
    device.cpu_features.cache_clear()
    try:
        assert speed.machine()["bf16_native"] is True
        speed.cap_isa("avx2")
        device.cpu_features.cache_clear()
        info = speed.machine()
        assert info["isa_cap"] == "AVX2" and info["bf16_native"] is False  # specialist trains in fp32 then
        child = ("import json, os; print(json.dumps({'tokens': 1, 'isa': os.environ['ONEDNN_MAX_CPU_ISA'], "
                 "'aten': os.environ['ATEN_CPU_CAPABILITY']}))")
        cmd = [sys.executable, "-c", child]
        seen = speed._finish(speed._start(cmd), cmd)
        assert (seen["isa"], seen["aten"]) == ("AVX2", "avx2")
    finally:
        device.cpu_features.cache_clear()


def test_demo_benchmark_times_each_step_from_its_heading_on_a_cold_cache(tmp_path, monkeypatch):
    demo = load("bench_demo")
    rule = "─" * 20
    timed = [(0.5, f"{rule} 1. Base model: gemma-3-270m {rule}"), (1.0, "gemma-3-270m → /models/x"),
             (2.0, f"{rule} 3. Training: LoRA with the knowledge base {rule}"), (9.0, "step 80/80  loss 1.77"),
             (10.0, f"{rule} 5. Proof: fine-tuning vs prompt engineering, measured {rule}"),
             (11.0, "zero-shot: answering: 20/20 in 0:27"), (12.0, "fine-tuned: answering: 20/20 in 1:02:03")]
    steps, lines = demo.steps_of(timed, 15.0)
    assert steps == [{"step": "1. Base model: gemma-3-270m", "seconds": 1.5},
                     {"step": "3. Training: LoRA with the knowledge base", "seconds": 8.0},
                     {"step": "5. Proof: fine-tuning vs prompt engineering, measured", "seconds": 5.0}]
    assert lines == ["zero-shot: answering: 20/20 in 0:27", "fine-tuned: answering: 20/20 in 1:02:03"]
    real = tmp_path / "real"
    for name in ("models", "gguf", "engine", "eval-cache"):
        (real / name).mkdir(parents=True)
    monkeypatch.setenv("SPECIALIST_HOME", str(real))
    (tmp_path / "t").mkdir()
    home = demo._home(False, tmp_path / "t")
    assert sorted(p.name for p in home.iterdir()) == ["gguf", "models"]  # no exports, no cached answers
    assert (home / "models").resolve() == real / "models"
    assert demo._home(True, tmp_path / "t") == real
