"""A knowledge base at inference: generate, chat, serve and export use a run's own snapshot
without --knowledge, build the context exactly as training did, and say which passages they used."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from specialist.inference.generator import Generator
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.knowledge.passages import load_knowledge
from specialist.knowledge.runtime import open_knowledge
from specialist.knowledge.snapshot import RetrievalSettings, save_snapshot
from specialist.models.resolve import load_model
from specialist.models.template import attach_context, build_messages, format_context
from specialist.serve.batch import answer_file
from specialist.serve.chat import ChatSession
from specialist.serve.server import ServerLimits, create_app
from tests.helpers import make_adapter_run, running

SETTINGS = GenerationSettings(max_new_tokens=5)
SHIPPING = "Wysyłka kurierem kosztuje 14,99 zł. Od 150 zł dostawa jest darmowa."
KB_TEXT = f"""# Dostawa

{SHIPPING}

# Zwroty

Zwrot przyjmujemy w ciągu 30 dni od doręczenia.

# Godziny

Kawiarnia jest otwarta od 8 do 18.
"""
QUESTION = "Ile kosztuje wysyłka kurierem?"


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kb")
    (folder / "sklep.md").write_text(KB_TEXT, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def kb_run(lively_chat_model, kb_dir, tmp_path_factory) -> Path:
    """A LoRA run folder with a knowledge snapshot, as `train --knowledge --top-k 2 --set
    knowledge_min_share=0` leaves it (without the score cut every prompt gets 2 passages)."""
    run = make_adapter_run(lively_chat_model, tmp_path_factory.mktemp("run-kb"))
    save_snapshot(load_knowledge(kb_dir), run, RetrievalSettings(top_k=2, min_share=0.0))
    return run


@pytest.fixture(scope="module")
def generator(kb_run) -> Generator:
    return TorchGenerator(load_model(str(kb_run), dtype="float32"))


class Recording:
    """The real generator, recording every conversation it is asked to answer."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.seen: list[list[dict]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def prompt_ids(self, messages):
        self.seen.append([dict(m) for m in messages])
        return self.inner.prompt_ids(messages)

    def generate(self, conversations, settings=None, batch_size=8):
        self.seen += [[dict(m) for m in c] for c in conversations]
        return self.inner.generate(conversations, settings, batch_size)


# ---------------------------------------------------------------- generate
def test_generate_uses_the_runs_knowledge_without_the_flag(kb_run, generator, run_cli):
    proc = run_cli("generate", "--model", str(kb_run), "--prompt", QUESTION, "--max-new-tokens", "4", "--json")
    assert proc.exit_code == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert next(p["id"] for p in doc["passages"]) == "sklep#dostawa"
    assert len(doc["passages"]) == 2 and set(doc["passages"][0]) == {"id", "score", "title"}
    assert "knowledge: 3 passages from" in proc.stderr and "the run's knowledge base" in proc.stderr
    # the prompt the model read is the one training builds: context in the user turn
    context = open_knowledge(None, str(kb_run))
    messages, _ = context.messages(QUESTION)
    assert SHIPPING in messages[-1]["content"]
    assert doc["prompt_tokens"] == len(generator.prompt_ids(messages))
    assert doc["prompt_tokens"] > len(generator.prompt_ids(build_messages(QUESTION)))


def test_knowledge_flag_on_a_model_without_snapshot(lively_chat_model, kb_dir, run_cli):
    proc = run_cli("generate", "--model", str(lively_chat_model), "--knowledge", str(kb_dir), "--top-k", "1",
                   "--prompt", QUESTION, "--max-new-tokens", "2", "--json")
    assert proc.exit_code == 0, proc.stderr
    assert [p["id"] for p in json.loads(proc.stdout)["passages"]] == ["sklep#dostawa"]
    assert f"knowledge: 3 passages from {kb_dir}" in proc.stderr


def test_bad_knowledge_is_one_line_and_the_right_exit_code(lively_chat_model, tmp_path, run_cli):
    missing = run_cli("generate", "--model", str(lively_chat_model), "--knowledge", str(tmp_path / "nope"),
                      "--prompt", "x")
    binary = tmp_path / "kb.md"
    binary.write_bytes(b"\x00\x01\xff\xfe" * 64)
    bad = run_cli("chat", "--model", str(lively_chat_model), "--knowledge", str(binary))
    top_k = run_cli("generate", "--model", str(lively_chat_model), "--top-k", "2", "--prompt", "x")
    assert missing.exit_code == 2 and bad.exit_code == 1 and top_k.exit_code == 2
    for proc in (missing, bad, top_k):
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    assert len(missing.stderr.strip().splitlines()) == 1 and "no such file" in missing.stderr
    assert str(binary) in bad.stderr and "--knowledge" in top_k.stderr


def test_answer_file_retrieves_per_prompt_and_resumes(kb_run, generator, tmp_path):
    context = open_knowledge(None, str(kb_run))
    source = tmp_path / "in.jsonl"
    rows = [{"id": 1, "prompt": QUESTION}, {"id": 2, "prompt": "Ile dni mam na zwrot?", "system": "Krótko."},
            {"id": 3, "messages": [{"role": "user", "content": "Cześć"}, {"role": "assistant", "content": "Hej!"},
                                   {"role": "user", "content": "Kiedy kawiarnia jest otwarta?"}]}]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    rec = Recording(generator)
    summary = answer_file(rec, source, out, SETTINGS, batch_size=2, knowledge=context)
    assert summary.answered == 3
    answers = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [a["passages"][0] for a in answers] == ["sklep#dostawa", "sklep#zwroty", "sklep#godziny"]
    # each prompt got its own context in its last user turn, exactly as training formats it
    assert rec.seen[0] == context.messages(QUESTION)[0]
    assert rec.seen[1] == context.messages("Ile dni mam na zwrot?", "Krótko.")[0]
    third = rec.seen[2]
    assert third[:2] == rows[2]["messages"][:2] and third[-1]["content"].startswith("Context:\n[1] Godziny:")
    # resuming skips what is done; resuming without the knowledge base would mix answers
    assert answer_file(rec, source, out, SETTINGS, knowledge=context).skipped == 3
    from specialist.errors import SpecialistError

    with pytest.raises(SpecialistError, match="with a knowledge base"):
        answer_file(rec, source, out, SETTINGS)


# ---------------------------------------------------------------- chat
def test_chat_retrieves_per_message_and_keeps_plain_history(kb_run, generator):
    context = open_knowledge(None, str(kb_run))
    rec = Recording(generator)
    session = ChatSession(rec, "Jesteś baristą.", 1024, SETTINGS, knowledge=context)
    assert session.settings.grounded_numbers and not SETTINGS.grounded_numbers  # its answers keep to its numbers
    first = session.ask(QUESTION, lambda piece: None)
    assert next(h.passage.id for h in session.last_hits) == "sklep#dostawa"
    assert rec.seen[-1] == context.messages(QUESTION, "Jesteś baristą.")[0]
    second = session.ask("A zwroty?", lambda piece: None)
    assert session.last_hits[0].passage.id == "sklep#zwroty"
    plain = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": first}]
    # the second prompt: plain earlier turn, context only in the new question
    assert rec.seen[-1] == context.messages("A zwroty?", "Jesteś baristą.", plain)[0]
    assert session.history == [*plain, {"role": "user", "content": "A zwroty?"},
                               {"role": "assistant", "content": second}]
    assert not any("Context:" in m["content"] for m in session.history)
    session.reset()
    assert session.last_hits == []


def test_chat_sources_command(kb_run, run_cli):
    proc = run_cli("chat", "--model", kb_run, "--max-new-tokens", "2",
                   input="/sources\n" + QUESTION + "\n/sources\n/exit\n")
    assert proc.exit_code == 0, proc.stderr
    assert "no answer yet" in proc.stderr
    assert "[1] sklep#dostawa" in proc.stderr and "Dostawa: Wysyłka kurierem" in proc.stderr


# ---------------------------------------------------------------- serve
@pytest.fixture(scope="module")
def server(kb_run, generator):
    app = create_app(generator, "coffee", limits=ServerLimits(max_tokens=16),
                     knowledge=open_knowledge(None, str(kb_run)))
    with running(app) as url:
        yield url


def chat_body(**extra) -> dict:
    return {"model": "coffee", "messages": [{"role": "system", "content": "Krótko."},
                                            {"role": "user", "content": QUESTION}],
            "max_tokens": 4, "temperature": 0, **extra}


def test_server_retrieves_into_the_last_user_message(server, kb_run, generator):
    r = httpx.post(server + "/v1/chat/completions", json=chat_body(), timeout=60).json()
    assert [c["id"] for c in r["context"]] == ["sklep#dostawa", "sklep#zwroty"]
    assert set(r["context"][0]) == {"id", "score", "title"} and r["context"][0]["title"] == "Dostawa"
    context = open_knowledge(None, str(kb_run))
    messages = context.messages(QUESTION, "Krótko.")[0]
    assert messages == attach_context(build_messages(QUESTION, "Krótko."),
                                      [h.passage for h in context.retrieve(QUESTION)])
    assert r["usage"]["prompt_tokens"] == len(generator.prompt_ids(messages))
    # the run's generation settings for answers that read passages: grounded numbers, its contrast
    settings = context.generation(GenerationSettings(max_new_tokens=4))
    assert settings.grounded_numbers
    expected = generator.generate([messages], settings)[0].text
    assert r["choices"][0]["message"]["content"] == expected


def test_server_answers_that_read_passages_keep_to_their_numbers(kb_run, generator, monkeypatch):
    guards, contrasts = [], []
    original = type(generator).run_batch

    def spy(self, prompts, rows, settings, adapters=None):
        guards.extend(row.guard for row in rows)
        contrasts.extend((settings.context_contrast, row.contrast) for row in rows)
        return original(self, prompts, rows, settings, adapters)

    monkeypatch.setattr(type(generator), "run_batch", spy)
    # a run trained with context-aware decoding at 1.5 records it in its snapshot
    app = create_app(generator, "coffee", limits=ServerLimits(max_tokens=16),
                     knowledge=open_knowledge(None, str(kb_run), context_contrast=1.5))
    with running(app) as server:
        assert httpx.post(server + "/v1/chat/completions", json=chat_body(), timeout=60).status_code == 200
        assert httpx.post(server + "/v1/chat/completions", json=chat_body(knowledge=False),
                          timeout=60).status_code == 200
    with_passages, without = guards
    assert {"14,99", "150", "30"} <= with_passages.allowed  # the retrieved passages' numbers
    assert without is None  # no passages, no guard: the request opted out
    # context-aware decoding contrasts the answer with the same conversation without the passages
    (alpha, plain), (_, none) = contrasts
    assert alpha == 1.5 and none is None
    assert plain == generator.prompt_ids(build_messages(QUESTION, "Krótko."))


def test_server_request_can_opt_out(server, generator):
    r = httpx.post(server + "/v1/chat/completions", json=chat_body(knowledge=False), timeout=60).json()
    assert "context" not in r
    assert r["usage"]["prompt_tokens"] == len(generator.prompt_ids(build_messages(QUESTION, "Krótko.")))


def test_server_streams_the_context_on_the_first_chunk(server):
    with httpx.stream("POST", server + "/v1/chat/completions", json=chat_body(stream=True), timeout=60) as r:
        events = [e.removeprefix("data: ") for e in "".join(r.iter_text()).split("\n\n") if e]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    assert next(c["id"] for c in chunks[0]["context"]) == "sklep#dostawa"
    assert all("context" not in c for c in chunks[1:])


def test_server_reports_the_knowledge_base_and_completions_do_not_retrieve(server, generator):
    health = httpx.get(server + "/health").json()
    assert health["knowledge"]["passages"] == 3 and health["knowledge"]["fingerprint"].startswith("sha256:")
    assert "origin" not in health["knowledge"]  # no local paths to clients
    models = httpx.get(server + "/v1/models").json()["data"]
    assert models[0]["knowledge"] == health["knowledge"]
    r = httpx.post(server + "/v1/completions", json={"model": "coffee", "prompt": QUESTION, "max_tokens": 2,
                                                      "temperature": 0}, timeout=60).json()
    assert "context" not in r
    assert r["usage"]["prompt_tokens"] == len(generator.tokenizer(QUESTION)["input_ids"])


def test_server_without_knowledge_says_so(generator):
    app = create_app(generator, "plain")
    with running(app) as url:
        assert httpx.get(url + "/health").json()["knowledge"] is None
        r = httpx.post(url + "/v1/chat/completions", json={**chat_body(), "model": "plain"}, timeout=60).json()
        assert "context" not in r


# ---------------------------------------------------------------- export
def test_export_carries_the_knowledge_base_and_documents_the_context(kb_run, tmp_path, monkeypatch):
    from specialist.export.build import export
    from specialist.export.ollama import modelfile
    from specialist.models.resolve import load_tokenizer

    out = tmp_path / "ollama"
    result = export(str(kb_run), "ollama", out, "q8_0", system="Jesteś baristą.")
    assert {"knowledge", "README.md", "Modelfile"} <= set(result.files)
    assert result.knowledge["passages"] == 3 and result.knowledge["top_k"] == 2
    for name in ("passages.jsonl", "knowledge.json"):
        assert (out / "knowledge" / name).read_bytes() == (kb_run / "knowledge" / name).read_bytes()
    # the Modelfile: a comment on the context, the training template unchanged
    text = (out / "Modelfile").read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Context:" in c for c in comments) and any("Question:" in c for c in comments)
    gguf_name = next(p.name for p in out.glob("*.gguf"))
    # everything but the comment is what the export writes without a knowledge base (BOS handling either way)
    without_comments = [line for line in text.splitlines() if not line.startswith("#") and line]
    plain = [[line for line in modelfile(load_tokenizer(str(kb_run)), gguf_name, "Jesteś baristą.", bos).splitlines()
              if line] for bos in (True, False)]
    assert without_comments in plain
    # the README's example and its client code give exactly format_context's layout
    readme = (out / "README.md").read_text(encoding="utf-8")
    kb = load_knowledge(kb_run / "knowledge")
    assert format_context("…", kb.passages[:2]) in readme
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(out)
    scope: dict = {}
    exec(code, scope)
    for found in (scope["passages"][:2], scope["passages"][2:], []):
        assert scope["user_message"]("Ile?", found) == format_context("Ile?", [kb.by_id(p["id"]) for p in found])


def test_the_export_readme_gives_the_runs_score_cut():
    """Clients doing their own retrieval must leave out the weak passages the run never saw."""
    from specialist.export.knowledge import knowledge_readme
    from specialist.knowledge.retrieve import MIN_SHARE

    def readme(**retrieval):
        return knowledge_readme({"passages": 3, "fingerprint": "sha256:0", "retrieval": {"top_k": 3, **retrieval}},
                                "gguf", "…")

    rule = "leaving out those whose BM25 score is below {:g} × the best one's"
    assert rule.format(0.5) in readme(method="bm25", min_share=0.5)
    assert rule.format(MIN_SHARE) in readme(method="bm25")  # a snapshot from before the cut: the default
    assert "leaving out" not in readme(method="bm25", min_share=0.0)
    assert "leaving out" not in readme(method="hybrid", min_share=0.5)


def test_export_without_knowledge_is_unchanged(lively_chat_model, tmp_path):
    from specialist.export.build import export

    run = make_adapter_run(lively_chat_model, tmp_path / "run")
    result = export(str(run), "merged", tmp_path / "merged")
    assert result.knowledge is None
    assert "knowledge" not in result.files and "README.md" not in result.files


# ---------------------------------------------------------------- demo
def test_demo_mixes_fact_and_style_questions():
    from specialist.demo import DemoSettings, facts_mark, shown_questions

    s = DemoSettings()
    shown = shown_questions(s)
    assert [bool(q.get("facts")) for q in shown] == [True, True, False, False]
    assert shown[2]["answerable"] is False and "answerable" not in shown[3]
    assert facts_mark(shown[0], "nie wiem", shown[0]["completion"]) == "✗ → ✓"
    assert facts_mark(shown[3], "a", "b") == "— (style)"
    # `wrong` regexes count: the right keyword said wrongly is no right answer, an invention no abstention
    assert facts_mark({"facts": ["nespresso"], "wrong": ["(?<!nie )do\\s+dolce"]}, "Do Nespresso.",
                      "Do Nespresso i do Dolce Gusto.") == "✓ → ✗"
    assert facts_mark({"answerable": False, "wrong": ["otwieramy"]}, "Nie wiem, zapytaj obsługę.",
                      "W Gdańsku otwieramy w maju, zapytaj obsługę.") == "offers to check: ✓ → ✗"


def test_demo_trains_with_the_knowledge_base_and_measures_facts(tiny_chat_model, tmp_path, capsys, monkeypatch):
    from specialist.console import console
    from specialist.demo import DemoSettings, run_demo
    from specialist.evaluate.examples import load_eval_examples

    monkeypatch.setattr(console, "_width", 250)  # the table's headers on one line each

    run = run_demo(DemoSettings(model=str(tiny_chat_model), out=tmp_path / "run", max_steps=1, eval_limit=2,
                                fact_limit=4, canary_limit=2))
    assert (run / "knowledge" / "knowledge.json").is_file()  # chat/serve/export find it there
    assert json.loads((run / "run.json").read_text())["knowledge"]["passages"] >= 30
    pairs = load_eval_examples(run / "demo_eval.jsonl")
    assert len(pairs) == 6 and sum(not p.answerable for p in pairs) == 1 and sum(bool(p.facts) for p in pairs) == 3
    printed = capsys.readouterr().out
    assert "facts (before → after)" in printed and "with knowledge" in printed
    general = json.loads((run / "eval" / "report.json").read_text())["general_ability"]
    assert general["limit"] == 2 and len(general["answers"]) == 2  # the demo's canary is a sample too


def test_demo_flags_conflict(run_cli):
    proc = run_cli("demo", "--knowledge", "examples/coffee/knowledge", "--no-knowledge")
    assert proc.exit_code == 2 and "--no-knowledge" in proc.stderr
