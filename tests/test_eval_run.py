"""specialist eval end to end on tiny random models: run folder → report.json/html.

The run folder is made here (a PEFT adapter with random non-zero weights, so the fine-tuned
contender really differs from the base), the data are a few coffee-shop style pairs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx

from tests.helpers import write_run_files

TRAIN = [
    ("Jakie macie metody parzenia kawy?",
     "Cześć! Mamy kawy do espresso, dripa i French Pressa. Która metoda Cię interesuje?"),
    ("Czy macie kawy bezkofeinowe?", "Oczywiście! Mamy kawę bezkofeinową z Kolumbii. Chcesz spróbować?"),
    ("Jak długo trwa wysyłka?", "Paczki wysyłamy w ciągu 24 godzin, dostawa trwa 1-2 dni robocze."),
    ("Czy mogę zapłacić BLIK-iem?", "Jasne! Przyjmujemy BLIK, kartę i przelew. W czym jeszcze pomóc?"),
    ("Ile kosztuje dostawa?", "Dostawa kurierem kosztuje 14,99 zł, a powyżej 150 zł jest darmowa."),
    ("Czy macie zestaw degustacyjny?", "Tak! Zestaw to cztery kawy po 50 g. Chcesz go zamówić?"),
    ("Jak przechowywać kawę?", "Najlepiej w szczelnym opakowaniu, z dala od światła. Pomóc w czymś jeszcze?"),
    ("Czy macie subskrypcję?", "Oczywiście! Subskrypcja co 2 lub 4 tygodnie daje 10% rabatu."),
]
EVAL = [
    ("Czy wysyłacie za granicę?", "Tak! Wysyłamy do UE w 3-6 dni roboczych. Dokąd mamy wysłać?"),
    ("Czy macie kapsułki?", "Cześć! Mamy kompostowalne kapsułki w trzech smakach. Który smak Cię ciekawi?"),
    ("Jak zwrócić kawę?", "Nieotwarte opakowania przyjmujemy w ciągu 14 dni. Pomóc Ci ze zwrotem?"),
]
RULES = """rules:
  - name: greeting
    pattern: "^(cześć|oczywiście|jasne|tak)"
  - name: brief
    max_words: 40
  - name: no placeholder
    not_pattern: "lorem ipsum"
"""


def write_pairs(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n" for p, c in pairs),
                    encoding="utf-8")
    return path


def make_run(out: Path, base_model: Path, train_data: Path | None, examples: int = 8,
             train_seconds: float = 120.0, config: dict | None = None) -> Path:
    """A run folder as `specialist train` writes it: run.json + adapter/ (with the tokenizer),
    and config.yaml when `config` (the training settings) is given."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specialist.models.template import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(base_model)
    ensure_chat_template(tok)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    torch.manual_seed(1)
    # init_lora_weights=False: random A and B, so the adapter changes the model's answers
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    out.mkdir(parents=True)
    peft.save_pretrained(out / "adapter")
    tok.save_pretrained(out / "adapter")
    write_run_files(out, base_model=str(base_model), examples=examples, train_seconds=train_seconds,
                    dataset=str(train_data) if train_data is not None else None, config=config)
    return out


@pytest.fixture(scope="module")
def coffee(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("coffee")
    (d / "system_prompt.txt").write_text("Jesteś asystentem sklepu z kawą. Odpowiadaj krótko i po polsku.",
                                         encoding="utf-8")
    (d / "eval.yaml").write_text(RULES, encoding="utf-8")
    return {"dir": d, "train": write_pairs(d / "train.jsonl", TRAIN), "eval": write_pairs(d / "eval.jsonl", EVAL)}


@pytest.fixture(scope="module")
def run_dir(tiny_base_model, coffee, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "run", tiny_base_model, coffee["train"])


def _settings(run_dir: Path, coffee: dict[str, Path], **kw):
    from specialist.evaluate.runner import EvalSettings

    base = dict(model=str(run_dir), data=coffee["eval"], max_new_tokens=12, batch_size=2, dtype="fp32", seed=3,
                canary=False)  # the canary section has tests of its own (test_general.py)
    return EvalSettings(**{**base, **kw})


def _fake_endpoint() -> httpx.Client:
    """An OpenAI-compatible endpoint that always answers in the target style."""
    import httpx

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Cześć! Mamy to. Chcesz spróbować?"}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 9, "total_tokens": 309}})
    return httpx.Client(transport=httpx.MockTransport(handle))


@pytest.fixture(scope="module")
def report(run_dir, coffee) -> dict:
    from specialist.evaluate.runner import run_eval

    return run_eval(_settings(run_dir, coffee, endpoint="http://fake/v1", endpoint_model="big-model",
                              endpoint_name="big", endpoint_http_client=_fake_endpoint()))



REQUIRED = ("chrf", "rouge_l", "style_adherence", "rule_pass_rate", "length_spread", "prompt_tokens_mean",
            "latency_ms_p50", "latency_ms_p95", "eval_loss")


def test_report_has_every_contender_and_metric(report):
    assert [c["name"] for c in report["contenders"]] == ["zero-shot", "prompt-engineering", "fine-tuned", "big"]
    for c in report["contenders"]:
        assert set(c) >= {"name", "metrics", "answers"}
        for key in REQUIRED:
            assert key in c["metrics"], (c["name"], key)
        assert len(c["answers"]) == len(EVAL)
        assert set(c["answers"][0]) >= {"prompt", "reference", "answer", "style_score", "prompt_tokens", "latency_ms"}
    local = report["contenders"][:3]
    for c in local:
        assert c["metrics"]["eval_loss"] > 0 and c["metrics"]["latency_ms_p95"] >= c["metrics"]["latency_ms_p50"] > 0
        assert c["metrics"]["rules"].keys() == {"greeting", "brief", "no placeholder"}
    assert report["contenders"][3]["metrics"]["eval_loss"] is None  # an endpoint gives no likelihoods
    assert report["contenders"][3]["metrics"]["prompt_tokens_mean"] == 300  # the endpoint's own count
    assert report["contenders"][3]["metrics"]["rules"]["greeting"] == 1.0
    assert report["verdict"].startswith("For this task fine-tuning gave")
    assert [r["aspect"] for r in report["comparison"]][:6] == [
        "complexity", "upfront cost", "consistency", "data needed", "flexibility", "prompt length"]
    assert report["style_classifier"]["target_examples"] == len(TRAIN)
    json.dumps(report, allow_nan=False)  # strict JSON


def test_prompt_engineering_prompt_is_longer_and_break_even_follows(report):
    by = {c["name"]: c["metrics"] for c in report["contenders"]}
    pe, ft = by["prompt-engineering"]["prompt_tokens_mean"], by["fine-tuned"]["prompt_tokens_mean"]
    assert pe > 3 * ft
    be = report["break_even"]
    assert be["saved_prompt_tokens_per_request"] == pytest.approx(pe - ft)
    assert be["requests"] == math.ceil(120.0 / ((pe - ft) * be["cost_per_prompt_token"]))


def test_base_contenders_run_without_the_adapter(report, run_dir, tiny_base_model, coffee):
    """Zero-shot answers equal those of the base model loaded on its own: the adapter really
    was disabled; the fine-tuned answers come from the adapter."""
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model
    from specialist.models.template import build_messages

    settings = GenerationSettings(max_new_tokens=12, seed=3)
    convs = [build_messages(p) for p, _ in EVAL]
    base = TorchGenerator(load_model(str(tiny_base_model), dtype="fp32")).generate(convs, settings, batch_size=2)
    tuned = TorchGenerator(load_model(str(run_dir), dtype="fp32")).generate(convs, settings, batch_size=2)
    by = {c["name"]: [a["answer"] for a in c["answers"]] for c in report["contenders"]}
    assert by["zero-shot"] == [a.text for a in base]
    assert by["fine-tuned"] == [a.text for a in tuned]
    assert by["fine-tuned"] != by["zero-shot"]


def test_heldout_loss_equals_a_manual_computation(run_dir, coffee):
    """Batched, left-padded, logits_to_keep loss == per-example full-logits cross-entropy over
    the completion tokens only."""
    import torch
    import torch.nn.functional as F

    from specialist.data.example import Example
    from specialist.evaluate.contenders import Contender
    from specialist.evaluate.loss import heldout_loss
    from specialist.models.resolve import load_model
    from specialist.models.template import encode_example

    loaded = load_model(str(run_dir), dtype="fp32")
    shots = [Example.from_prompt(p, c) for p, c in TRAIN[:2]]
    pe = Contender("prompt-engineering", "base", "Odpowiadaj krótko.", shots)
    convs = [pe.messages(Example.from_prompt(p, c)) for p, c in EVAL]
    refs = [c for _, c in EVAL]
    got = heldout_loss(loaded.model, loaded.tokenizer, convs, refs, batch_size=2)
    nll, count, per = 0.0, 0, []
    with torch.no_grad():
        for msgs, ref in zip(convs, refs):
            prompt, comp = encode_example(loaded.tokenizer, msgs, ref)
            logits = loaded.model(input_ids=torch.tensor([prompt + comp])).logits[0].float()
            pred = logits[len(prompt) - 1: len(prompt) + len(comp) - 1]
            s = float(F.cross_entropy(pred, torch.tensor(comp), reduction="sum"))
            nll, count = nll + s, count + len(comp)
            per.append(s / len(comp))
    assert got.completion_tokens == count
    assert got.loss == pytest.approx(nll / count, rel=1e-4)
    assert got.perplexity == pytest.approx(math.exp(nll / count), rel=1e-3)
    assert got.per_example == pytest.approx(per, rel=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_shared_prompt_start_is_read_once_and_gives_the_same_losses(chat_tokenizer_dir, tmp_path, arch):
    """Prompts with a long common start (prompt engineering's system prompt and shots): read once,
    each example continuing from a copy of its cache, the losses equal the batched pass's, on
    Gemma 3 too with a start longer than its sliding window (64 tokens here)."""
    from specialist.data.example import Example
    from specialist.evaluate import loss as L
    from specialist.evaluate.contenders import Contender
    from specialist.models.resolve import load_model
    from specialist.models.template import encode_example
    from tests.helpers import build_tiny_model

    loaded = load_model(str(build_tiny_model(tmp_path / arch, chat_tokenizer_dir, arch)), dtype="fp32")
    shots = [Example.from_prompt(p, c) for p, c in TRAIN[:4]]
    pe = Contender("prompt-engineering", "base", "Odpowiadaj krótko, po polsku i zawsze uprzejmie. " * 3, shots)
    convs = [pe.messages(Example.from_prompt(p, c)) for p, c in EVAL]
    refs = [c for _, c in EVAL]
    encoded = [encode_example(loaded.tokenizer, m, r) for m, r in zip(convs, refs)]
    shared = L.shared_prefix([p for p, _ in encoded])
    assert shared > 64 and all(p[:shared] == encoded[0][0][:shared] for p, _ in encoded)
    got = L.heldout_loss(loaded.model, loaded.tokenizer, convs, refs, batch_size=2)
    want = L.heldout_loss(loaded.model, loaded.tokenizer, convs[:1], refs[:1])  # alone: no shared start
    want_rest = [L.heldout_loss(loaded.model, loaded.tokenizer, [c], [r]).per_example[0] for c, r in zip(convs, refs)]
    assert got.shared_tokens == shared and want.shared_tokens == 0
    assert got.per_example == pytest.approx(want_rest, rel=1e-4)
    assert got.seconds_per_token == got.shared_seconds / shared and 0 < got.shared_seconds < got.seconds
    assert want.seconds_per_token == want.seconds / want.total_tokens


def test_shared_prefix_leaves_each_prompt_its_last_token():
    from specialist.evaluate.loss import shared_prefix

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 4]]) == 3
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 9], [1, 2, 3]]) == 2
    assert shared_prefix([[5], [5, 6]]) == 0 and shared_prefix([[1, 2], [3, 2]]) == 0


def _without_timing(doc: dict) -> dict:
    from specialist.evaluate.report import TIMING_KEYS

    doc = json.loads(json.dumps(doc))
    for c in doc["contenders"]:
        for k in TIMING_KEYS:
            c["metrics"].pop(k, None)
        for a in c["answers"]:
            a.pop("latency_ms")
    doc.pop("break_even")  # its cost per token is a measured time
    doc.pop("verdict")
    for row in doc["comparison"]:
        if row["aspect"] == "break-even":
            row.clear()
    return doc


def test_same_seed_same_report(report, run_dir, coffee):
    from specialist.evaluate.runner import run_eval

    again = run_eval(_settings(run_dir, coffee, endpoint="http://fake/v1", endpoint_model="big-model",
                               endpoint_name="big", endpoint_http_client=_fake_endpoint()))
    assert _without_timing(again) == _without_timing(report)


def test_cli_end_to_end(run_dir, coffee, tmp_path, monkeypatch, capsys):
    from specialist import cli

    run = tmp_path / "run-copy"
    import shutil

    shutil.copytree(run_dir, run)
    monkeypatch.setattr("sys.argv", ["specialist", "eval", "--model", str(run), "--data", str(coffee["eval"]),
                                     "--limit", "2", "--max-new-tokens", "8", "--few-shot", "2", "--dtype", "fp32",
                                     "--no-canary"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    doc = json.loads((run / "eval" / "report.json").read_text(encoding="utf-8"))
    assert doc["examples"] == 2 and doc["settings"]["few_shot"] == 2
    assert [c["name"] for c in doc["contenders"]] == ["zero-shot", "prompt-engineering", "fine-tuned"]
    assert doc["settings"]["rules"].endswith("eval.yaml")  # found next to the data
    page = (run / "eval" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 10
    assert "Answers side by side" in page and doc["verdict"][:40] in page.replace("&#x27;", "'")
    out = capsys.readouterr().out
    assert "style adherence" in out and "fine-tuned" in out
    assert not list((run / "eval").glob(".*"))  # no temporary files left


@pytest.mark.parametrize("case", ["no-run", "bad-rules", "no-train-data"])
def test_cli_bad_input_is_one_line(case, run_dir, coffee, tmp_path, monkeypatch, capsys, tiny_base_model):
    from specialist import cli

    args = ["--model", str(run_dir), "--data", str(coffee["eval"])]
    if case == "no-run":
        args = ["--model", str(tiny_base_model), "--data", str(coffee["eval"])]
    elif case == "bad-rules":
        bad = tmp_path / "rules.yaml"
        bad.write_text("rules:\n  - name: x\n    pattern: \"(\"\n", encoding="utf-8")
        args += ["--rules", str(bad)]
    else:
        run = make_run(tmp_path / "run", tiny_base_model, train_data=None)
        args = ["--model", str(run), "--data", str(coffee["eval"])]
    monkeypatch.setattr("sys.argv", ["specialist", "eval", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error:") and sum(line.startswith("error:") for line in lines) == 1
    assert "Traceback" not in err
    assert {"no-run": "not a run folder", "bad-rules": "rules.yaml:3", "no-train-data": "--train-data"}[case] in err


@pytest.mark.slow
def test_eval_on_the_embedded_model(coffee, tmp_path, monkeypatch):
    """The whole pipeline on Gemma 3 270M (262k vocabulary: the loss pass keeps only the
    completion positions' logits) with an untrained adapter, two prompts."""
    from specialist.evaluate.runner import run_eval
    from specialist.models.resolve import resolve

    monkeypatch.delenv("SPECIALIST_HOME")  # use the user's cache: prepared once
    run = make_run(tmp_path / "run", Path(resolve("gemma-3-270m").weights), coffee["train"])
    doc = run_eval(_settings(run, coffee, dtype="auto", limit=2, max_new_tokens=16, style_negatives=4))
    names = [c["name"] for c in doc["contenders"]]
    assert names == ["zero-shot", "prompt-engineering", "fine-tuned"]
    for c in doc["contenders"]:
        assert all(c["metrics"][k] is not None for k in REQUIRED)
        assert c["metrics"]["eval_loss"] > 0 and math.isfinite(c["metrics"]["eval_loss"])


def test_second_eval_of_another_run_reuses_the_base_answers(tiny_base_model, coffee, tmp_path, monkeypatch):
    """The base model's answers (zero-shot, prompt engineering, style negatives) are cached by
    weights, prompts and settings: a second run of the same base generates only its own answers,
    with the same report; a changed system prompt is generated again."""
    from specialist.evaluate import contenders, runner

    calls: list[int] = []
    real = contenders.answer_locally

    def counting(generator, conversations, *args, **kwargs):
        calls.append(len(conversations))
        return real(generator, conversations, *args, **kwargs)

    monkeypatch.setattr(runner, "answer_locally", counting)
    first_run = make_run(tmp_path / "a", tiny_base_model, coffee["train"])
    second_run = make_run(tmp_path / "b", tiny_base_model, coffee["train"])
    first = runner.run_eval(_settings(first_run, coffee))
    assert len(calls) == 4 and first["cached"] == []  # zero-shot, prompt engineering, fine-tuned, negatives
    calls.clear()
    second = runner.run_eval(_settings(second_run, coffee))
    assert calls == [len(EVAL)]  # only the fine-tuned answers
    assert set(second["cached"]) == {"zero-shot", "prompt-engineering", "style classifier (generic answers)"}
    for name in ("zero-shot", "prompt-engineering"):
        a, b = (next(c for c in doc["contenders"] if c["name"] == name) for doc in (first, second))
        assert [x["answer"] for x in a["answers"]] == [x["answer"] for x in b["answers"]]
        assert a["metrics"]["eval_loss"] == b["metrics"]["eval_loss"]
    calls.clear()
    other_prompt = tmp_path / "other_system.txt"
    other_prompt.write_text("Jesteś baristą.", encoding="utf-8")
    third = runner.run_eval(_settings(second_run, coffee, system_prompt=other_prompt))
    assert set(third["cached"]) == {"zero-shot", "style classifier (generic answers)"}
    assert len(calls) == 2  # prompt engineering (new system prompt) and fine-tuned
    # --no-cache answers again and the fresh answers replace the cached: the eval after it reuses them
    from specialist.evaluate.answer_cache import cache_dir

    for path in cache_dir().glob("*.json"):
        path.write_text("{}", encoding="utf-8")  # damaged: unless refreshed, the next eval answers again
    calls.clear()
    assert runner.run_eval(_settings(first_run, coffee, cache=False))["cached"] == []
    assert len(calls) == 4
    calls.clear()
    again = runner.run_eval(_settings(second_run, coffee))
    assert calls == [len(EVAL)] and set(again["cached"]) == set(second["cached"])


def test_contenders_option_runs_only_the_named_ones(run_dir, coffee):
    from specialist.errors import SpecialistError
    from specialist.evaluate.runner import run_eval

    doc = run_eval(_settings(run_dir, coffee, contenders=("fine-tuned",)))
    assert [c["name"] for c in doc["contenders"]] == ["fine-tuned"]
    assert doc["break_even"] is None and doc["comparison"] == []
    assert doc["contenders"][0]["metrics"]["style_adherence"] is not None
    with pytest.raises(SpecialistError, match="unknown fine-tuned\\+knowledge"):
        run_eval(_settings(run_dir, coffee, contenders=("fine-tuned+knowledge",)))


def test_eval_accepts_a_merged_export(run_dir, coffee, tmp_path):
    """`eval --model EXPORT`: the merged folder answers as the run does, against the same base;
    the run it came from still gives the training data (few-shot, style classifier)."""
    from specialist.evaluate.runner import run_eval
    from specialist.export.build import export

    out = export(str(run_dir), "merged", tmp_path / "merged").out
    kw = dict(limit=2, contenders=("prompt-engineering", "fine-tuned"), cache=False)
    exported, original = run_eval(_settings(out, coffee, **kw)), run_eval(_settings(run_dir, coffee, **kw))
    answers = [[a["answer"] for a in c["answers"]] for c in (exported["contenders"][1], original["contenders"][1])]
    assert answers[0] == answers[1] and any(answers[0])
    assert exported["contenders"][1]["metrics"]["chrf"] == original["contenders"][1]["metrics"]["chrf"]
    # prompt engineering runs on the base model, not on the merged weights
    answers = [[a["answer"] for a in doc["contenders"][0]["answers"]] for doc in (exported, original)]
    assert answers[0] == answers[1]


def test_progress_in_a_log_is_a_line_per_step_start_and_end():
    """Piped to a file, a rich bar draws only at the end: each step says when it starts and ends."""
    import io

    from rich.console import Console

    from specialist.evaluate.runner import _progress

    log = io.StringIO()
    with _progress(Console(file=log, force_terminal=False, width=200)) as step:
        advance = step("zero-shot: answering", 3)
        advance(2)
        assert log.getvalue().splitlines() == ["zero-shot: answering: 3…"]
        advance(1)
        advance(0)  # a late call after the end adds nothing
        step("fine-tuned: answering", 2)(2)  # answers from the cache: all at once
    lines = log.getvalue().splitlines()
    assert lines[0] == "zero-shot: answering: 3…"
    assert re.fullmatch(r"zero-shot: answering: 3/3 in 0:0\d", lines[1])
    assert lines[2] == "fine-tuned: answering: 2…"
    assert re.fullmatch(r"fine-tuned: answering: 2/2 in 0:00", lines[3]) and len(lines) == 4


def test_progress_on_a_terminal_is_a_bar():
    import io

    from rich.console import Console

    from specialist.evaluate.runner import _progress

    screen = io.StringIO()
    with _progress(Console(file=screen, force_terminal=True, width=100)) as step:
        step("zero-shot: answering", 3)(3)
    assert "3/3" in screen.getvalue() and "…" not in screen.getvalue()


def test_eval_answers_every_contender_on_the_llama_cpp_engine(run_dir, tiny_base_model, coffee, tmp_path,
                                                              monkeypatch):
    """`eval --engine llama.cpp` (auto's choice where llama.cpp is installed, as for chat and
    serve): the fine-tuned answers come from the run's GGUF, the base model's contenders, the
    style classifier's generic answers and the canary's base answers from the base model's GGUF,
    each through a stand-in for llama.cpp's C API that runs that model in PyTorch, so every answer
    equals the torch engine's. The answer cache keeps the two engines apart."""
    from specialist.errors import SpecialistError
    from specialist.evaluate import answer_cache
    from specialist.evaluate.runner import run_eval
    from specialist.inference import gguf_cache
    from specialist.inference import llama_cpp_engine as lc
    from specialist.models.resolve import load_model
    from tests.test_llama_cpp_engine import FakeLlamaCpp

    fakes = {str(run_dir): FakeLlamaCpp(load_model(str(run_dir), dtype="float32", merge_adapter=True).model),
             str(tiny_base_model): FakeLlamaCpp(load_model(str(tiny_base_model), dtype="float32").model)}
    current = [fakes[str(run_dir)]]
    monkeypatch.setattr(lc, "require_llama_cpp", lambda: current[0])
    exported = []

    def engine_gguf(ref, outtype="q8_0", kept=None):
        exported.append((ref, outtype))
        current[0] = fakes[ref]  # the engine loads this GGUF next: its stand-in answers
        gguf = tmp_path / f"{len(exported)}.gguf"
        gguf.write_bytes(b"GGUF")
        return gguf

    monkeypatch.setattr(gguf_cache, "engine_gguf", engine_gguf)
    monkeypatch.setattr(answer_cache, "cache_dir", lambda: tmp_path / "eval-cache")
    kw = dict(limit=3, contenders=("prompt-engineering", "fine-tuned"), batch_size=1, canary=True, canary_limit=2,
              canary_max_new_tokens=6, style_negatives=4)
    on_torch = run_eval(_settings(run_dir, coffee, **kw))  # fills the cache with torch's base answers
    on_llama = run_eval(_settings(run_dir, coffee, engine="llama.cpp", quant="bf16", dtype="auto", **kw))
    assert exported == [(str(run_dir), "bf16"), (str(tiny_base_model), "bf16")]
    assert all(f.decode_sizes for f in fakes.values())  # both GGUFs answered
    assert on_llama["cached"] == []  # torch's cached answers are not llama.cpp's
    assert on_llama["settings"]["generation"]["engine"] == "llama.cpp"
    assert on_llama["settings"]["generation"]["quant"] == "bf16"
    assert on_torch["settings"]["generation"]["engine"] == "torch"
    # by default the eval reads every prompt whole
    assert on_llama["settings"]["generation"]["prompt_cache"] is False
    assert not on_torch["settings"]["generation"]["prompt_cache"]
    assert not any(note.startswith("prompt cache:") for note in on_llama["notes"])
    assert not fakes[str(tiny_base_model)].copies
    with pytest.raises(SpecialistError, match=r"--quant applies to --engine llama\.cpp"):
        run_eval(_settings(run_dir, coffee, quant="bf16", engine="torch", **kw))
    for doc_a, doc_b in zip(on_llama["contenders"], on_torch["contenders"]):
        assert [a["answer"] for a in doc_a["answers"]] == [a["answer"] for a in doc_b["answers"]]
        assert doc_a["metrics"]["style_adherence"] == doc_b["metrics"]["style_adherence"]  # same classifier
    assert any(a["answer"] for a in on_llama["contenders"][1]["answers"])
    sections = [d["general_ability"] for d in (on_llama, on_torch)]
    assert sections[0]["answers"] == sections[1]["answers"]
    again = run_eval(_settings(run_dir, coffee, engine="llama.cpp", quant="bf16", dtype="auto", **kw))
    assert set(again["cached"]) >= {"prompt-engineering", "style classifier (generic answers)"}
    # --prompt-cache: prompt engineering's requests (one per batch here) start from their shared
    # start, read once, and answer as torch does; answers cached without it are not reused
    cached = run_eval(_settings(run_dir, coffee, engine="llama.cpp", quant="bf16", dtype="auto", prompt_cache=True,
                                **kw))
    assert cached["settings"]["generation"]["prompt_cache"] is True and "prompt-engineering" not in cached["cached"]
    assert any(note.startswith("prompt cache:") for note in cached["notes"])
    assert fakes[str(tiny_base_model)].copies
    assert [a["answer"] for a in cached["contenders"][0]["answers"]] == [
        a["answer"] for a in on_torch["contenders"][0]["answers"]]
