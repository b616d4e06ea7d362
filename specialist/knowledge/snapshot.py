"""A run's copy of its knowledge base: RUN/knowledge/passages.jsonl (every passage, as
retrieved) and RUN/knowledge/knowledge.json (where it came from, its fingerprint and the
retrieval settings), so generate, chat, serve, eval and export use it without --knowledge."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specialist.errors import SpecialistError
from specialist.io import atomic_write_jsonl, atomic_write_text
from specialist.knowledge.passages import KnowledgeBase, Passage
from specialist.knowledge.retrieve import MIN_SHARE
from specialist.run_folder import RunFolder

CONTEXT_CONTRAST = 1.0  # measured on the coffee specialist: benchmarks/README.md


@dataclass
class RetrievalSettings:
    top_k: int = 3
    min_share: float = MIN_SHARE  # bm25: leave out passages below this share of the best one's score
    method: str = "bm25"
    language: str | None = "auto"
    embedding_model: str | None = None
    # answers state only numbers their prompt holds (inference/numbers.py); older runs: on
    grounded_numbers: bool = True
    # context-aware decoding's strength (inference/contrast.py): 0 = off; older runs get the default too
    context_contrast: float = CONTEXT_CONTRAST


def snapshot_dir(run_dir: Path) -> Path:
    return RunFolder(run_dir).knowledge


def save_snapshot(kb: KnowledgeBase, run_dir: Path, retrieval: RetrievalSettings,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the snapshot; returns its summary (run.json records it under "knowledge")."""
    folder = snapshot_dir(run_dir)
    atomic_write_jsonl(folder / "passages.jsonl", (p.to_dict() for p in kb.passages))
    summary = {"source": str(Path(kb.source).resolve()), "fingerprint": kb.fingerprint, "passages": len(kb),
               "retrieval": asdict(retrieval), **(extra or {})}
    atomic_write_text(folder / "knowledge.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary


def has_snapshot(run_dir: Path) -> bool:
    return (snapshot_dir(run_dir) / "knowledge.json").is_file()


def load_snapshot(run_dir: Path) -> tuple[KnowledgeBase, RetrievalSettings, dict[str, Any]]:
    folder = snapshot_dir(run_dir)
    try:
        summary = json.loads((folder / "knowledge.json").read_text(encoding="utf-8"))
        passages = [Passage(**json.loads(line)) for line in
                    (folder / "passages.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        retrieval = RetrievalSettings(**summary.get("retrieval", {}))
    except (OSError, ValueError, TypeError) as exc:
        raise SpecialistError(f"{folder}: the run's knowledge snapshot is unreadable ({exc})") from exc
    alpha = retrieval.context_contrast
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 10:
        raise SpecialistError(f"{folder / 'knowledge.json'}: retrieval.context_contrast must be a number from 0 "
                              f"to 10, not {alpha!r}")
    kb = KnowledgeBase(passages, str(folder))
    if summary.get("fingerprint") and kb.fingerprint != summary["fingerprint"]:
        raise SpecialistError(f"{folder}: passages.jsonl does not match the fingerprint in knowledge.json "
                              "(edited by hand?); retrain, or pass --knowledge explicitly")
    return kb, retrieval, summary
