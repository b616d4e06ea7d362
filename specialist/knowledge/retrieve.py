"""Ranking passages for a question.

- bm25 (default, offline): bm25s over the analyzer's terms (stemmed, diacritic-insensitive) of
  each passage's title and text.
- dense: cosine similarity of sentence-transformers embeddings (a local model folder or an
  installed model; `pip install sentence-transformers`).
- hybrid: both, fused by reciprocal rank (RRF, k=60), which needs no score calibration.

A weak passage is a distractor: a 270M specialist with the right passage first and two weaker
neighbours restates a neighbour's figure. So bm25 search keeps, of its top k, only the passages
scoring at least `min_share` of the best one's score (MIN_SHARE; measured on the coffee example
in benchmarks/README.md, "Knowledge"). Dense cosines and RRF scores are not on a scale where a
share of the best means the same, so dense and hybrid keep their top k.

Recall@k against labelled questions is measured by `recall_at_k` (and by the knowledge
benchmark on examples/coffee/facts.jsonl)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from specialist.errors import SpecialistError
from specialist.knowledge.analyze import Analyzer, detect_language
from specialist.knowledge.passages import KnowledgeBase, Passage

Method = Literal["bm25", "dense", "hybrid"]
METHODS = ("bm25", "dense", "hybrid")
RRF_K = 60
MIN_SHARE = 0.6  # bm25: passages scoring below this share of the best one are left out


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float
    rank: int  # 1-based

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.passage.id, "score": round(self.score, 4), "title": self.passage.title,
                "text": self.passage.text, "location": self.passage.location}


def passage_text(p: Passage) -> str:
    return f"{p.title}\n{p.text}" if p.title else p.text


class Retriever:
    """Ranks a knowledge base's passages for a query. `encoder` (texts → unit vectors) is what
    dense and hybrid use; by default it is the sentence-transformers model `embedding_model`."""

    def __init__(self, kb: KnowledgeBase, method: Method = "bm25", language: str | None = "auto",
                 embedding_model: str | None = None, encoder: Callable[[list[str]], np.ndarray] | None = None) -> None:
        import bm25s

        if method not in METHODS:
            raise SpecialistError(f"unknown retrieval method {method!r}; use one of {', '.join(METHODS)}")
        if not kb.passages:
            raise SpecialistError(f"{kb.source}: the knowledge base has no passages")
        self.kb = kb
        self.method = method
        texts = [passage_text(p) for p in kb.passages]
        self.language = detect_language(texts) if language == "auto" else language
        self.analyzer = Analyzer(self.language)
        self._bm25 = bm25s.BM25()
        corpus = self.analyzer.terms_many(texts)
        # bm25s needs at least one term per document; an all-stop-word passage gets its own marker
        self._bm25.index([terms or [f"\x00{i}"] for i, terms in enumerate(corpus)], show_progress=False)
        self._encoder = None
        self._vectors = None
        if method != "bm25":
            self._encoder = encoder or _sentence_transformer(embedding_model)
            self._vectors = _unit(np.asarray(self._encoder(texts), dtype=np.float32))

    def scores(self, query: str) -> np.ndarray:
        """One score per passage (higher is better); for hybrid, the fused RRF score."""
        terms = self.analyzer.terms(query)
        lexical = (np.asarray(self._bm25.get_scores(terms), dtype=np.float64) if terms
                   else np.zeros(len(self.kb), dtype=np.float64))  # only stop words: no lexical evidence
        if self.method == "bm25":
            return lexical
        dense = self._vectors @ _unit(np.asarray(self._encoder([query]), dtype=np.float32))[0]
        if self.method == "dense":
            return dense.astype(np.float64)
        return _rrf(lexical) + _rrf(dense)

    def search(self, query: str, k: int = 3, exclude: Sequence[str] = (), min_share: float = 0.0) -> list[Hit]:
        """The k best passages, best first. Ties keep the knowledge base's order. With bm25,
        `min_share` > 0 leaves out passages scoring below that share of the best one's score
        (the best passage is always kept)."""
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")
        hits: list[Hit] = []
        for i in order:
            p = self.kb.passages[int(i)]
            if p.id in exclude:
                continue
            if hits and self.method == "bm25" and scores[i] < min_share * hits[0].score:
                break
            hits.append(Hit(p, float(scores[i]), len(hits) + 1))
            if len(hits) == k:
                break
        return hits

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "language": self.language, "passages": len(self.kb),
                "fingerprint": self.kb.fingerprint}


def _rrf(scores: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return 1.0 / (RRF_K + ranks)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _sentence_transformer(model: str | None) -> Callable[[list[str]], np.ndarray]:
    if not model:
        raise SpecialistError("dense and hybrid retrieval need --embedding-model (a sentence-transformers model "
                              "folder or name)")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SpecialistError("dense and hybrid retrieval need sentence-transformers: "
                              "pip install sentence-transformers") from exc
    try:
        encoder = SentenceTransformer(model, device="cpu")
    except Exception as exc:  # the library raises many types for one cause
        raise SpecialistError(f"{model}: cannot load the embedding model ({type(exc).__name__}: {exc})") from exc
    return lambda texts: encoder.encode(texts, normalize_embeddings=True, show_progress_bar=False)


def recall_at_k(retriever: Retriever, queries: Sequence[str], relevant: Sequence[Callable[[Passage], bool]],
                k: int) -> float:
    """Share of queries with at least one relevant passage among the top k."""
    if not queries:
        return float("nan")
    found = sum(any(is_relevant(h.passage) for h in retriever.search(q, k))
                for q, is_relevant in zip(queries, relevant))
    return found / len(queries)
