"""Data: open or upload a dataset, the `data check` findings linked to their records, record
editing with a re-check, length histograms, split and convert.

The original file is never modified: the first edit writes DATA_DIR/<name>.edited.jsonl (a
copy with that one line replaced, so every other finding keeps its line number) and later
edits change that copy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from specialist.errors import SpecialistError
from specialist.io import atomic_write_lines
from specialist.studio.web import existing_file, redirect, studio_of

router = APIRouter()
EDITED = ".edited"
MAX_UPLOAD = 200 * 1024 * 1024
MAX_RECORDS_SHOWN = 200


@router.get("/data", response_class=HTMLResponse)
def data_page(request: Request, file: str = "", model: str = "", line: int | None = None) -> Response:
    studio = studio_of(request)
    context: dict[str, Any] = {"file": file, "model": model, "workspace": _workspace(studio.data_dir),
                               "report": None, "examples": _examples()}
    if file:
        path = existing_file(file, "dataset")
        from specialist.data.check import CheckSettings, run_check

        report = run_check(path, CheckSettings(model=model.strip() or None))
        lines = _raw_lines(path) if report.format == "jsonl" else {}
        findings = _findings(report)
        flagged = sorted({ln for f in findings for ln in f["lines"]})
        shown = flagged[:MAX_RECORDS_SHOWN]
        if line is not None and line not in shown:
            shown.insert(0, line)
        context.update(
            path=path, report=report, findings=findings, editable=report.format == "jsonl",
            records=[{"line": ln, "text": lines.get(ln, ""), "codes": _codes_at(findings, ln)} for ln in shown],
            more_flagged=max(0, len(flagged) - len(shown)), histograms=_histograms(report.lengths),
            is_copy=_is_copy(studio, path), stats=report.stats)
    return studio.render(request, "data.html", **context)


@router.post("/data/open")
def open_dataset(request: Request, path: str = Form(...), model: str = Form("")) -> Response:
    return redirect(request, "/data", file=str(existing_file(path, "dataset")), model=model or None)


@router.post("/data/upload")
async def upload(request: Request, dataset: UploadFile = File(...)) -> Response:
    studio = studio_of(request)
    name = Path(dataset.filename or "dataset.jsonl").name
    if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
        name = re.sub(r"[^\w.-]", "_", name).lstrip(".") or "dataset.jsonl"
    target = _free_name(studio.data_dir / name)
    data = await dataset.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise SpecialistError(f"{name}: larger than {MAX_UPLOAD // 2**20} MB; open it by path instead")
    target.write_bytes(data)
    return redirect(request, "/data", file=str(target))


@router.post("/data/record")
def edit_record(request: Request, file: str = Form(...), line: int = Form(...), text: str = Form(""),
                action: str = Form("save"), model: str = Form("")) -> Response:
    """Replace (or blank out: action=delete) one JSONL line in the studio's copy; then the page
    re-checks the copy."""
    studio = studio_of(request)
    source = existing_file(file, "dataset")
    raw = source.read_bytes().decode("utf-8", errors="replace").split("\n")
    if line < 1 or line > len(raw):
        raise SpecialistError(f"{source}:{line}: no such line (the file has {len(raw)})")
    new = "" if action == "delete" else _one_line(text)
    raw[line - 1] = new
    target = source if _is_copy(studio, source) else _free_name(studio.data_dir / f"{source.stem}{EDITED}.jsonl")
    atomic_write_lines(target, raw[:-1] if raw and raw[-1] == "" else raw)
    return redirect(request, "/data", file=str(target), model=model or None, line=line if new else None)


@router.post("/data/split")
def split(request: Request, file: str = Form(...), eval_fraction: float = Form(0.1), seed: int = Form(0)) -> Response:
    from specialist.data.split import split_dataset

    studio = studio_of(request)
    source = existing_file(file, "dataset")
    out = _free_name(studio.data_dir / f"{source.stem}-split")
    result = split_dataset(source, eval_fraction, out, seed=seed)
    return studio.render(request, "_done.html", message=(
        f"{len(result.train)} training and {len(result.eval)} evaluation records "
        f"({result.clusters} near-duplicate clusters kept on one side)"),
        links=[("open train.jsonl", f"/data?file={result.train_path}"),
               ("open eval.jsonl", f"/data?file={result.eval_path}")])


@router.post("/data/convert")
def convert(request: Request, file: str = Form(...), to: str = Form(...)) -> Response:
    from specialist.data.convert import convert_dataset

    studio = studio_of(request)
    source = existing_file(file, "dataset")
    out = _free_name(studio.data_dir / f"{source.stem}.{to}.jsonl")
    written, notes = convert_dataset(source, to, out)
    return studio.render(request, "_done.html", message=f"{written} records written as {to}", notes=notes,
                         links=[(f"open {out.name}", f"/data?file={out}")])


# ---------------------------------------------------------------- helpers
def _one_line(text: str) -> str:
    """A record as one JSONL line: valid JSON is re-serialised compactly; anything else is kept
    (newlines folded) so the re-check can locate what is still wrong."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except json.JSONDecodeError:
        return " ".join(text.splitlines()).strip()


def _is_copy(studio: Any, path: Path) -> bool:
    return path.parent == studio.data_dir and EDITED in path.name


def _free_name(path: Path) -> Path:
    """`path`, or `name-2.ext`, `name-3.ext`… when it is taken: nothing is overwritten."""
    if not path.exists():
        return path
    for i in range(2, 1000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise SpecialistError(f"{path}: too many copies; clean up {path.parent}")


def _raw_lines(path: Path) -> dict[int, str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return dict(enumerate(text.split("\n"), start=1))


def _findings(report: Any) -> list[dict[str, Any]]:
    """Errors and warnings as one list; `lines` only where they point into the checked file."""
    from specialist.data.findings import CODES

    out = []
    for e in report.errors:
        out.append({"severity": "error", "code": e.code, "title": CODES[e.code].title, "message": e.message,
                    "field": e.field, "lines": [e.line] if e.file == report.file and e.line else [],
                    "where": f"{Path(e.file).name}:{e.line}" + (f":{e.field}" if e.field else ""),
                    "fix": CODES[e.code].fix})
    for w in report.warnings:
        mine = not w.file or w.file == report.file
        out.append({"severity": "warning", "code": w.code, "title": CODES[w.code].title, "message": w.message,
                    "field": "", "lines": list(w.lines) if mine else [], "fix": w.suggestion,
                    "where": f"{Path(w.file or report.file).name}:" + ",".join(map(str, w.lines[:8]))
                             + ("…" if len(w.lines) > 8 else "")})
    return out


def _codes_at(findings: list[dict[str, Any]], line: int) -> list[str]:
    return sorted({f["code"] for f in findings if line in f["lines"]})


def _histograms(lengths: dict[str, list[float]], bins: int = 20) -> list[dict[str, Any]]:
    """Bars for inline SVG: (x, height) in a 0..100 box, with the bin edges for labels."""
    import numpy as np

    out = []
    for title, values in lengths.items():
        if not values:
            continue
        counts, edges = np.histogram(np.asarray(values, dtype=float), bins=min(bins, max(1, len(set(values)))))
        top = int(counts.max()) or 1
        width = 100 / len(counts)
        out.append({"title": title, "max": top, "low": f"{edges[0]:.0f}", "high": f"{edges[-1]:.0f}",
                    "bars": [{"x": round(i * width, 3), "w": round(width * 0.9, 3), "h": round(100 * c / top, 2),
                              "count": int(c), "from": f"{edges[i]:.0f}", "to": f"{edges[i + 1]:.0f}"}
                             for i, c in enumerate(counts)]})
    return out


def _workspace(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime, reverse=True)[:30]


def _examples() -> list[Path]:
    """The example datasets shipped next to the package (a source checkout), to start from."""
    root = Path(__file__).resolve().parents[2] / "examples"
    return sorted(root.glob("*/*.jsonl")) if root.is_dir() else []
