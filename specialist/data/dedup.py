"""Near-duplicate search: MinHash signatures over character shingles, candidates from
datasketch's MinHashLSH index, clusters by union-find.

Signatures are computed for all texts at once with numpy (a rolling hash over code points,
then multiply-shift hashing per permutation), so 100k records take seconds; datasketch's LSH
index finds the candidate pairs, whose similarity is then estimated from the signatures."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

SHINGLE = 5
NUM_PERM = 64
NEAR = 0.8  # estimated Jaccard similarity above which two texts count as the same
_MAX_CHARS = 4000  # shingle the start of very long texts only: enough to tell them apart
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Case, accents-as-typed, punctuation and spacing do not make two texts different."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _NON_WORD.sub(" ", text).strip()


def _permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)  # odd multipliers
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def signatures(texts: Sequence[str], num_perm: int = NUM_PERM, k: int = SHINGLE) -> np.ndarray:
    """(len(texts), num_perm) uint64 MinHash signatures of the normalized texts' k-shingles."""
    a, b = _permutations(num_perm)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    batch: list[str] = []
    start = 0
    budget = 0
    for i, text in enumerate(texts):
        t = normalize(text)[:_MAX_CHARS] or "\u2400"
        batch.append(t)
        budget += len(t)
        if budget >= 200_000 or i == len(texts) - 1:
            out[start:i + 1] = _batch_signatures(batch, a, b, k)
            start, batch, budget = i + 1, [], 0
    return out


def _batch_signatures(texts: list[str], a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    # Texts shorter than k count as one shingle (themselves), so pad them to length k.
    texts = [t if len(t) >= k else t + "\u2400" * (k - len(t)) for t in texts]
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n_sh = lengths - k + 1  # shingles per text, all >= 1
    # A k-gram hash at every position of the joined text; keep those inside one text.
    m = len(codes) - k + 1
    h = np.zeros(m, dtype=np.uint64)
    for j in range(k):
        h = h * np.uint64(1_000_003) + codes[j:j + m]
    text_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    h = h[_ranges(text_start, n_sh)]
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    seg = np.concatenate(([0], np.cumsum(n_sh)[:-1]))
    sig = np.empty((len(texts), len(a)), dtype=np.uint64)
    for p in range(len(a)):
        # multiply-shift hashing: a universal family with no modulo, cheap in numpy
        sig[:, p] = np.minimum.reduceat((h * a[p] + b[p]) >> np.uint64(32), seg)
    return sig


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s+c) for every (s, c), vectorized."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return np.arange(total, dtype=np.int64) + offsets


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two signatures."""
    return float(np.mean(sig_a == sig_b))


class NearIndex:
    """An LSH index over signatures (datasketch MinHashLSH): who is near whom."""

    def __init__(self, sigs: np.ndarray, threshold: float = NEAR) -> None:
        from datasketch import LeanMinHash, MinHashLSH

        self.sigs = sigs
        self._lean = LeanMinHash
        self.lsh = MinHashLSH(threshold=threshold, num_perm=sigs.shape[1])
        with self.lsh.insertion_session() as session:
            for i, row in enumerate(sigs):
                session.insert(i, self._minhash(row), check_duplication=False)

    def _minhash(self, row: np.ndarray):
        return self._lean(seed=1, hashvalues=row, scheme="legacy")

    def query(self, row: np.ndarray) -> list[int]:
        return self.lsh.query(self._minhash(row))

    def neighbours(self, i: int, min_similarity: float = NEAR) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities) of the records near record i (i itself excluded)."""
        cands = np.fromiter((j for j in self.query(self.sigs[i]) if j != i), dtype=np.int64)
        if not len(cands):
            return cands, np.empty(0)
        sims = (self.sigs[cands] == self.sigs[i]).mean(axis=1)
        keep = sims >= min_similarity
        return cands[keep], sims[keep]

    def pairs(self, min_similarity: float = NEAR) -> Iterable[tuple[int, int, float]]:
        """(i, j, similarity) linking every record to the near records found after it.

        A record already found near an earlier one is not queried again: near-duplicate
        groups are nearly cliques, and querying every member of a group of k would cost k²."""
        matched = np.zeros(len(self.sigs), dtype=bool)
        for i in range(len(self.sigs)):
            if matched[i]:
                continue
            cands, sims = self.neighbours(i, min_similarity)
            for j, sim in zip(cands.tolist(), sims.tolist()):
                if not matched[j] or j > i:
                    matched[j] = True
                    yield i, j, sim


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def groups(self) -> list[list[int]]:
        """Groups with more than one member, each sorted, in order of their first member."""
        by_root: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            by_root.setdefault(self.find(i), []).append(i)
        return [g for g in by_root.values() if len(g) > 1]
