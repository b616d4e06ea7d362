"""What every page shares: where things live, the jobs, the templates, the loaded chat models."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from specialist.studio.jobs import Jobs
from specialist.studio.runs import RunView, check_name, list_runs, run_view

HERE = Path(__file__).parent


@dataclass
class StudioSettings:
    runs: Path = Path("runs")
    api_key: str | None = None
    max_loaded_models: int = 2  # chat models kept in memory (an arena needs two)
    # the serve command's deadlines against slow clients (specialist.serve.http); the request's
    # is longer than the server's: an upload of up to 200 MB must fit in it
    request_timeout: float = 60.0
    send_timeout: float = 30.0


@dataclass
class Studio:
    settings: StudioSettings
    runs_dir: Path = field(init=False)
    jobs: Jobs = field(init=False)
    templates: Jinja2Templates = field(init=False)
    _models: OrderedDict = field(default_factory=OrderedDict)
    _models_lock: threading.Lock = field(default_factory=threading.Lock)
    _knowledge: OrderedDict = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.runs_dir = Path(self.settings.runs).expanduser().resolve()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.runs_dir / ".studio"  # jobs and locks: hidden beside the runs
        self.data_dir = self.runs_dir / "data"        # uploads and edited copies
        self.exports_dir = self.runs_dir / "exports"
        for d in (self.state_dir, self.data_dir, self.exports_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.jobs = Jobs(self.state_dir)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    # ------------------------------------------------------------ runs
    def run_path(self, name: str) -> Path:
        return self.runs_dir / check_name(name)

    def train_key(self, name: str) -> str:
        return f"train:{self.run_path(name)}"

    def runs(self) -> list[RunView]:
        return list_runs(self.runs_dir, lambda p: self.jobs.is_locked(self.train_key(p.name)))

    def run(self, name: str) -> RunView:
        return run_view(self.runs_dir, name, self.jobs.is_locked(self.train_key(name)))

    # ------------------------------------------------------------ chat models
    def generator(self, model: str) -> Any:
        """The loaded Generator for a model reference (a run name, a path, a known model)."""
        from specialist.inference.engines import make_generator

        return self._loaded(self._models, model, lambda ref: make_generator(ref, max_batch=1))

    def knowledge(self, model: str) -> Any:
        """The knowledge base a run was trained with (KnowledgeContext: its retrieval index built
        once, not per message), or None."""
        from specialist.knowledge.runtime import open_knowledge

        return self._loaded(self._knowledge, model, lambda ref: open_knowledge(None, ref))

    def _loaded(self, store: OrderedDict, model: str, load: Any) -> Any:
        """`store`'s entry for a model, made by `load(ref)` once (under the lock: two requests
        never load the same model twice); the least recently used one is dropped beyond
        max_loaded_models, and a retrained run (newer run.json) loads anew."""
        ref = self.model_ref(model)
        summary = Path(ref) / "run.json"
        key = (ref, summary.stat().st_mtime if summary.exists() else None)
        with self._models_lock:
            if key in store:
                store.move_to_end(key)
                return store[key]
            store[key] = value = load(ref)
            while len(store) > self.settings.max_loaded_models:
                store.popitem(last=False)
            return value

    def model_ref(self, model: str) -> str:
        """A run name stands for its folder; anything else is a model reference as the CLI takes it."""
        model = model.strip()
        if model and "/" not in model and (self.runs_dir / model / "run.json").exists():
            return str(self.runs_dir / model)
        return model

    # ------------------------------------------------------------ paths
    def within(self, path: Path, *roots: Path) -> bool:
        resolved = path.resolve()
        return any(resolved == r or r in resolved.parents for r in (roots or (self.runs_dir,)))

    def render(self, request: Request, name: str, **context: Any) -> Any:
        context.setdefault("page", name.split(".")[0])
        context.setdefault("runs_dir", self.runs_dir)
        return self.templates.TemplateResponse(request, name, context)
