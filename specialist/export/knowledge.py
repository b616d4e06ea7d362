"""A run trained with a knowledge base exports it too: knowledge/ (its passages.jsonl and
knowledge.json, as in the run folder) next to the artefact, and a README.md (plus a comment in
the Modelfile) giving the context layout the client must put in the user message, because
llama.cpp and Ollama do no retrieval themselves."""

from __future__ import annotations

import shutil
from pathlib import Path

from specialist.knowledge.snapshot import CONTEXT_CONTRAST
from specialist.models.template import CONTEXT_HEADER, NO_CONTEXT, QUESTION_HEADER, format_context


def context_layout() -> str:
    """format_context's layout, drawn by format_context itself so the doc cannot drift from it."""
    from types import SimpleNamespace

    example = [SimpleNamespace(title="{title 1}", text="{text 1}"), SimpleNamespace(title="{title 2}", text="{text 2}")]
    return format_context("{the user's question}", example)


def modelfile_note(knowledge: dict) -> str:
    k = knowledge["retrieval"].get("top_k", 3)
    return (f"This specialist was trained to answer from up to {k} passages retrieved from its knowledge base\n"
            f"(knowledge/passages.jsonl next to this file). Ollama does no retrieval: search the passages\n"
            f"yourself and send each question as this user message (see README.md):\n\n"
            + "\n".join("  " + line for line in context_layout().splitlines()))


CLIENT_CODE = f'''import json

passages = [json.loads(line) for line in open("knowledge/passages.jsonl", encoding="utf-8")]


def user_message(question: str, found: list[dict]) -> str:
    """found: the passages your retriever ranks highest for the question, best first."""
    lines = [{CONTEXT_HEADER!r}]
    for i, p in enumerate(found, 1):
        text = " ".join(p["text"].split())
        lines.append(f"[{{i}}] {{p['title']}}: {{text}}" if p.get("title") else f"[{{i}}] {{text}}")
    if not found:
        lines.append({NO_CONTEXT!r})
    return "\\n".join(lines) + f"\\n\\n{QUESTION_HEADER} {{question}}"
'''


def _share(r: dict) -> float:
    """The score cut retrieval applies (Retriever.search's min_share; snapshots from before it
    existed get the default, as at inference); dense and hybrid retrieval have none."""
    from specialist.knowledge.retrieve import MIN_SHARE

    return r.get("min_share", MIN_SHARE) if r.get("method", "bm25") == "bm25" else 0.0


def _cut_note(r: dict) -> str:
    return f", score cut {_share(r):g}" if _share(r) else ""


def _cut_rule(r: dict) -> str:
    return f", leaving out those whose BM25 score is below {_share(r):g} × the best one's" if _share(r) else ""


def knowledge_readme(knowledge: dict, fmt: str, example: str) -> str:
    r = knowledge["retrieval"]
    runtime = {"merged": "transformers (or any runtime loading this folder)", "gguf": "llama.cpp",
               "ollama": "Ollama"}[fmt]
    return f"""# Knowledge base: how to pass the context

This specialist was trained with retrieval: every training question came with the passages
retrieved for it from its knowledge base, and it answers from them. {runtime} does no retrieval
itself, so the client must do it and put the passages into the user message, exactly in the
layout the specialist was trained on, or it will guess facts instead of reading them.

- `knowledge/passages.jsonl`: the {knowledge["passages"]} passages (`id`, `title`, `text`, …), fingerprint
  `{knowledge["fingerprint"]}`.
- `knowledge/knowledge.json`: where they came from and the retrieval settings of training:
  method `{r.get("method")}`, top {r.get("top_k")} passages, language `{r.get("language")}`{_cut_note(r)}.
- For each question, take the top {r.get("top_k")} passages (best first){_cut_rule(r)} and send as the
  **user message** (the system prompt, if any, stays the system prompt; earlier turns stay plain):

```
{context_layout()}
```

  `[n] title: text` per passage, numbered from 1 (just `[n] text` for a passage without a title),
  the text on one line (runs of whitespace become one space); `{NO_CONTEXT}` when nothing was
  found; one empty line; then `{QUESTION_HEADER} ` and the question. Only the last user message
  carries a context.

For example, with the first passages of this knowledge base:

```
{example}
```

In Python:

```python
{CLIENT_CODE}```

Or let specialist retrieve for you: `specialist serve --model <the run>` (it finds its knowledge
base on its own), or `--model <a merged folder, or a .gguf with --engine llama.cpp>
--knowledge knowledge/ --top-k {r.get("top_k")}`, answers plain questions over an OpenAI-compatible
API: the retrieval happens in the server and each answer lists the passage ids it was given
(`/v1/chat/completions` only; `/v1/completions` takes the whole prompt from the client).
`specialist knowledge search --knowledge knowledge/ "question"` previews what is retrieved.

{runtime} also decodes plainly. `specialist serve` (torch engine) decodes an answer that reads
passages in two ways that make it state its facts right more often: grounded numbers (it may
state only numbers its prompt holds) and context-aware decoding (each token scored by how much
the passages raise it, strength {r.get("context_contrast", CONTEXT_CONTRAST):g}, from training).
"""


def copy_knowledge(run_dir: Path, dest: Path, fmt: str) -> dict:
    """Copy the run's knowledge snapshot into the export (validated first: a snapshot edited by
    hand would teach clients the wrong passages) and write README.md on passing context."""
    from specialist.knowledge.snapshot import load_snapshot, snapshot_dir

    kb, _, summary = load_snapshot(run_dir)
    shutil.copytree(snapshot_dir(run_dir), dest / "knowledge")
    example = format_context("…", kb.passages[:2])
    (dest / "README.md").write_text(knowledge_readme(summary, fmt, example), encoding="utf-8")
    return summary


def run_knowledge(model_ref: str) -> tuple[Path, dict] | None:
    """(run folder, its snapshot summary) when `model_ref` is a run trained with a knowledge base."""
    from specialist.knowledge.runtime import run_folder_of
    from specialist.knowledge.snapshot import has_snapshot, load_snapshot

    run = run_folder_of(model_ref)
    if run is None or not has_snapshot(run):
        return None
    return run, load_snapshot(run)[2]
