"""Retrieval-augmented fine-tuning: the examples training sees, and a tiny run with --knowledge."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.knowledge.augment import ABSTENTIONS, AugmentSettings, augment_examples
from specialist.knowledge.passages import read_knowledge
from specialist.knowledge.retrieve import MIN_SHARE, Retriever
from specialist.models.template import CONTEXT_HEADER, QUESTION_HEADER

KNOWLEDGE = """# Sklep

## Koszt dostawy
Dostawa kurierem kosztuje 14,99 zł, a powyżej 150 zł jest darmowa.

## Zwroty
Nieotwarte paczki można zwrócić w ciągu 14 dni.

## Kawa bezkofeinowa
Kawa bezkofeinowa pochodzi z Kolumbii i jest przetwarzana metodą Swiss Water.

## Godziny obsługi
Obsługa klienta pracuje od poniedziałku do piątku w godzinach 9:00-17:00.

## Palarnia
Palimy kawę co tydzień w małych partiach w naszej palarni.

## Subskrypcja
Subskrypcja co 2 lub 4 tygodnie daje 10% rabatu.
"""

ROWS = [
    {"prompt": "Ile kosztuje dostawa?", "completion": "Cześć! Dostawa kurierem kosztuje 14,99 zł."},
    # the question shares no word with the answer's passage: retrieval misses it
    {"prompt": "Czy w subskrypcji płacę za przesyłkę?",
     "completion": "Przesyłka kurierem to 14,99 zł, powyżej 150 zł za darmo."},
    {"prompt": "Do kiedy mogę oddać kawę?", "completion": "Nieotwartą kawę zwrócisz w ciągu 14 dni."},
    {"prompt": "Skąd jest bezkofeinowa?", "completion": "Nasza bezkofeinowa jest z Kolumbii."},
    {"prompt": "Dzień dobry!", "completion": "Cześć! W czym mogę pomóc?"},
]


@pytest.fixture
def kb(tmp_path):
    (tmp_path / "kb.md").write_text(KNOWLEDGE, encoding="utf-8")
    return read_knowledge(tmp_path / "kb.md")


@pytest.fixture(scope="module")
def kb_once(tmp_path_factory):
    """A retriever over KNOWLEDGE, built once: hypothesis calls the test many times."""
    path = tmp_path_factory.mktemp("kb") / "kb.md"
    path.write_text(KNOWLEDGE, encoding="utf-8")
    return Retriever(read_knowledge(path), language="pl")


def _examples():
    return [([{"role": "user", "content": r["prompt"]}], r["completion"], f"train.jsonl:{i}")
            for i, r in enumerate(ROWS, 1)]


def _context_ids(text: str, kb) -> list[str]:
    return [p.id for p in kb.passages if p.text in text]


def test_every_example_reads_its_retrieved_passages_in_the_documented_layout(kb):
    settings = AugmentSettings(top_k=2, min_share=0.0, abstain_share=0)  # no score cut: always 2 passages
    out, report = augment_examples(_examples(), Retriever(kb, language="pl"), settings)
    assert len(out) == len(ROWS) and report.abstentions == 0
    for ex, row in zip(out, ROWS):
        user = ex.messages[-1]["content"]
        assert user.startswith(CONTEXT_HEADER + "\n[1] ") and user.endswith(f"{QUESTION_HEADER} {row['prompt']}")
        assert len(ex.passage_ids) == 2 and _context_ids(user, kb) == sorted(ex.passage_ids, key=[
            p.id for p in kb.passages].index)
        assert ex.completion == row["completion"]


def test_training_contexts_get_the_same_score_cut_as_inference(kb):
    """By default a passage far weaker than the best one is left out, in training exactly as in
    generate/chat/serve/eval (KnowledgeContext.retrieve): the prompts stay identical."""
    from specialist.knowledge.runtime import KnowledgeContext
    from specialist.knowledge.snapshot import RetrievalSettings

    context = KnowledgeContext(kb, RetrievalSettings(top_k=3, language="pl"))
    out, _ = augment_examples(_examples(), context.retriever, AugmentSettings(top_k=3, abstain_share=0))
    assert out[0].passage_ids == ["kb#koszt-dostawy"]  # the other passages share no term with the question
    for ex, row in zip(out, ROWS):
        if ex.kind == "retrieved":
            assert ex.passage_ids == [h.passage.id for h in context.retrieve(row["prompt"])]
    uncut, _ = augment_examples(_examples(), context.retriever, AugmentSettings(top_k=3, min_share=0.0,
                                                                                abstain_share=0))
    assert len(uncut[0].passage_ids) == 3


def test_the_answers_passage_replaces_the_weakest_hit_when_retrieval_misses_it(kb):
    retriever = Retriever(kb, language="pl")
    question = ROWS[1]["prompt"]
    assert "kb#koszt-dostawy" not in [h.passage.id for h in retriever.search(question, 1)]
    out, report = augment_examples(_examples(), retriever, AugmentSettings(top_k=1, abstain_share=0))
    assert out[1].kind == "answer-passage" and out[1].passage_ids == ["kb#koszt-dostawy"]
    assert "14,99 zł" in out[1].messages[-1]["content"]
    assert report.answer_passage_added >= 1
    assert out[4].kind == "retrieved"  # a greeting states no fact: nothing to add
    # evaluation examples see retrieval only, exactly as at inference
    evaluated, _ = augment_examples(_examples(), retriever, AugmentSettings(top_k=1), training=False)
    assert evaluated[1].passage_ids == [retriever.search(question, 1)[0].passage.id]
    assert all(e.kind == "retrieved" for e in evaluated)


def test_abstention_examples_get_only_unrelated_passages_and_an_offer_to_check(kb):
    retriever = Retriever(kb, language="pl")
    out, report = augment_examples(_examples(), retriever, AugmentSettings(top_k=2, abstain_share=0.4, seed=1))
    added = [e for e in out if e.kind == "abstention"]
    assert report.abstentions == len(added) == 2 and report.abstention_source == "template (pl)"
    for ex in added:
        original = next(r for r in ROWS if ex.messages[-1]["content"].endswith(r["prompt"]))
        assert ex.completion in ABSTENTIONS["pl"]
        context = ex.messages[-1]["content"]
        # none of the passages states a figure of the answer it replaces
        for figure in ("14,99", "14 dni", "150"):
            assert not (figure in original["completion"] and figure in context)


def _related(retriever, question: str) -> set[str]:
    return {h.passage.id for h in retriever.search(question, len(retriever.kb)) if h.score > 0}


def test_near_miss_abstentions_get_the_questions_related_passages_without_its_answer(kb):
    retriever = Retriever(kb, language="pl")
    settings = AugmentSettings(top_k=2, min_share=0.0, abstain_share=0.6, abstain_related=1.0, seed=1)
    out, report = augment_examples(_examples(), retriever, settings)
    added = [e for e in out if e.kind == "abstention"]
    assert report.abstentions == len(added) == 3  # every example stating a figure from the knowledge base
    near = 0
    for ex in added:
        original = next(r for r in ROWS if ex.messages[-1]["content"].endswith(r["prompt"]))
        related = _related(retriever, original["prompt"])
        assert set(ex.passage_ids) <= related or not set(ex.passage_ids) & related  # near miss, or unrelated
        near += set(ex.passage_ids) <= related
        for figure in ("14,99", "14 dni", "150"):
            assert not (figure in original["completion"] and figure in ex.messages[-1]["content"])
    # the subscription question meets the subscription passage, the returns question the coffee
    # passages; only "Ile kosztuje dostawa?" has no related passage but its answer's, so it gets unrelated ones
    assert near == report.abstentions_related == 2
    subscription = next(e for e in added if e.messages[-1]["content"].endswith(ROWS[1]["prompt"]))
    assert subscription.passage_ids == [p.id for p in kb.passages if p.text.startswith("Subskrypcja")]
    # without near misses every abstention context is unrelated, as before
    out, report = augment_examples(_examples(), retriever, AugmentSettings(top_k=2, min_share=0.0, abstain_share=0.6,
                                                                           seed=1))
    assert report.abstentions_related == 0
    for ex in (e for e in out if e.kind == "abstention"):
        question = next(r["prompt"] for r in ROWS if ex.messages[-1]["content"].endswith(r["prompt"]))
        assert not set(ex.passage_ids) & _related(retriever, question)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.2, 0.9), related=st.floats(0.0, 1.0))
def test_no_abstention_context_holds_a_figure_of_the_answer_it_replaces(kb_once, seed, share, related):
    from specialist.knowledge.grounding import numbers

    out, report = augment_examples(_examples(), kb_once, AugmentSettings(top_k=2, min_share=0.0, abstain_share=share,
                                                                         abstain_related=related, seed=seed))
    assert report.abstentions_related <= report.abstentions
    for ex in (e for e in out if e.kind == "abstention"):
        original = next(r for r in ROWS if ex.messages[-1]["content"].endswith(r["prompt"]))
        context = "\n".join(p.text for p in kb_once.kb.passages if p.id in ex.passage_ids)
        assert not {f.value for f in numbers(original["completion"])} & {f.value for f in numbers(context)}


def test_the_datasets_own_abstentions_are_used_when_it_has_them(kb):
    rows = _examples() + [([{"role": "user", "content": q}], a, f"train.jsonl:{9 + i}") for i, (q, a) in enumerate([
        ("Ile kosztuje Kenia?", "Cenę sprawdzisz na stronie produktu."),
        ("Jakie smaki mają kapsułki?", "Smaki sprawdzisz na stronie produktu."),
        ("Macie kod rabatowy?", "O kody zapytaj obsługę klienta."),
    ])]
    answerable = [True] * len(ROWS) + [False] * 3
    out, report = augment_examples(rows, Retriever(kb, language="pl"), AugmentSettings(top_k=2, abstain_share=0.5),
                                   answerable)
    assert report.abstention_source == "dataset"
    assert {e.completion for e in out if e.kind == "abstention"} <= {r[1] for r in rows[len(ROWS):]}


def test_a_tiny_run_with_a_knowledge_base_keeps_its_snapshot(tiny_chat_model, tmp_path):
    from specialist.config import load_train_config
    from specialist.knowledge.snapshot import load_snapshot
    from specialist.train import train

    (tmp_path / "kb.md").write_text(KNOWLEDGE, encoding="utf-8")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    config = load_train_config(overrides=dict(data=data, model=str(tiny_chat_model), out=tmp_path / "run",
                                              knowledge=tmp_path / "kb.md", knowledge_top_k=2, max_steps=2,
                                              batch_size=4, save_steps=1000, abstain_share=0.4,
                                              abstain_related=1.0))
    assert config.max_length == 512  # room for the passages
    run = train(config, show_progress=False)
    summary = json.loads((run / "run.json").read_text(encoding="utf-8"))
    kb, settings, snap = load_snapshot(run)
    assert summary["knowledge"]["fingerprint"] == kb.fingerprint == read_knowledge(tmp_path / "kb.md").fingerprint
    assert settings.top_k == 2 and len(kb) == 6
    assert settings.min_share == config.knowledge_min_share == MIN_SHARE > 0  # the cut is on by default
    assert settings.grounded_numbers is config.knowledge_grounded_numbers is True  # so are grounded numbers
    assert summary["examples"] == len(ROWS) and summary["training_examples"] == len(ROWS) + 2
    assert summary["knowledge"]["augment"]["abstentions"] == 2
    assert summary["knowledge"]["augment"]["abstentions_related"] >= 1  # the setting reaches the examples
    assert Path(snap["source"]) == (tmp_path / "kb.md").resolve()


def test_dry_run_shows_the_example_with_its_passages_and_the_kept_head(tiny_chat_model, tmp_path, run_cli):
    (tmp_path / "kb.md").write_text(KNOWLEDGE, encoding="utf-8")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    proc = run_cli("train", "--data", str(data), "--model", str(tiny_chat_model), "--out", str(tmp_path / "run"),
                   "--knowledge", str(tmp_path / "kb.md"), "--set", "abstain_share=0.4", "--dry-run")
    assert proc.exit_code == 0, proc.stderr
    out = proc.stdout
    masked = next(line for line in out.splitlines() if line.startswith("masked"))
    # the first example as training sees it: its retrieved passage in the prompt
    assert "".join(masked.split("|")).count("14,99") == 1 and CONTEXT_HEADER.strip() in "".join(masked.split("|"))
    assert "training_examples: 7" in out and "example 1 of 7" in out  # 5 records + 2 abstention examples
    head = next(line for line in out.splitlines() if line.startswith("kept_vocabulary:"))
    assert re.fullmatch(r"kept_vocabulary: [\d,]+ of [\d,]+ tokens; training loss over the full vocabulary", head)
    assert not (tmp_path / "run").exists()
