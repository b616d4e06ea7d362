"""Export: `specialist export` of a run as merged weights, a GGUF file or an Ollama folder, in a
child process with its progress, and the files to download."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from specialist.errors import SpecialistError
from specialist.studio.runs import check_name
from specialist.studio.web import redirect, studio_of

router = APIRouter()
OUTTYPES = ("f16", "bf16", "q8_0", "q4_0")


@router.get("/export", response_class=HTMLResponse)
def export_page(request: Request, run: str = "") -> Response:
    from specialist.export.build import FORMATS

    studio = studio_of(request)
    runs = [r for r in studio.runs() if r.loadable]
    if not run and runs:
        run = runs[0].name
    jobs = studio.jobs.all("export", run) if run else []
    return studio.render(request, "export.html", runs=runs, run=run, formats=FORMATS, outtypes=OUTTYPES,
                         job=jobs[0] if jobs else None, exports=_exports(studio, run) if run else [])


@router.post("/export")
def start_export(request: Request, run: str = Form(...), format: str = Form(...), outtype: str = Form("f16"),
                 system: str = Form("")) -> Response:
    from specialist.export.build import FORMATS

    studio = studio_of(request)
    path = studio.run_path(check_name(run))
    if format not in FORMATS:
        raise SpecialistError(f"--format: use one of {', '.join(FORMATS)}")
    if studio.jobs.is_locked(studio.train_key(run)):
        raise SpecialistError(f"{run}: still training; export it when the training has finished")
    suffix = f"-{outtype}" if format != "merged" else ""
    out = studio.exports_dir / f"{run}-{format}{suffix}"
    argv = ["export", "--model", str(path), "--format", format, "--out", str(out), "--overwrite"]
    if format != "merged":
        argv += ["--outtype", outtype]
    if format == "ollama" and system.strip():
        prompt = studio.state_dir / "configs" / f"{run}-ollama-system.txt"
        prompt.parent.mkdir(parents=True, exist_ok=True)
        prompt.write_text(system.strip() + "\n", encoding="utf-8")
        argv += ["--system-prompt", str(prompt)]
    studio.jobs.start("export", f"export:{out}", argv, run,
                      f"{out.name}: this export is already running; wait for it or cancel it")
    return redirect(request, "/export", run=run)


def _exports(studio: Any, run: str) -> list[dict[str, Any]]:
    out = []
    for folder in sorted(studio.exports_dir.glob(f"{check_name(run)}-*")):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        out.append({"name": folder.name, "path": folder,
                    "files": [{"name": str(p.relative_to(folder)), "size": _size(p.stat().st_size),
                               "url": "/files/" + str(p.relative_to(studio.runs_dir))} for p in files]})
    return out


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

