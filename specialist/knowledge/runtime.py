"""A knowledge base ready to answer with: retrieval into the prompt at inference.

    context = open_knowledge(knowledge_path, model_ref)   # --knowledge wins, else the run's own
    messages, hits = context.messages("Ile kosztuje wysyłka?")

generate, chat, serve and eval all build their prompts through KnowledgeContext.messages, which
calls models.template.build_messages with the retrieved passages: the prompt the run was trained
on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specialist.knowledge.passages import KnowledgeBase, load_knowledge
from specialist.knowledge.retrieve import Hit, Retriever
from specialist.knowledge.snapshot import RetrievalSettings, has_snapshot, load_snapshot
from specialist.models.template import Message, build_messages
from specialist.run_folder import is_run_dir

if TYPE_CHECKING:  # inference sits above knowledge: the settings are only passed through
    from specialist.inference.sampling import GenerationSettings


class KnowledgeContext:
    def __init__(self, kb: KnowledgeBase, settings: RetrievalSettings | None = None, origin: str = "") -> None:
        self.kb = kb
        self.settings = settings or RetrievalSettings()
        self.origin = origin or kb.source
        self.retriever = Retriever(kb, self.settings.method, self.settings.language, self.settings.embedding_model)

    def retrieve(self, question: str) -> list[Hit]:
        return self.retriever.search(question, self.settings.top_k, min_share=self.settings.min_share)

    def messages(self, prompt: str, system: str | None = None,
                 history: Sequence[Message] = ()) -> tuple[list[Message], list[Hit]]:
        hits = self.retrieve(prompt)
        return build_messages(prompt, system, history, [h.passage for h in hits]), hits

    def generation(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` for an answer that reads this knowledge base: with grounded numbers when
        the run was trained so (the default): the answer states only numbers its prompt holds."""
        return replace(settings, grounded_numbers=self.settings.grounded_numbers,
                       context_contrast=self.settings.context_contrast)

    def describe(self) -> dict[str, Any]:
        return {"origin": self.origin, "passages": len(self.kb), "fingerprint": self.kb.fingerprint,
                "top_k": self.settings.top_k, "min_share": self.settings.min_share, "method": self.settings.method,
                "language": self.retriever.language, "grounded_numbers": self.settings.grounded_numbers,
                "context_contrast": self.settings.context_contrast}


def run_folder_of(model_ref: str | None) -> Path | None:
    if not model_ref:
        return None
    path = Path(str(model_ref)).expanduser()
    return path if is_run_dir(path) else None


def open_knowledge(path: str | Path | None, model_ref: str | None = None, top_k: int | None = None,
                   method: str | None = None, embedding_model: str | None = None,
                   grounded_numbers: bool | None = None,
                   context_contrast: float | None = None) -> KnowledgeContext | None:
    """--knowledge PATH when given; else the knowledge snapshot of a run folder `model_ref`;
    else None (no retrieval). Options left None keep the run's retrieval settings."""
    run = run_folder_of(model_ref)
    settings = RetrievalSettings()
    kb = None
    origin = ""
    if run is not None and has_snapshot(run):
        snap_kb, settings, _ = load_snapshot(run)
        if path is None:
            kb, origin = snap_kb, f"{run} (the run's knowledge base)"
    if path is not None:
        kb, origin = load_knowledge(path), str(path)
    if kb is None:
        return None
    changes = {k: v for k, v in (("top_k", top_k), ("method", method), ("embedding_model", embedding_model),
                                 ("grounded_numbers", grounded_numbers), ("context_contrast", context_contrast))
               if v is not None}
    return KnowledgeContext(kb, replace(settings, **changes), origin)
