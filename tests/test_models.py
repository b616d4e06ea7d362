"""Stage 1: model references, the cache location, prompt formatting, generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specialist.errors import ModelNotFound
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.cache import specialist_home
from specialist.models.resolve import load_model, load_tokenizer, resolve
from specialist.models.template import (
    DEFAULT_CHAT_TEMPLATE,
    build_messages,
    encode_example,
    encode_prompt,
    render_prompt,
    stop_token_ids,
)


def test_home_respects_xdg_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("SPECIALIST_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert specialist_home() == tmp_path / "xdg" / "specialist"
    monkeypatch.setenv("SPECIALIST_HOME", str(tmp_path / "own"))
    assert specialist_home() == tmp_path / "own"


@pytest.mark.parametrize(("ref", "words"), [
    ("no-such-model", "unknown model reference"),
    ("./missing/folder", "no such file"),
    ("missing.gguf", "no such file"),
])
def test_bad_references_are_located_errors(ref, words):
    with pytest.raises(ModelNotFound, match=words):
        resolve(ref)


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelNotFound, match="not a model"):
        resolve(str(tmp_path))


def test_hub_id_offline_says_how_to_use_a_local_copy():
    source = resolve("some-org/some-model")
    assert source.kind == "hub"
    with pytest.raises(ModelNotFound, match="local folder"):
        load_tokenizer(source)


def test_cli_unknown_model_one_line_exit_2(run_cli):
    proc = run_cli("generate", "--model", "no-such-model", "--prompt", "hi")
    assert proc.exit_code == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) <= 2 and "unknown model reference" in proc.stderr  # rich may wrap one line


def test_cli_models_list_json(run_cli):
    proc = run_cli("models", "list", "--json")
    assert proc.exit_code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    names = {m["name"]: m for m in doc["models"]}
    assert names["gemma-3-270m"]["default"] is True
    assert "smollm2-135m-instruct" in names
    assert all(m["cached"] is False for m in doc["models"])  # the test's own empty home


def test_default_template_for_base_models(tiny_base_model):
    tok = load_tokenizer(str(tiny_base_model))
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    text = render_prompt(tok, build_messages("Czy macie kawy bezkofeinowe?", system="Be brief."))
    assert text == (f"{tok.bos_token}### System:\nBe brief.\n\n"
                    "### User:\nCzy macie kawy bezkofeinowe?\n\n### Assistant:\n")


@pytest.mark.parametrize("fixture", ["tiny_base_model", "tiny_chat_model"])
def test_training_and_generation_prompts_identical(fixture, request):
    tok = load_tokenizer(str(request.getfixturevalue(fixture)))
    messages = build_messages("Jak długo trwa wysyłka?", system="Odpowiadaj po polsku.")
    prompt_ids, completion_ids = encode_example(tok, messages, "Zwykle 1-2 dni robocze.")
    assert prompt_ids == encode_prompt(tok, messages)
    # the completion ends with the end-of-turn token, which generation stops on
    assert completion_ids[-1] in stop_token_ids(tok)
    # and the whole example is the template's own rendering of the conversation
    full = tok.apply_chat_template([*messages, {"role": "assistant", "content": "Zwykle 1-2 dni robocze."}],
                                   tokenize=False)
    assert full.startswith(tok.decode(prompt_ids + completion_ids))


def test_chat_template_end_of_turn_when_pad_is_eos(tiny_chat_model):
    tok = load_tokenizer(str(tiny_chat_model))
    assert tok.pad_token_id == tok.eos_token_id  # the classic trap
    _, completion_ids = encode_example(tok, build_messages("hi"), "hello")
    assert completion_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")


def test_batched_generation_matches_single(tiny_chat_model):
    gen = TorchGenerator(load_model(str(tiny_chat_model), dtype="float32"))
    convs = [build_messages("short"), build_messages("a much longer prompt than the first one, to force padding")]
    settings = GenerationSettings(max_new_tokens=8)
    batched = gen.generate(convs, settings)
    single = [gen.generate([c], settings)[0] for c in convs]
    assert [a.text for a in batched] == [a.text for a in single]
    assert all(a.completion_tokens <= 8 for a in batched)
    assert batched[1].prompt_tokens > batched[0].prompt_tokens


def test_stream_matches_generate(tiny_chat_model):
    gen = TorchGenerator(load_model(str(tiny_chat_model), dtype="float32"))
    conv = build_messages("stream me")
    settings = GenerationSettings(max_new_tokens=12)
    streamed = "".join(gen.stream(conv, settings)).strip()
    assert streamed == gen.generate([conv], settings)[0].text


def test_cli_generate_on_local_folder(tiny_base_model, run_cli):
    proc = run_cli("generate", "--model", str(tiny_base_model), "--prompt", "hi", "--max-new-tokens", "4", "--json")
    assert proc.exit_code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["completion_tokens"] <= 4 and doc["prompt_tokens"] > 0


def test_gguf_file_converts_once_and_loads(tmp_path, monkeypatch):
    from tests.helpers import smollm2_gguf

    source = resolve(str(smollm2_gguf()))
    assert source.kind == "gguf" and Path(source.weights, "config.json").exists()
    assert str(specialist_home()) in source.weights
    # second resolve reuses the cache
    mtime = Path(source.weights, "config.json").stat().st_mtime_ns
    assert resolve(str(smollm2_gguf())).weights == source.weights
    assert Path(source.weights, "config.json").stat().st_mtime_ns == mtime
    tok = load_tokenizer(source)
    assert "<|im_start|>" in render_prompt(tok, build_messages("hi"))


@pytest.mark.slow
def test_embedded_default_generates(monkeypatch):
    from specialist.models.cache import specialist_home as real_home

    monkeypatch.delenv("SPECIALIST_HOME")  # use the user's cache: prepared once
    gen = TorchGenerator(load_model("gemma-3-270m"))
    answer = gen.generate([build_messages("What is the capital of France?")], GenerationSettings(max_new_tokens=16))[0]
    assert answer.text and answer.completion_tokens <= 16
    assert (real_home() / "models" / "gemma-3-270m" / "model.safetensors").exists()
