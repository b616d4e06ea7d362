"""Shared fixtures: tiny random models of real architectures with a real tokenizer, built in
seconds, so the fast suite never needs the 270M model."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import build_lively_model, build_tiny_model, save_chat_tokenizer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Module- and session-scoped fixtures run before the per-test home below: they get a home of
# the session's own, never the user's cache.
os.environ["SPECIALIST_HOME"] = tempfile.mkdtemp(prefix="specialist-test-home-")
# --engine auto picks llama.cpp where llama-cpp-python is installed; the suite runs the torch
# engine on every machine (child processes included), and tests of llama.cpp or of auto ask for it
os.environ["SPECIALIST_ENGINE"] = "torch"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's cache: every test gets its own SPECIALIST_HOME, except that the
    real embedded model's converted folder is shared (read-only use) by slow tests."""
    home = tmp_path_factory.mktemp("specialist-home")
    monkeypatch.setenv("SPECIALIST_HOME", str(home))
    return home


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


class _Entry:
    """click's CliRunner drives an object with .main(args); this one runs `specialist` the way
    the installed script does, through specialist.cli.main, which turns a SpecialistError into
    one line on stderr and its exit code."""

    name = "specialist"

    def main(self, args, prog_name=None, **_):
        from specialist.cli import main

        saved = sys.argv
        sys.argv = [self.name, *args]
        try:
            main()
        finally:
            sys.argv = saved


@pytest.fixture
def run_cli(monkeypatch) -> Callable[..., CliResult]:
    """Run `specialist ARGS...` in this process (no new interpreter, no torch re-import) and
    return its exit code, stdout and stderr. An exception the CLI does not turn into an exit
    code propagates, so the test fails with the traceback. Commands that must run in their own
    process (resume after a kill, torchrun, signals, the server) use subprocess instead."""
    from click.testing import CliRunner

    def run(*args: str | Path, input: str | None = None, env: dict[str, str] | None = None) -> CliResult:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        threads = _torch_threads()
        try:
            result = CliRunner().invoke(_Entry(), [str(a) for a in args], input=input, catch_exceptions=False)
        finally:
            if threads:  # commands set torch's thread count for themselves; the test process keeps its own
                import torch

                torch.set_num_threads(threads)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's real tokenizer (49k vocab, ChatML template, pad = eos = <|im_end|>)."""
    return save_chat_tokenizer(tmp_path_factory.mktemp("tok-chat"))


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


@pytest.fixture(scope="session")
def tiny_chat_model(chat_tokenizer_dir, tmp_path_factory) -> Path:
    """Tiny Llama with a chat template (the pad = eos case)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"), chat_tokenizer_dir, "llama")


@pytest.fixture(scope="session")
def tiny_base_model(base_tokenizer_dir, tmp_path_factory) -> Path:
    """Tiny Gemma 3 without a chat template (the default-template path)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), base_tokenizer_dir, "gemma3")


@pytest.fixture(scope="session")
def lively_chat_model(chat_tokenizer_dir, tmp_path_factory) -> Path:
    """The tiny chat model with weights scaled so that its greedy answers are varied text."""
    return build_lively_model(tmp_path_factory.mktemp("lively-chat"), chat_tokenizer_dir)
