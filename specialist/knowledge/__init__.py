"""Stage 2b: a specialist's knowledge base. Facts come from here, voice from fine-tuning.

    from specialist.knowledge import load_knowledge, Retriever
    kb = load_knowledge("examples/coffee/knowledge")       # passages with stable ids
    hits = Retriever(kb).search("Ile kosztuje wysyłka?", k=3)

passages.py reads Markdown/text files, folders of them and JSONL into passages; retrieve.py
ranks them (BM25 with language-aware stemming; dense or hybrid with a sentence-transformers
model); grounding.py finds the facts an answer states and whether the knowledge base backs
them; augment.py builds retrieval-augmented training examples; snapshot.py keeps a run's
copy; check.py is `specialist knowledge check`."""

from __future__ import annotations

from typing import Any

__all__ = ["KnowledgeBase", "Passage", "Retriever", "load_knowledge"]


def __getattr__(name: str) -> Any:
    if name in ("KnowledgeBase", "Passage", "load_knowledge"):
        from specialist.knowledge import passages

        return getattr(passages, name)
    if name == "Retriever":
        from specialist.knowledge.retrieve import Retriever

        return Retriever
    raise AttributeError(f"module 'specialist.knowledge' has no attribute {name!r}")
