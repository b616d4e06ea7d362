"""report.html: one self-contained page (charts are inline base64 PNGs drawn with matplotlib)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specialist.charts import png_data_uri, subplots
from specialist.evaluate.canary import html_section
from specialist.evaluate.facts import number_spans, shown_fact
from specialist.evaluate.report import METRICS, fmt, metric_rows
from specialist.io import atomic_write_json, atomic_write_text
from specialist.knowledge.grounding import numbers

COLORS = ["#8c8c8c", "#4c78a8", "#e45756", "#54a24b", "#b279a2", "#f58518"]


def _png(fig: Any) -> str:
    return png_data_uri(fig, dpi=110, bbox_inches="tight")


def _figure(width: float, height: float, ncols: int = 1) -> Any:
    return subplots(1, ncols, figsize=(width, height))


def metric_charts(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, image) for every metric some contender has a value for."""
    names = [c["name"] for c in doc["contenders"]]
    charts = []
    for info in METRICS:
        values = [c["metrics"].get(info.key) for c in doc["contenders"]]
        if all(v is None for v in values):
            continue
        fig, ax = _figure(3.4, 2.3)
        shown = [v if v is not None else 0.0 for v in values]
        if info.fmt == "pct":
            shown = [100 * v for v in shown]
        bars = ax.bar(range(len(names)), shown, color=COLORS[: len(names)])
        for bar, v in zip(bars, values):
            ax.annotate(fmt(v, info.fmt), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=15)
        arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(info.better, "")
        ax.set_title(info.label + arrow, fontsize=9)
        if info.fmt == "pct":
            ax.set_ylim(0, 112)  # shares on a fixed 0-100% scale, room for the labels
        else:
            ax.margins(y=0.2)
        ax.spines[["top", "right"]].set_visible(False)
        charts.append((info.label, _png(fig)))
    return charts


def distribution_chart(doc: dict[str, Any]) -> str:
    """Answer length (words) and style score per contender: box plots with every answer shown."""
    import numpy as np

    names = [c["name"] for c in doc["contenders"]]
    fig, axes = _figure(9, 3.2, ncols=2)
    for ax, key, title in ((axes[0], "words", "answer length (words)"), (axes[1], "style_score", "style score")):
        data = [[a[key] for a in c["answers"] if a.get(key) is not None] for c in doc["contenders"]]
        ax.boxplot(data, showfliers=False)
        rng = np.random.default_rng(0)  # fixed jitter: the same report draws the same picture
        for i, values in enumerate(data, 1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.6,
                       color=COLORS[(i - 1) % len(COLORS)])
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=8, rotation=15)
        ax.set_title(title, fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _metric_table(doc: dict[str, Any]) -> str:
    names = [c["name"] for c in doc["contenders"]]
    rows = []
    for row in metric_rows(doc):
        cells = "".join(f"<td class='num{' best' if c.best else ''}'>{_e(c.text)}</td>" for c in row.cells)
        rows.append(f"<tr><th>{_e(row.label)}</th>{cells}</tr>")
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _rules_table(doc: dict[str, Any]) -> str:
    if not doc["rules"]:
        return "<p>No rules declared (give --rules eval.yaml).</p>"
    head = "".join(f"<th>{_e(c['name'])}</th>" for c in doc["contenders"])
    rows = []
    for rule in doc["rules"]:
        cells = "".join(f"<td class='num'>{_e(fmt(c['metrics']['rules'].get(rule['name']), 'pct'))}</td>"
                        for c in doc["contenders"])
        rows.append(f"<tr><th>{_e(rule['name'])} <span class='dim'>({_e(rule['check'])}: {_e(rule['value'])})</span>"
                    f"</th>{cells}</tr>")
    return f"<table><tr><th>rule</th>{head}</tr>{''.join(rows)}</table>"


def _comparison(doc: dict[str, Any]) -> str:
    if not doc["comparison"]:
        return ""
    rows = "".join(f"<tr><th>{_e(r['aspect'])}</th><td>{_e(r['prompt_engineering'])}</td>"
                   f"<td>{_e(r['fine_tuning'])}</td></tr>"
                   for r in doc["comparison"])
    return f"<table><tr><th></th><th>prompt engineering</th><th>fine-tuning</th></tr>{rows}</table>"


def _marked(answer: str, unsupported: Sequence[str] | None) -> str:
    """The answer, escaped, with its unsupported numbers in <mark>."""
    if not answer:
        return "<span class=dim>(empty)</span>"
    values = {f.value for text in unsupported or () for f in numbers(text)}
    out, at = [], 0
    for start, end in number_spans(answer, values):
        out += [_e(answer[at:start]),
                f"<mark title='not in the question nor the knowledge base'>{_e(answer[start:end])}</mark>"]
        at = end
    return "".join(out) + _e(answer[at:])


def _fact_notes(a: dict[str, Any], reference: str) -> str:
    notes = []
    if a.get("fact_ok") is True:
        notes.append("<div class='ok'>facts right</div>")
    if a.get("missing_facts"):
        shown = ", ".join(shown_fact(f, reference) for f in a["missing_facts"])
        notes.append(f"<div class='wrong'>missing: {_e(shown)}</div>")
    if a.get("wrong_found"):
        shown = ", ".join(shown_fact(w, a.get("answer", "")) for w in a["wrong_found"])
        notes.append(f"<div class='wrong'>says what is wrong: {_e(shown)}</div>")
    if a.get("unsupported_numbers"):
        notes.append(f"<div class='wrong'>unsupported: {_e(', '.join(a['unsupported_numbers']))}</div>")
    if a.get("abstained") is True:
        notes.append("<div class='ok'>abstains (offers to check / hand over)</div>")
    elif a.get("abstained") is False:
        notes.append("<div class='wrong'>does not abstain on an unanswerable question</div>")
    return "".join(notes)


def _passages(retrieved: dict[str, Any] | None) -> str:
    if retrieved is None:
        return ""
    hits = retrieved["hits"]
    items = "".join(f"<li><code>{_e(h['id'])}</code> <b>{_e(h['title'])}</b> <span class='dim'>score "
                    f"{h['score']:.2f}</span><br>{_e(h['text'])}</li>" for h in hits)
    return (f"<details class='passages'><summary>{len(hits)} passage(s) retrieved</summary>"
            f"<ol>{items or '<li>(nothing found)</li>'}</ol></details>")


def _answers(doc: dict[str, Any]) -> str:
    names = [c["name"] for c in doc["contenders"]]
    head = "".join(f"<th>{_e(n)}</th>" for n in names)
    retrieved = (doc.get("knowledge") or {}).get("retrieved")
    rows = []
    for i in range(doc["examples"]):
        first = doc["contenders"][0]["answers"][i]
        cells = []
        for c in doc["contenders"]:
            a = c["answers"][i]
            failed = f"<div class='dim'>fails: {_e(', '.join(a['failed_rules']))}</div>" if a["failed_rules"] else ""
            cells.append(f"<td>{_marked(a['answer'], a.get('unsupported_numbers'))}"
                         f"<div class='dim'>style {a['style_score']:.2f} · {a['words']} words</div>{failed}"
                         f"{_fact_notes(a, first['reference'])}</td>")
        unanswerable = ("<div class='dim'>not answerable from the knowledge</div>"
                        if first.get("abstained") is not None else "")
        passages = _passages(retrieved[i] if retrieved else None)
        rows.append(f"<tr><td><b>{_e(first['prompt'])}</b>{unanswerable}{passages}</td>"
                    f"<td>{_e(first['reference'])}</td>{''.join(cells)}</tr>")
    return f"<table class='answers'><tr><th>prompt</th><th>reference</th>{head}</tr>{''.join(rows)}</table>"


def _knowledge(doc: dict[str, Any]) -> str:
    k = doc.get("knowledge")
    if not k:
        return ""
    recall = (fmt(k.get("retrieval_recall_at_k"), "pct") if k.get("retrieval_recall_at_k") is not None
              else "not measured (no facts)")
    sys_prompt = (f", prompt-engineering+knowledge system prompt <code>{_e(k['system_prompt'])}</code>"
                  if k.get("system_prompt") else "")
    return (f"<h2>Knowledge base</h2><p><code>{_e(k['origin'])}</code>: {k['passages']} passages "
            f"(<code>{_e(k['fingerprint'][:19])}</code>), top {k['top_k']} by {_e(k['method'])}, "
            f"language {_e(k.get('language') or '?')}; retrieval recall@{k['top_k']} {_e(recall)}{sys_prompt}. "
            f"{_GROUNDED[bool(k.get('grounded_numbers'))]} {_contrast(k.get('context_contrast'))}"
            "The passages retrieved for each prompt are under it below; "
            "<mark>highlighted</mark> numbers are in neither the question nor the knowledge base.</p>")


def _contrast(alpha: float | None) -> str:
    if not alpha:
        return "Context-aware decoding was off. "
    return (f"They were decoded context-aware (alpha {alpha:g}): each token scored by how much the passages "
            "raise it over the model's answer without them. ")


_GROUNDED = {True: "The +knowledge answers could state only numbers their prompt holds (grounded numbers).",
             False: "The +knowledge answers could state any number (grounded numbers off)."}


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ddd;padding:.35em .6em;vertical-align:top;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.best{background:#e6f4ea;font-weight:600}
.answers td{font-size:.9em;max-width:28em}.dim{color:#777;font-size:.85em}
.charts{display:flex;flex-wrap:wrap;gap:.5em}.charts img{border:1px solid #eee}
.verdict{font-size:1.15em;background:#f5f7fb;border-left:4px solid #4c78a8;padding:.8em 1em}
.wrong{color:#c62828;font-size:.85em;font-weight:600}.ok{color:#2e7d32;font-size:.85em}
mark{background:#ffcdd2}details.passages{font-size:.85em;margin-top:.4em}details.passages ol{padding-left:1.4em}
"""


def render_html(doc: dict[str, Any]) -> str:
    charts = "".join(f"<img alt='{_e(t)}' src='{src}'>" for t, src in metric_charts(doc))
    be = doc.get("break_even")
    be_txt = f"<p><b>Break-even assumptions:</b> {_e(be['assumptions'])}</p>" if be else ""
    clf = doc["style_classifier"]
    acc = (fmt(clf["heldout_accuracy"], "pct") if clf.get("heldout_accuracy") is not None
           else "not measured (too few examples)")
    notes = "".join(f"<li>{_e(n)}</li>" for n in doc["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>specialist eval: {_e(doc['model'])}</title>
<style>{CSS}</style></head>
<body>
<h1>Fine-tuning vs prompt engineering, measured</h1>
<p>Run <code>{_e(doc['model'])}</code> (base <code>{_e(doc['base_model'])}</code>) on <code>{_e(doc['data'])}</code>:
{doc['examples']} held-out prompts, {_e(doc['task'])} task, greedy decoding, seed {doc['settings']['seed']}.</p>
<p class="verdict">{_e(doc['verdict'])}</p>
<h2>Comparison</h2>{_comparison(doc)}{be_txt}
<h2>Metrics</h2>{_metric_table(doc)}
<p class="dim">Style classifier: {_e(clf['method'])}, {clf['target_examples']} target-style vs {clf['generic_examples']}
generic answers, held-out accuracy {_e(acc)}.</p>
{_knowledge(doc)}
{html_section(doc.get("general_ability"))}
<h2>Rules</h2>{_rules_table(doc)}
<h2>Charts</h2><div class="charts">{charts}</div>
<h2>Length and style-score distributions</h2><img alt="distributions" src="{distribution_chart(doc)}">
<h2>Answers side by side</h2>{_answers(doc)}
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"""


def write_html(doc: dict[str, Any], path: Path) -> None:
    atomic_write_text(path, render_html(doc))


def write_reports(doc: dict[str, Any], json_out: Path, html_out: Path) -> None:
    """report.json and report.html, as `specialist eval` and `specialist demo` write them."""
    atomic_write_json(json_out, doc)
    write_html(doc, html_out)
