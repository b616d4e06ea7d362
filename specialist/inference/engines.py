"""--engine: which runtime decodes for generate, chat and serve.

- auto (default): llama.cpp where llama-cpp-python is installed (`make setup` builds it) and no
  GPU is, since on a CPU it answers 4-9x faster than torch for one stream (benchmarks/README.md);
  torch otherwise, when a torch generation path is asked for (--dtype), and for a server of
  several runs (torch keeps their shared base in memory once). The choice is printed;
  SPECIALIST_ENGINE=torch (or llama.cpp) in the environment fixes it.
- torch: the model's own weights (a run's LoRA merged in) in PyTorch, on the
  generation path chosen for this CPU (models.device.generation_path: bf16 with AMX, else
  fp32); --dtype int8 runs int8 weights and activations (faster on x86, but it failed eval
  parity on the coffee specialist: benchmarks/README.md, hence the warning).
- llama.cpp: a GGUF of the same model (exported once and cached: bf16 where llama.cpp
  computes it natively, else 8-bit; default_quant) run by llama.cpp; several times faster for
  one stream on a CPU, with answers close to (not always identical with) torch's. A run's
  kept head and context-aware decoding apply as on torch. --quant q4_0 is faster again but can
  break a small model's answers, hence the warning. A prompt start that requests share (a
  system prompt and its examples, a chat's earlier turns) is read once and kept;
  SPECIALIST_PROMPT_CACHE=off reads every prompt whole."""

from __future__ import annotations

import os
from typing import Any

from specialist.errors import SpecialistError
from specialist.inference.generator import Generator

ENGINES = ("auto", "torch", "llama.cpp")
DEFAULT_ENGINE = "auto"
ENGINE_ENV = "SPECIALIST_ENGINE"  # what auto means on this machine, if set (torch or llama.cpp)
PROMPT_CACHE_ENV = "SPECIALIST_PROMPT_CACHE"  # off: llama.cpp keeps no prompt start between requests
INT8_WARNING = ("[yellow]warning:[/yellow] int8 weights and activations change a small model's answers (on the "
                "coffee specialist: style adherence, rules, chrF and facts well below the fp32/bf16 model's); "
                "compare with --dtype fp32 before relying on them")


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed and new enough for the llama.cpp engine."""
    from specialist.inference.llama_cpp_engine import require_llama_cpp

    try:
        require_llama_cpp()
    except SpecialistError:
        return False
    return True


def gguf_writable(model_ref: str) -> bool:
    """Whether the llama.cpp engine can run this model: a .gguf file, or an architecture the GGUF
    writer knows (models/gguf_writer.py)."""
    from specialist.models.gguf_writer import WRITES
    from specialist.models.resolve import gguf_file, resolve

    if gguf_file(model_ref) is not None:
        return True
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolve(model_ref).weights)
    except Exception:  # noqa: BLE001 - not resolvable or readable here: torch's loader says why
        return False
    return getattr(config, "model_type", None) in WRITES


def choose_engine(engine: str, dtype: str = "auto", quant: str | None = None, models: int = 1,
                  model_ref: str | None = None) -> str:
    """The engine `engine` names; for auto, the one this machine, these options and this model
    (`model_ref`) call for (see the module's docstring), said on stderr."""
    if engine not in ENGINES:
        raise SpecialistError(f"unknown --engine {engine!r}; use one of {', '.join(ENGINES)}", exit_code=2)
    if engine != "auto":
        return engine
    import torch

    preset = os.environ.get(ENGINE_ENV, "auto")
    if preset not in ENGINES:
        raise SpecialistError(f"{ENGINE_ENV}={preset!r}: use one of {', '.join(ENGINES)}", exit_code=2)
    if preset != "auto":
        return preset

    if dtype != "auto":
        chosen, why = "torch", f"--dtype {dtype} is a torch generation path"
    elif quant is not None:
        chosen, why = "llama.cpp", f"--quant {quant} is a GGUF type"
    elif models > 1:
        chosen, why = "torch", "several models share their base in memory"
    elif torch.cuda.is_available():
        chosen, why = "torch", "a GPU"
    elif not llama_cpp_available():
        chosen, why = "torch", "llama-cpp-python is not installed (make llama-cpp)"
    elif model_ref is not None and not gguf_writable(model_ref):
        chosen, why = "torch", "llama.cpp's engine runs Llama and Gemma 3 models, not this one"
    else:
        chosen, why = "llama.cpp", "llama-cpp-python is installed: the faster engine on a CPU"
    from specialist.console import err_console

    err_console.print(f"[dim]engine: {chosen} ({why}; --engine to choose)[/dim]", highlight=False, soft_wrap=True)
    return chosen


def default_quant(llama_cpp: Any) -> tuple[str, str]:
    """The GGUF type llama.cpp runs on this CPU unless --quant says, and why. bf16 where this
    llama.cpp computes it natively: on the coffee specialist it held eval parity with torch fp32
    both in batches and one request at a time, where q8_0 lost 6 points of fact accuracy one
    request at a time (benchmarks/README.md); elsewhere bf16 is converted on every use and
    q8_0 reads half the bytes."""
    from specialist.inference.gguf_cache import DEFAULT_QUANT
    from specialist.inference.llama_cpp_engine import built_with

    if built_with(llama_cpp, "AVX512_BF16"):
        return "bf16", "this CPU computes bf16 natively"
    return DEFAULT_QUANT, "8-bit: this CPU has no native bf16"


def make_generator(model_ref: str, engine: str = DEFAULT_ENGINE, threads: int | None = None,
                   quant: str | None = None, max_batch: int = 8, context_length: int | None = None,
                   dtype: str = "auto", prompt_cache: bool | None = None) -> Generator:
    """The Generator for a model reference on the chosen engine. `threads` caps the CPU
    threads (on a busy shared machine fewer threads than cores decode faster); `quant` is the
    GGUF type llama.cpp runs when the reference is not a .gguf file already; llama.cpp holds
    `max_batch` sequences of `context_length` tokens (default 4096) in its cache. `dtype` is
    the torch engine's generation path (auto: this CPU's; int8, bf16 or fp32); the path taken
    is printed on stderr. `prompt_cache`: whether llama.cpp keeps a prompt start that requests
    share (None: SPECIALIST_PROMPT_CACHE decides, on by default)."""
    from specialist.inference import llama_cpp_engine as lc
    from specialist.models.resolve import gguf_file, load_tokenizer, resolve

    engine = choose_engine(engine, dtype, quant, model_ref=model_ref)
    if engine == "torch":
        if quant is not None:
            raise SpecialistError("--quant applies to --engine llama.cpp only", exit_code=2)
        if threads:
            import torch

            torch.set_num_threads(threads)
        from specialist.console import err_console
        from specialist.inference.precision import choose_path, load_for_generation
        from specialist.inference.torch_engine import TorchGenerator

        try:
            path = choose_path(dtype)
        except ValueError as exc:
            raise SpecialistError(f"--dtype: {exc}", exit_code=2) from exc
        # a merged adapter answers the same at the cost of the base model alone (no LoRA matmuls)
        generator = TorchGenerator(load_for_generation(model_ref, path, merge_adapter=True))
        # said once the model has loaded: a reference that does not load gets its one-line error alone
        err_console.print(f"[dim]generation path: {path.name} ({path.reason})[/dim]", highlight=False, soft_wrap=True)
        if path.int8:
            err_console.print(INT8_WARNING)
        return generator
    if dtype != "auto":
        raise SpecialistError("--dtype applies to --engine torch only (llama.cpp runs --quant)", exit_code=2)
    from specialist.inference.gguf_cache import engine_gguf, load_inputs
    from specialist.models.gguf_writer import OUTTYPES
    from specialist.run_folder import read_kept_vocabulary

    if quant is not None and quant not in OUTTYPES:
        raise SpecialistError(f"unknown --quant {quant!r}; use one of {', '.join(OUTTYPES)}", exit_code=2)
    reuse_starts = prompt_cache_env() if prompt_cache is None else prompt_cache  # a bad setting before any export
    llama_cpp = lc.require_llama_cpp()  # before minutes of loading and exporting
    path = gguf_file(model_ref)
    if path is not None:  # runs as it is, tokenizer read from the file
        if quant is not None:
            raise SpecialistError(f"--quant does not apply to a .gguf model ({path.name} runs as it is)", exit_code=2)
        gguf, tokenizer, kept, inputs = path, lc.gguf_tokenizer(path), None, None
    else:
        if quant == "q4_0":
            from specialist.console import err_console

            err_console.print("[yellow]warning:[/yellow] 4-bit (q4_0) weights can break a small model's answers "
                              "(they do for Gemma 3 270M); compare with --quant q8_0 before relying on them")
        # a run's specialist-sized head (vocabulary.json) writes the same tokens on either engine,
        # from a GGUF of those tokens only, read through the input embeddings (gguf_cache.py)
        run_dir = resolve(model_ref).run_dir
        saved = read_kept_vocabulary(run_dir) if run_dir is not None else None
        kept = saved[0] if saved else None
        if quant is None:
            quant, why = default_quant(llama_cpp)
            from specialist.console import err_console

            err_console.print(f"[dim]llama.cpp weights: {quant} ({why}; --quant to choose)[/dim]", highlight=False,
                              soft_wrap=True)
        gguf, tokenizer = engine_gguf(model_ref, quant, kept), load_tokenizer(model_ref)
        inputs = load_inputs(gguf) if kept is not None else None
    return lc.LlamaCppGenerator(gguf, tokenizer, threads=threads, max_batch=max_batch,
                                context_length=context_length or 4096, kept=kept, inputs=inputs,
                                reuse_starts=reuse_starts)


def prompt_cache_env() -> bool:
    """Whether the llama.cpp engine keeps a prompt start that requests share (on unless
    SPECIALIST_PROMPT_CACHE=off: every prompt read whole, as before the cache existed)."""
    value = os.environ.get(PROMPT_CACHE_ENV, "on").strip().lower()
    if value not in ("on", "off"):
        raise SpecialistError(f"{PROMPT_CACHE_ENV}={value!r}: use on or off", exit_code=2)
    return value == "on"


def _sharing_key(source) -> str | None:
    """Which loaded model a reference can share: its base's weights for a LoRA run and for a
    base model named directly; None for what needs a model of its own (a full fine-tune, a DoRA
    run: PEFT's mixed-adapter batches do not support DoRA)."""
    import json
    from pathlib import Path

    if source.kind == "run" and source.adapter is None:
        return None
    if source.adapter is not None:
        try:
            config = json.loads((Path(source.adapter) / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # load_model reports it
        if config.get("use_dora") or config.get("peft_type", "LORA") != "LORA":
            return None
    weights = Path(source.weights)
    return str(weights.resolve()) if weights.exists() else source.weights


def make_generators(model_refs: list[str], engine: str = DEFAULT_ENGINE, threads: int | None = None,
                    quant: str | None = None, max_batch: int = 8, dtype: str = "auto") -> list[Generator]:
    """One Generator per reference, for a server of several models. On the torch engine the
    references that share a base (LoRA runs of it, and the base itself) share one model in
    memory: the base loaded once with every run's adapter attached beside the others, and one
    generator per reference over it (its tokenizer, its adapter; the base's rows use none).
    A reference alone on its base loads as make_generator does (adapter merged). llama.cpp
    runs merged GGUFs, one model per reference: nothing is shared. `dtype`: the torch weights'."""
    engine = choose_engine(engine, dtype, quant, models=len(model_refs),
                           model_ref=model_refs[0] if len(model_refs) == 1 else None)
    if engine != "torch":
        return [make_generator(ref, engine, threads, quant, max_batch=max_batch) for ref in model_refs]
    if quant is not None:
        raise SpecialistError("--quant applies to --engine llama.cpp only", exit_code=2)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from specialist.inference.torch_engine import BASE_ADAPTER, TorchGenerator
    from specialist.models.resolve import load_adapters, load_model, resolve

    sources = [resolve(ref) for ref in model_refs]
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        groups.setdefault(_sharing_key(source) or f"own model {i}", []).append(i)
    out: list[Generator | None] = [None] * len(model_refs)
    for members in groups.values():
        if not any(sources[i].adapter is not None for i in members) or len(members) == 1:
            # one model of its own (merged, as make_generator), or one base model named more than once
            generator = TorchGenerator(load_model(sources[members[0]], dtype=dtype, merge_adapter=True))
            for i in members:
                out[i] = generator
            continue
        names = [f"adapter{i}" if sources[i].adapter is not None else BASE_ADAPTER for i in members]
        loaded = load_adapters([sources[i] for i in members], names, dtype=dtype)
        for i, name, one in zip(members, names, loaded):
            out[i] = TorchGenerator(one, adapter=name)
    return [g for g in out if g is not None]
