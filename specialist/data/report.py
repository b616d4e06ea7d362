"""The check report three ways: a rich terminal summary, one JSON document, a self-contained
HTML page (histograms as embedded PNGs, the flagged records)."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from specialist.charts import png_data_uri, subplots
from specialist.data.check import CheckReport
from specialist.data.findings import CODES
from specialist.io import atomic_write_text

MAX_SHOWN = 20


def print_report(report: CheckReport, console: Console) -> None:
    ok = "[green]no errors[/green]" if not report.errors else f"[red]{len(report.errors)} error(s)[/red]"
    console.print(f"[bold]{escape(report.file)}[/bold] ({report.format}): {report.records} records, "
                  f"{report.valid} valid, {ok}, {len(report.warnings)} warning(s)")
    if report.eval:
        console.print(f"eval data [bold]{escape(report.eval['file'])}[/bold]: "
                      f"{report.eval['records']} records, {report.eval['valid']} valid")
    if report.knowledge:
        console.print(f"knowledge [bold]{escape(str(report.knowledge['origin']))}[/bold]: "
                      f"{_knowledge_line(report.knowledge)}",
                      highlight=False)
    for err in report.errors[:MAX_SHOWN]:
        where = f"{err.file}:{err.line}" + (f":{err.field}" if err.field else "")
        console.print(f"[red]{err.code}[/red] {escape(where)}: {escape(err.message)}", highlight=False)
    if len(report.errors) > MAX_SHOWN:
        console.print(f"… {len(report.errors) - MAX_SHOWN} more errors (use --json for all)")
    for w in report.warnings[:MAX_SHOWN]:
        where = f" {escape(w.file)}" if w.file and w.file != report.file else ""
        console.print(f"[yellow]{w.code}[/yellow] [bold]{w.kind}[/bold]{where}: {escape(w.message)}", highlight=False)
        console.print(f"      [dim]→ {escape(w.suggestion)}[/dim]", highlight=False)
    if len(report.warnings) > MAX_SHOWN:
        console.print(f"… {len(report.warnings) - MAX_SHOWN} more warnings (use --json or --html for all)")
    _print_stats(report.stats, console)


def _knowledge_line(k: dict[str, Any]) -> str:
    return (f"{k['passages']} passages; {k['contradicted_records']} record(s) state a number it contradicts (W116), "
            f"{k['unsupported_records']} state facts it does not hold (W117); {k['unpractised_figures']} of its "
            f"{k['figures']} figures are stated by fewer than {k['practice_min']} answers (W122)")


def _print_stats(stats: dict[str, Any], console: Console) -> None:
    if not stats.get("examples"):
        return
    table = Table(title="lengths", show_edge=False)
    for col in ("field", "unit", "min", "median", "p95", "max"):
        table.add_column(col, justify="right" if col not in ("field", "unit") else "left")
    for unit in ("characters", "tokens"):
        for name, d in stats.get(unit, {}).items():
            if isinstance(d, dict):
                table.add_row(name, unit, str(d["min"]), f"{d['median']:.0f}", f"{d['p95']:.0f}", str(d["max"]))
    console.print(table)
    t = stats["training"]
    approx = "≈" if t["tokens_estimated"] else ""
    console.print(escape(f"formats: {stats['formats']}  roles: {stats['roles']}  "
                         f"languages: {stats['languages'] or '-'}  "
                         f"refusals: {stats['refusal_share']:.0%}"), highlight=False)
    for key in ("labels", "topics"):
        if key in stats:
            console.print(escape(f"{key}: {stats[key]}"), highlight=False)
    minutes = (t["estimated_seconds"] or 0) / 60
    console.print(f"training: {approx}{t['tokens_per_epoch']:,} tokens/epoch × {t['epochs']:g} epochs "
                  f"(max length {t['max_length']}); "
                  f"≈{minutes:.1f} min at an assumed {t['assumed_tokens_per_second']:g} tokens/s; "
                  f"API fine-tuning ≈{t['estimated_api_cost']:.2f} at {t['price_per_million_tokens']:g} "
                  "per million tokens",
                  highlight=False)
    if t["tokens_estimated"]:
        console.print("[dim]token counts estimated at ~4 characters per token: "
                      "give --model for exact counts and truncation checks[/dim]")


# ---------------------------------------------------------------- HTML
def _histogram(values: list[float], title: str, xlabel: str) -> str:
    fig, ax = subplots(figsize=(5, 3), dpi=100)
    ax.hist(values, bins=min(50, max(5, len(set(values)))), color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("records")
    fig.tight_layout()
    return f'<img alt="{html.escape(title)}" src="{png_data_uri(fig)}">'


def _bar(counts: dict[str, int], title: str) -> str:
    items = list(counts.items())[:30]
    fig, ax = subplots(figsize=(5, max(2, 0.25 * len(items) + 1)), dpi=100)
    ax.barh([k[:30] for k, _ in items][::-1], [v for _, v in items][::-1], color="#55a868")
    ax.set_title(title)
    fig.tight_layout()
    return f'<img alt="{html.escape(title)}" src="{png_data_uri(fig)}">'


def render_html(report: CheckReport) -> str:
    e = html.escape
    parts = [f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Data check: {e(report.file)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}}
.err{{color:#b00}} .warn{{color:#a60}}
.rec{{white-space:pre-wrap;font-size:90%}} img{{margin:.5em}}</style></head><body>
<h1>Data check: {e(report.file)}</h1>
<p>{report.records} records ({e(report.format)}), {report.valid} valid,
{len(report.errors)} errors, {len(report.warnings)} warnings.</p>"""]
    if report.knowledge:
        parts.append(f"<p>Knowledge base {e(str(report.knowledge['origin']))}: "
                     f"{e(_knowledge_line(report.knowledge))}.</p>")
    if report.errors:
        parts.append("<h2>Errors</h2><table><tr><th>code</th><th>where</th><th>message</th></tr>")
        for err in report.errors:
            where = f"{e(err.file)}:{err.line}{':' + e(err.field) if err.field else ''}"
            parts.append(f"<tr><td class=err>{err.code}</td><td>{where}</td>"
                         f"<td>{e(err.message)}</td></tr>")
        parts.append("</table>")
    if report.warnings:
        parts.append("<h2>Warnings</h2>"
                     "<table><tr><th>code</th><th>kind</th><th>message</th><th>suggestion</th></tr>")
        for w in report.warnings:
            parts.append(f"<tr><td class=warn>{w.code}</td><td>{e(w.kind)}</td><td>{e(w.message)}</td>"
                         f"<td>{e(w.suggestion)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Lengths</h2>")
    for name, values in report.lengths.items():
        if values:
            parts.append(_histogram(values, name, name.split(" ")[-1]))
    for key in ("labels", "topics", "languages"):
        if report.stats.get(key):
            parts.append(_bar(report.stats[key], key))
    parts.append(f"<h2>Statistics</h2><pre>{e(_pretty(report.stats))}</pre>")
    if report.flagged:
        by_line: dict[int, list[str]] = defaultdict(list)
        for w in report.warnings:
            if w.file == report.file:
                for line in w.lines:
                    by_line[line].append(w.code)
        parts.append("<h2>Flagged records</h2>"
                     "<table><tr><th>line</th><th>findings</th><th>prompt</th><th>answer</th></tr>")
        for line in sorted(report.flagged)[:2000]:
            rec = report.flagged[line]
            codes = ", ".join(f"{c} {CODES[c].kind}" for c in sorted(set(by_line[line])))
            parts.append(f"<tr><td>{line}</td><td>{e(codes)}</td><td class=rec>{e(rec['prompt'][:2000])}</td>"
                         f"<td class=rec>{e(rec['completion'][:2000])}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _pretty(stats: dict[str, Any]) -> str:
    import json

    return json.dumps(stats, ensure_ascii=False, indent=2)


def write_html(report: CheckReport, path: Path) -> None:
    atomic_write_text(path, render_html(report))
