"""The models one server answers for, each addressed by its name in a request's `model` field.

`specialist serve --model A --model B` names each model after its run folder (a known model or
hub id keeps its reference as its name); `--models FILE` names them explicitly, in a small
YAML or JSON mapping of name → model reference:

    coffee: runs/coffee          # a path relative to the file's folder, or absolute
    coffee-kb: runs/coffee-kb
    legal: runs/legal
    base: gemma-3-270m           # the base model itself answers too (no adapter)

Runs that share a base share its weights in memory (inference.engines.make_generators): the
base is loaded once with each run's LoRA adapter attached beside the others. Each specialist
keeps what its run folder says about answering: its tokenizer and chat template, its knowledge
snapshot, and the system prompt it was trained with (config.yaml `system_prompt`), which chat
requests without a system message get."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from specialist.errors import SpecialistError
from specialist.inference.generator import Generator

if TYPE_CHECKING:
    from specialist.knowledge.runtime import KnowledgeContext


@dataclass
class Specialist:
    """One model the server answers for."""

    name: str
    generator: Generator
    knowledge: KnowledgeContext | None = None
    system: str | None = None  # the run's training system prompt, for chat requests that bring none


@dataclass(frozen=True)
class ModelEntry:
    name: str
    ref: str


def default_name(ref: str) -> str:
    """A path's last part (a run folder's name), else the reference itself (a known model, a hub id)."""
    path = Path(ref).expanduser()
    return path.name if path.exists() else ref


def read_models_file(path: Path) -> list[ModelEntry]:
    """name → model reference, from a YAML or JSON mapping; relative paths are read from the
    file's folder. Errors are one located line (exit 2)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecialistError(f"{path}: unreadable ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SpecialistError(f"{where}: not valid YAML/JSON ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(doc, dict) or not doc:
        raise SpecialistError(
            f"{path}: expected a mapping of model names to model references (e.g. `coffee: runs/coffee`)"
        )
    entries = []
    for name, ref in doc.items():
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise SpecialistError(f"{path}: {name!r}: a model name must be printable, non-empty text")
        if not isinstance(ref, str) or not ref.strip():
            raise SpecialistError(
                f"{path}: {name}: expected a model reference (a run folder, a model folder, "
                f"a .gguf file, a known model or a hub id), got {ref!r}"
            )
        ref = ref.strip()
        local = path.parent / Path(ref).expanduser()
        if not Path(ref).expanduser().is_absolute() and local.exists():
            ref = str(local)
        entries.append(ModelEntry(name.strip(), ref))
    return entries


def model_entries(refs: list[str], models_file: Path | None = None) -> list[ModelEntry]:
    """The --model references (named after themselves) then the --models file's; two models
    may not answer to one name."""
    entries = [ModelEntry(default_name(ref), ref) for ref in refs]
    if models_file is not None:
        entries += read_models_file(models_file)
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise SpecialistError(
                f"two models are named {entry.name!r}; name them apart in a --models file (name: reference)"
            )
        seen.add(entry.name)
    return entries


def training_system_prompt(ref: str) -> str | None:
    """The system prompt a run was trained with (None for anything but a run folder)."""
    from specialist.run_folder import is_run_dir, read_config

    if not is_run_dir(ref):
        return None
    system = read_config(ref).get("system_prompt")
    return system.strip() or None if isinstance(system, str) else None


def load_specialists(
    entries: list[ModelEntry],
    engine: str = "auto",
    threads: int | None = None,
    quant: str | None = None,
    max_batch: int = 8,
    knowledge_of: Callable[[str], KnowledgeContext | None] | None = None,
    dtype: str = "auto",
) -> list[Specialist]:
    """Load every entry's model (runs of one base share it) with its knowledge base
    (`knowledge_of(ref)`) and training system prompt."""
    from specialist.inference.engines import make_generators

    # what can fail fast (a bad knowledge base, run folder or config) fails before minutes of loading
    knowledge = [knowledge_of(e.ref) if knowledge_of else None for e in entries]
    systems = [training_system_prompt(e.ref) for e in entries]
    generators = make_generators([e.ref for e in entries], engine, threads, quant, max_batch=max_batch, dtype=dtype)
    if len(entries) > 1:
        from specialist.console import err_console

        shared: dict[int, list[str]] = {}
        for entry, generator in zip(entries, generators):
            shared.setdefault(id(generator.shared_model), []).append(entry.name)
        for names in shared.values():
            if len(names) > 1:
                err_console.print(
                    f"{', '.join(names)}: one base model in memory, batched together",
                    style="dim",
                    markup=False,
                    highlight=False,
                )
        from specialist.inference.llama_cpp_engine import LlamaCppGenerator

        if any(isinstance(g, LlamaCppGenerator) for g in generators):
            err_console.print(
                f"note: --engine llama.cpp runs a merged model per specialist: {len(entries)} models "
                "in memory (the torch engine shares a base between its runs)",
                style="dim",
                markup=False,
                highlight=False,
            )
    return [Specialist(e.name, g, kb, system) for e, g, kb, system in zip(entries, generators, knowledge, systems)]
