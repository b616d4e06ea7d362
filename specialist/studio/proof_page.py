"""Proof: `specialist eval` of a run (with the +knowledge contenders when the run has a
knowledge base or one is given), then its report.json: the measured table, the comparison
with prompt engineering and, per prompt, every contender's answer side by side, filtered to
failing rules, wrong facts or the prompts the contenders disagree on most."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from specialist.errors import SpecialistError
from specialist.studio.runs import check_name
from specialist.studio.web import existing_file, redirect, studio_of

router = APIRouter()
FILTERS = {"all": "every prompt", "failing-rule": "a rule fails", "wrong-fact": "a fact is wrong",
           "disagreement": "largest disagreement first"}


@router.get("/proof", response_class=HTMLResponse)
def proof_page(request: Request, run: str = "", show: str = "all", contender: str = "") -> Response:
    from specialist.evaluate.report import metric_rows

    studio = studio_of(request)
    runs = [r for r in studio.runs() if r.loadable]
    if not run and runs:
        run = next((r.name for r in runs if r.has_report), runs[0].name)
    context: dict[str, Any] = {"runs": runs, "run": run, "show": show if show in FILTERS else "all",
                               "filters": FILTERS, "doc": None, "job": None, "contender": contender}
    if run:
        view = studio.run(run)
        context["view"] = view
        context["default_data"] = _default_eval_data(view.summary)
        context["has_knowledge"] = (view.path / "knowledge").is_dir()
        context["job"] = studio.jobs.latest("eval", run)
        report = view.path / "eval" / "report.json"
        if report.exists():
            doc = json.loads(report.read_text(encoding="utf-8"))
            names = [c["name"] for c in doc["contenders"]]
            rows = metric_rows(doc)
            prompts = _prompts(doc)
            context.update(doc=doc, names=names, metric_rows=rows, prompts=_filtered(prompts, context["show"]),
                           total=len(prompts), report_mtime=report.stat().st_mtime)
    return studio.render(request, "proof.html", **context)


@router.post("/proof")
def start_eval(request: Request, run: str = Form(...), data: str = Form(...), limit: str = Form(""),
               max_new_tokens: str = Form(""), style_negatives: str = Form(""), knowledge: str = Form(""),
               canary: str = Form("")) -> Response:
    """`canary`: the form's checkbox, sent only when ticked (HTML leaves an unticked one out)."""
    studio = studio_of(request)
    path = studio.run_path(check_name(run))
    if studio.jobs.is_locked(studio.train_key(run)):
        raise SpecialistError(f"{run}: still training; evaluate it when the training has finished")
    argv = ["eval", "--model", str(path), "--data", str(existing_file(data, "evaluation data"))]
    for flag, value in (("--limit", limit), ("--max-new-tokens", max_new_tokens),
                        ("--style-negatives", style_negatives)):
        if value.strip():
            if not value.strip().isdigit() or int(value) < 1:
                raise SpecialistError(f"{flag}: a whole number of at least 1 (got {value!r})")
            argv += [flag, value.strip()]
    if knowledge.strip():
        argv += ["--knowledge", str(existing_file(knowledge, "knowledge base"))]
    if not canary:
        argv.append("--no-canary")
    studio.jobs.start("eval", f"eval:{path}", argv, run,
                      f"{run}: an evaluation of this run is already running; wait for it or cancel it")
    return redirect(request, "/proof", run=run)


def _default_eval_data(summary: dict[str, Any]) -> str:
    """The run's held-out data, else eval.jsonl next to its training data."""
    if summary.get("eval_data") and Path(summary["eval_data"]).exists():
        return summary["eval_data"]
    dataset = summary.get("dataset")
    if dataset and (Path(dataset).parent / "eval.jsonl").exists():
        return str(Path(dataset).parent / "eval.jsonl")
    return ""


def _prompts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per prompt: the reference and every contender's answer, with what went wrong."""
    from specialist.evaluate.facts import shown_fact

    contenders = doc["contenders"]
    retrieved = (doc.get("knowledge") or {}).get("retrieved") or []
    out = []
    for i, first in enumerate(contenders[0]["answers"] if contenders else []):
        answers = []
        for c in contenders:
            a = c["answers"][i]
            answers.append({"name": c["name"], "text": a["answer"], "failed_rules": a.get("failed_rules") or [],
                            "fact_ok": a.get("fact_ok"), "abstained": a.get("abstained"),
                            # as a reader says them: the reference's words for what is missing,
                            # the answer's own for what it says wrongly
                            "missing": [shown_fact(f, first["reference"]) for f in a.get("missing_facts") or []],
                            "wrong_found": [shown_fact(w, a["answer"]) for w in a.get("wrong_found") or []],
                            "unsupported": a.get("unsupported_numbers") or [], "style": a.get("style_score"),
                            "words": a.get("words"), "passages": a.get("passages") or [],
                            # a wrong fact, or an invention where it should have offered to check
                            "wrong": a.get("fact_ok") is False or a.get("abstained") is False})
        out.append({"index": i + 1, "prompt": first["prompt"], "reference": first["reference"], "answers": answers,
                    "failing_rule": any(a["failed_rules"] for a in answers),
                    "wrong_fact": any(a["wrong"] for a in answers),
                    "disagreement": _disagreement([a["text"] for a in answers]),
                    "hits": retrieved[i]["hits"] if i < len(retrieved) else []})
    return out


def _disagreement(texts: list[str]) -> float:
    """100 minus the mean pairwise chrF of the answers: 0 when all say the same."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    pairs = [(a, b) for i, a in enumerate(texts) for b in texts[i + 1:]]
    if not pairs:
        return 0.0
    return round(100 - sum(chrf.sentence_score(a, [b]).score for a, b in pairs) / len(pairs), 1)


def _filtered(prompts: list[dict[str, Any]], show: str) -> list[dict[str, Any]]:
    if show == "failing-rule":
        return [p for p in prompts if p["failing_rule"]]
    if show == "wrong-fact":
        return [p for p in prompts if p["wrong_fact"]]
    if show == "disagreement":
        return sorted(prompts, key=lambda p: -p["disagreement"])
    return prompts

