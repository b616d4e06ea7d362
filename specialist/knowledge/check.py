"""Checks of a knowledge base, and of training data against one.

- `specialist knowledge check K`: files, passages, words per passage, the located read errors
  (E0xx, exit 1) and warnings: duplicate passages (W118), passages about the same subject that
  state different numbers (W119), passages too long (W120) or too short (W121) to retrieve well.
- `specialist data check DATA --knowledge K`: answers that state a number the knowledge base
  contradicts (W116) or a number or name it does not hold at all (W117), and the knowledge
  base's figures that few answers practise stating (W122).

The codes live in the one findings table (specialist/data/findings.py)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specialist.data import dedup
from specialist.data.example import Example
from specialist.data.findings import CODES, DataWarning
from specialist.errors import SpecialistError
from specialist.knowledge.analyze import Analyzer, detect_language, fold
from specialist.knowledge.grounding import Fact, FactIndex, names, numbers
from specialist.knowledge.passages import MAX_WORDS, KnowledgeBase, KnowledgeError, Passage, read_knowledge
from specialist.knowledge.retrieve import passage_text
from specialist.knowledge.runtime import KnowledgeContext, open_knowledge, run_folder_of
from specialist.knowledge.snapshot import has_snapshot, load_snapshot

MAX_PASSAGE_WORDS = MAX_WORDS  # longer passages crowd the prompt and blur retrieval scores
MIN_PASSAGE_WORDS = 5  # shorter ones rarely answer anything on their own
SAME_SUBJECT = 0.5  # share of the shorter passage's terms the other one has: "about the same thing"
CHECK_TOP_K = 3  # passages retrieved per record when looking for a contradiction
# W122: a figure fewer answers state is rarely read right from the context (coffee runs: 37% of the
# facts 1-2 answers state, 60% of those 3-5 state; benchmarks/README.md, "What the misses have in common")
PRACTICE_MIN = 3
MAX_LISTED = 12

_SENTENCE = re.compile(r"(?<=[.!?…;])\s+|\n+")
_NUMERIC_TERM = re.compile(r"^[\d.,:]+$")


# ---------------------------------------------------------------- knowledge check
@dataclass
class PassageWarning:
    """A finding about passages of the knowledge base, naming each by id and file:line."""

    code: str
    message: str
    passages: list[Passage]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return CODES[self.code].kind

    @property
    def suggestion(self) -> str:
        return CODES[self.code].fix

    def to_dict(self) -> dict[str, Any]:
        doc = {"code": self.code, "kind": self.kind, "message": self.message, "suggestion": self.suggestion,
               "passages": [{"id": p.id, "location": p.location} for p in self.passages]}
        if self.details:
            doc["details"] = self.details
        return doc


@dataclass
class KnowledgeReport:
    source: str
    files: int
    passages: list[Passage]
    errors: list[KnowledgeError]
    warnings: list[PassageWarning]
    fingerprint: str
    language: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    @property
    def words(self) -> dict[str, float]:
        counts = [len(p.text.split()) for p in self.passages]
        if not counts:
            return {"min": 0, "median": 0, "max": 0}
        return {"min": min(counts), "median": statistics.median(counts), "max": max(counts)}

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "files": self.files, "passages": len(self.passages),
                "fingerprint": self.fingerprint, "language": self.language, "words_per_passage": self.words,
                "errors": [e.to_dict() for e in self.errors], "warnings": [w.to_dict() for w in self.warnings]}


def _read(path: str | Path) -> KnowledgeBase:
    """A knowledge file or folder; a run folder stands for the snapshot it was trained with."""
    run = run_folder_of(str(path))
    if run is not None:
        if not has_snapshot(run):
            raise SpecialistError(f"{run}: the run was trained without a knowledge base (no knowledge/ snapshot)")
        return load_snapshot(run)[0]
    return read_knowledge(path)


def check_knowledge(path: str | Path) -> KnowledgeReport:
    """Every located error and warning of the knowledge base at `path` (SpecialistError, exit 2,
    only when the path does not exist)."""
    kb = _read(path)
    passages = kb.passages
    language = detect_language([passage_text(p) for p in passages]) if passages else None
    warnings = [*duplicate_warnings(passages), *conflict_warnings(passages, Analyzer(language)),
                *size_warnings(passages)]
    warnings.sort(key=lambda w: w.code)
    return KnowledgeReport(kb.source, kb.files, passages, kb.errors, warnings, kb.fingerprint, language)


def _listed(passages: Sequence[Passage], limit: int = MAX_LISTED) -> str:
    text = ", ".join(f"{p.id} ({p.location})" for p in passages[:limit])
    return text + (f" … (+{len(passages) - limit})" if len(passages) > limit else "")


def duplicate_warnings(passages: Sequence[Passage]) -> list[PassageWarning]:
    """Identical or near-identical passages (MinHash, as for duplicate records): one copy
    crowds the others out of the top k, and two copies drift apart when one is edited."""
    if len(passages) < 2:
        return []
    sigs = dedup.signatures([p.text for p in passages])
    groups = dedup.UnionFind(len(passages))
    for i, j, _sim in dedup.NearIndex(sigs).pairs(dedup.NEAR):
        groups.union(i, j)
    warnings = []
    for group in groups.groups():
        members = [passages[i] for i in group]
        exact = len({dedup.normalize(p.text) for p in members}) == 1
        what = "identical" if exact else "near-identical"
        sim = min(dedup.similarity(sigs[group[0]], sigs[i]) for i in group[1:])
        warnings.append(PassageWarning("W118", f"{len(members)} {what} passages: {_listed(members)}", members,
                                       {"exact": exact, "similarity": round(sim, 3)}))
    return warnings


def _quantities(text: str) -> list[tuple[Fact, str, int, int]]:
    """Each number of `text` with the words as written ("14,99 zł", where Fact.text holds the
    folded "14,99 zl") and their span; grounding matches on folded text, which for Polish and
    most scripts has the same length, so its spans carry over."""
    folded = fold(text)
    same = len(folded) == len(text)
    out: list[tuple[Fact, str, int, int]] = []
    cursor, second = 0, False
    for f in numbers(text):
        # the second number of a range ("1-2 dni") comes right after the first, with the same words
        second = not second and bool(out) and out[-1][0].text == f.text and out[-1][0].value != f.value
        if second:
            _, written, start, end = out[-1]
        else:
            start = folded.find(f.text, cursor)
            if start < 0:
                start = folded.find(f.text)
            end = start + len(f.text)
            written = text[start:end] if same and start >= 0 else f.text
            cursor = max(cursor, end)
        out.append((f, written, start, end))
    return out


def _subject_terms(text: str, analyzer: Analyzer) -> set[str]:
    """The terms a text is about: numbers and their units ("zł", "dni") say nothing of the subject."""
    chars = list(text if len(fold(text)) == len(text) else fold(text))
    for _, _, start, end in _quantities(text):
        if start >= 0:
            chars[start:end] = " " * (end - start)
    return {t for t in analyzer.terms("".join(chars)) if not _NUMERIC_TERM.match(t)}


def _by_unit(text: str) -> dict[str, dict[str, str]]:
    """unit kind → normalised value → the number as written."""
    found: dict[str, dict[str, str]] = {}
    for f, written, _, _ in _quantities(text):
        if f.unit:
            found.setdefault(f.unit, {}).setdefault(f.value, written)
    return found


@dataclass(frozen=True)
class Conflict:
    a: Passage
    b: Passage
    overlap: float  # share of the shorter passage's terms the other one has (1.0 for a shared title)
    numbers: dict[str, tuple[list[str], list[str]]]  # unit kind → (only a states, only b states)


def conflicts(passages: Sequence[Passage], analyzer: Analyzer, same_subject: float = SAME_SUBJECT) -> list[Conflict]:
    """Pairs of passages about the same subject (high term overlap and one's title mentioned by
    the other, or the same title in two files) whose numbers of one unit kind disagree: each states
    a value the other lacks. A passage that states a subset of the other's values adds detail and
    is not a conflict."""
    units = [_by_unit(p.text) for p in passages]
    with_numbers = [i for i, u in enumerate(units) if u]
    terms = {i: _subject_terms(passage_text(passages[i]), analyzer) for i in with_numbers}
    # Candidate pairs through an inverted index: only passages sharing a term are compared.
    postings: dict[str, list[int]] = {}
    for i in with_numbers:
        for t in terms[i]:
            postings.setdefault(t, []).append(i)
    titles = {i: _subject_terms(passages[i].title, analyzer) for i in with_numbers}

    def _titles_agree(i: int, j: int) -> bool:
        # Two recipes share most words ("15 g kawy … minuty"); what tells them apart is what each is
        # titled: passages about one subject each mention what the other is titled.
        return not titles[i] or not titles[j] or titles[i] <= terms[j] or titles[j] <= terms[i]

    found = []
    for pos, i in enumerate(with_numbers):
        shared: dict[int, int] = {}
        for t in terms[i]:
            for j in postings[t]:
                if j > i:
                    shared[j] = shared.get(j, 0) + 1
        titled = {j for j in with_numbers[pos + 1:] if passages[i].title and passages[j].file != passages[i].file
                  and passages[i].title.casefold() == passages[j].title.casefold()}
        for j in sorted(set(shared) | titled):
            overlap = 1.0 if j in titled else shared[j] / max(1, min(len(terms[i]), len(terms[j])))
            if overlap < same_subject or not (j in titled or _titles_agree(i, j)):
                continue
            differing = {}
            for unit in units[i].keys() & units[j].keys():
                only_a = [text for value, text in units[i][unit].items() if value not in units[j][unit]]
                only_b = [text for value, text in units[j][unit].items() if value not in units[i][unit]]
                if only_a and only_b:
                    differing[unit] = (list(dict.fromkeys(only_a)), list(dict.fromkeys(only_b)))
            if differing:
                found.append(Conflict(passages[i], passages[j], round(overlap, 3), differing))
    return found


def conflict_warnings(passages: Sequence[Passage], analyzer: Analyzer) -> list[PassageWarning]:
    warnings = []
    for c in conflicts(passages, analyzer):
        said_a = ", ".join(x for a, _ in c.numbers.values() for x in a)
        said_b = ", ".join(x for _, b in c.numbers.values() for x in b)
        message = (f"{c.a.id} ({c.a.location}) says {said_a}; {c.b.id} ({c.b.location}) says {said_b} "
                   f"(same subject: {c.overlap:.0%} shared terms)")
        details = {"overlap": c.overlap,
                   "numbers": {unit: {c.a.id: a, c.b.id: b} for unit, (a, b) in c.numbers.items()}}
        warnings.append(PassageWarning("W119", message, [c.a, c.b], details))
    return warnings


def size_warnings(passages: Sequence[Passage], longest: int = MAX_PASSAGE_WORDS,
                  shortest: int = MIN_PASSAGE_WORDS) -> list[PassageWarning]:
    counts = {p.id: len(p.text.split()) for p in passages}
    warnings = []
    long_ = [p for p in passages if counts[p.id] > longest]
    if long_:
        warnings.append(PassageWarning("W120", f"{len(long_)} passage(s) longer than {longest} words: {_listed(long_)}",
                                       long_, {"words": {p.id: counts[p.id] for p in long_}}))
    short = [p for p in passages if counts[p.id] < shortest]
    if short:
        warnings.append(PassageWarning("W121",
                                       f"{len(short)} passage(s) shorter than {shortest} words: {_listed(short)}",
                                       short, {"words": {p.id: counts[p.id] for p in short}}))
    return warnings


def print_knowledge_report(report: KnowledgeReport, console: Any) -> None:
    """The terminal summary, in data check's shape: one line per error and per warning."""
    from rich.markup import escape

    ok = "[green]no errors[/green]" if not report.errors else f"[red]{len(report.errors)} error(s)[/red]"
    w = report.words
    sizes = f", words per passage {w['min']}/{w['median']:g}/{w['max']} (min/median/max)" if report.passages else ""
    console.print(f"[bold]{escape(report.source)}[/bold]: {report.files} file(s), {len(report.passages)} passages"
                  f"{escape(sizes)}, {ok}, {len(report.warnings)} warning(s)", highlight=False, soft_wrap=True)
    for err in report.errors:
        where = f"{err.file}:{err.line}" + (f":{err.field}" if err.field else "")
        console.print(f"[red]{err.code}[/red] {escape(where)}: {escape(err.message)}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        console.print(f"[yellow]{warning.code}[/yellow] [bold]{warning.kind}[/bold]: {escape(warning.message)}",
                      highlight=False, soft_wrap=True)
        console.print(f"      [dim]→ {escape(warning.suggestion)}[/dim]", highlight=False, soft_wrap=True)
    if report.passages and not report.errors:
        console.print(f"[dim]fingerprint {report.fingerprint}[/dim]", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- data against knowledge
def open_for_check(path: str | Path) -> KnowledgeContext:
    """`--knowledge K` of `data check`: a knowledge file or folder, or a run folder (its snapshot)."""
    run = run_folder_of(str(path))
    context = open_knowledge(None, str(run)) if run is not None else open_knowledge(path, None)
    if context is None:
        raise SpecialistError(f"{path}: the run was trained without a knowledge base (no knowledge/ snapshot)")
    return context


def _sentence_of(text: str, fact: Fact) -> str:
    for sentence in _SENTENCE.split(text):
        if fact.text in fold(sentence):
            return sentence
    return text


def _sentences_with(text: str, unit: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(sentence, its numbers of `unit` as (value, as written)) of every sentence that states some."""
    out = []
    for sentence in _SENTENCE.split(text):
        found = [(f.value, written) for f, written, _, _ in _quantities(sentence) if f.unit == unit]
        if found:
            out.append((sentence, found))
    return out


@dataclass
class KnowledgeFindings:
    warnings: list[DataWarning]
    contradicted: dict[int, list[dict[str, Any]]]  # record line → contradicted facts
    unsupported: dict[int, list[dict[str, str]]]  # record line → facts found nowhere
    figures: int = 0  # figures (numbers with a unit) in the knowledge base's passages
    unpractised: list[dict[str, Any]] = field(default_factory=list)  # W122: those fewer than PRACTICE_MIN answers state


def data_warnings(examples: Sequence[Example], context: KnowledgeContext,
                  top_k: int = CHECK_TOP_K) -> KnowledgeFindings:
    """W116 per record whose answer states a number a retrieved passage contradicts; one W117
    listing the records whose answers state numbers (with a unit) or names the knowledge base
    holds nowhere. Facts the record's own conversation states (the customer's "100 zł") are
    the user's, not the knowledge base's, and are skipped."""
    kb, analyzer = context.kb, context.retriever.analyzer
    index = FactIndex([passage_text(p) for p in kb.passages], analyzer)
    contradicted: dict[int, list[dict[str, Any]]] = {}
    unsupported: dict[int, list[dict[str, str]]] = {}
    found_for: dict[int, list[Any]] = {}  # one retrieval per record, shared by W116 and W122

    def hits_of(e: Example) -> list[Any]:
        if id(e) not in found_for:
            found_for[id(e)] = context.retriever.search(f"{e.prompt}\n{e.completion}", top_k)
        return found_for[id(e)]

    for e in examples:
        own = FactIndex([m["content"] for m in e.messages], analyzer)
        missing = [f for f in numbers(e.completion) if f.unit and f.value not in index.by_unit.get(f.unit, ())
                   and not own.supports(f)]
        missing += [f for f in names(e.completion, analyzer) if not index.supports(f) and not own.supports(f)]
        if not missing:
            continue
        hits = hits_of(e)
        bad, lacking = [], []
        for f in dict.fromkeys(missing):  # a range "4-5 tygodni" may miss twice with one text
            found = _contradiction(e.completion, f, hits, analyzer) if f.kind == "number" else None
            if found is not None:
                bad.append(found)
            elif (written := _as_written(e.completion, f)) not in (x["fact"] for x in lacking):
                lacking.append({"fact": written, "kind": f.kind, **({"unit": f.unit} if f.unit else {})})
        if bad:
            contradicted[e.line] = bad
        if lacking:
            unsupported[e.line] = lacking
    warnings = []
    file = examples[0].file if examples else ""
    for line, bad in contradicted.items():
        said = "; ".join(f"{b['passage']} ({b['location']}) says {', '.join(b['says'])}" for b in bad)
        stated = ", ".join(dict.fromkeys(b["stated"] for b in bad))
        warnings.append(DataWarning("W116", [line], f"line {line}: states {stated}; {said}", file=file,
                                    details={"facts": bad}))
    if unsupported:
        lines = sorted(unsupported)
        shown = "; ".join(f"{line}: {', '.join(x['fact'] for x in unsupported[line])}" for line in lines[:MAX_LISTED])
        more = f" … (+{len(lines) - MAX_LISTED})" if len(lines) > MAX_LISTED else ""
        warnings.append(DataWarning("W117", lines, f"{len(lines)} record(s) state facts the knowledge base does not "
                                    f"hold (line: facts): {shown}{more}", file=file,
                                    details={"facts": {str(line): unsupported[line] for line in lines}}))
    figures, unpractised = practised_figures(examples, kb, hits_of) if examples else (0, [])
    if unpractised:
        by_passage: dict[str, list[dict[str, Any]]] = {}
        for u in unpractised:
            by_passage.setdefault(f"{u['passage']} ({u['location']})", []).append(u)
        shown = "; ".join(where + ": " + ", ".join(f"{u['figure']} ×{u['answers']}" for u in found)
                          for where, found in list(by_passage.items())[:MAX_LISTED])
        more = f" … (+{len(by_passage) - MAX_LISTED} passages)" if len(by_passage) > MAX_LISTED else ""
        warnings.append(DataWarning("W122", [], f"{len(unpractised)} of {figures} figures ({len(by_passage)} "
                                    f"passages) are stated by fewer than {PRACTICE_MIN} answers (passage: figure "
                                    f"×answers): {shown}{more}", file=file,
                                    details={"figures": figures, "unpractised": unpractised}))
    return KnowledgeFindings(warnings, contradicted, unsupported, figures, unpractised)


def _figures(text: str) -> dict[frozenset[tuple[str, str]], str]:
    """The figures (numbers with a unit) of a text: a range's two ends → the range as first written.
    Keyed by value and unit, so "2 tygodnie" and "2 tygodni" are one figure."""
    spans: dict[tuple[int, int], tuple[str, set[tuple[str, str]]]] = {}
    for f, written, start, end in _quantities(text):
        if f.unit:  # a range's second number carries its first's span
            spans.setdefault((start, end), (written, set()))[1].add((f.value, f.unit))
    found: dict[frozenset[tuple[str, str]], str] = {}
    for written, ends in spans.values():
        found.setdefault(frozenset(ends), written)
    return found


def practised_figures(examples: Sequence[Example], kb: KnowledgeBase,
                      hits_of: Callable[[Example], list[Any]]) -> tuple[int, list[dict[str, Any]]]:
    """How many answers state each figure of each passage. An answer practises a passage's
    figure when it states that value in that unit and the passage is among those retrieved for
    its question and answer (`hits_of`), so "15 g" in an AeroPress answer does not count for the
    drip recipe; figures its own conversation states (the customer's "100 zł") do not count, and
    a range counts by its less stated end. Returns the number of figures and those fewer than
    PRACTICE_MIN answers state, in the knowledge base's order."""
    figures_of = {p.id: _figures(passage_text(p)) for p in kb.passages}
    stated: Counter[tuple[str, tuple[str, str]]] = Counter()
    for e in examples:
        conversation = {(f.value, f.unit) for m in e.messages for f in numbers(m["content"]) if f.unit}
        said = {(f.value, f.unit) for f in numbers(e.completion) if f.unit} - conversation
        if not said:
            continue
        for hit in hits_of(e):
            pid = hit.passage.id
            for end in said & {end for ends in figures_of[pid] for end in ends}:  # once per answer
                stated[(pid, end)] += 1
    total, unpractised = 0, []
    for p in kb.passages:
        for ends, written in figures_of[p.id].items():
            total += 1
            n = min(stated[(p.id, end)] for end in ends)
            if n < PRACTICE_MIN:
                unpractised.append({"passage": p.id, "location": p.location, "figure": written, "answers": n})
    return total, unpractised


def _contradiction(completion: str, fact: Fact, hits: Iterable[Any], analyzer: Analyzer) -> dict[str, Any] | None:
    """The first retrieved passage that states other numbers of the fact's unit in a sentence
    about the same subject (a shared content term with the answer's sentence), or None."""
    said = _subject_terms(_sentence_of(completion, fact), analyzer)
    agreed = {f.value for f in numbers(completion) if f.unit == fact.unit}  # figures both state are not the dispute
    for hit in hits:
        p = hit.passage
        says = [written for sentence, found in _sentences_with(p.text, fact.unit)
                if said & _subject_terms(sentence, analyzer) for value, written in found if value not in agreed]
        if says:
            return {"stated": _as_written(completion, fact), "unit": fact.unit, "passage": p.id, "location": p.location,
                    "says": list(dict.fromkeys(says))}
    return None


def _as_written(text: str, fact: Fact) -> str:
    if fact.kind != "number":
        return fact.text
    return next((written for f, written, _, _ in _quantities(text) if f == fact), fact.text)


def knowledge_summary(context: KnowledgeContext, findings: KnowledgeFindings, records: int) -> dict[str, Any]:
    """The "knowledge" section of the data check's JSON report."""
    return {**context.describe(), "records_checked": records, "contradicted_records": len(findings.contradicted),
            "unsupported_records": len(findings.unsupported), "figures": findings.figures,
            "unpractised_figures": len(findings.unpractised), "practice_min": PRACTICE_MIN}
