"""Train: a form generated from TrainConfig, start/stop/resume as `specialist train` in a child
process, live loss / eval loss / tokens/s / ETA over server-sent events read from
RUN/metrics.jsonl, and the runs as their folders say."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from specialist.errors import SpecialistError
from specialist.io import atomic_write_text
from specialist.studio.forms import parse_train_form, train_fields
from specialist.studio.jobs import log_tail
from specialist.studio.runs import check_name, progress, read_metrics
from specialist.studio.web import fmt_seconds, redirect, studio_of

router = APIRouter()


@router.get("/train", response_class=HTMLResponse)
def train_page(request: Request, data: str = "") -> Response:
    studio = studio_of(request)
    return studio.render(request, "train.html", fields=train_fields(), runs=studio.runs(), data=data)


@router.post("/train")
async def start_training(request: Request) -> Response:
    from specialist.run_folder import is_used

    studio = studio_of(request)
    form = await request.form()
    data = str(form.get("data") or "").strip()
    name = str(form.get("run_name") or "").strip() or (
        f"{Path(data).stem}-{form.get('method') or 'lora'}" if data else "")
    if not name:
        raise SpecialistError("give the training data (a file path)")
    run = studio.run_path(check_name(name))
    values = {k: v for k, v in form.items() if k not in ("run_name", "overwrite")}
    for key in ("data", "eval_data", "knowledge"):  # the child runs from the same folder, but say it in full
        if values.get(key) and Path(str(values[key])).expanduser().exists():
            values[key] = str(Path(str(values[key])).expanduser().resolve())
    config = await asyncio.to_thread(parse_train_form, values, run)  # the CLI's validation and message
    overwrite = form.get("overwrite") is not None
    if studio.jobs.is_locked(studio.train_key(name)) or studio.run(name).status == "running":
        raise SpecialistError(_busy(name))
    if is_used(run) and not overwrite:
        raise SpecialistError(f"{name}: a run folder already exists there; resume it from its page, tick "
                              "\"replace an existing run\", or choose another run name")
    config_file = studio.state_dir / "configs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    atomic_write_text(config_file, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, allow_unicode=True))
    argv = ["train", "--config", str(config_file), "--out", str(run)] + (["--overwrite"] if overwrite else [])
    studio.jobs.start("train", studio.train_key(name), argv, name, _busy(name))
    return redirect(request, f"/train/{name}")


@router.post("/train/{name}/resume")
def resume(request: Request, name: str) -> Response:
    studio = studio_of(request)
    run = studio.run_path(name)
    if not (run / "config.yaml").exists():
        raise SpecialistError(f"{name}: no run to resume (config.yaml missing); start it from the form")
    if studio.run(name).status == "running":  # started from a terminal: the studio holds no lock on it
        raise SpecialistError(_busy(name))
    studio.jobs.start("train", studio.train_key(name), ["train", "--out", str(run), "--resume"], name, _busy(name))
    return redirect(request, f"/train/{name}")


@router.post("/train/{name}/stop")
def stop(request: Request, name: str) -> Response:
    studio = studio_of(request)
    job = studio.jobs.latest("train", check_name(name))
    if job is None or not job.running:
        raise SpecialistError(f"{name}: no training of this studio is running there")
    studio.jobs.cancel(job)
    return redirect(request, f"/train/{name}")


@router.get("/train/{name}", response_class=HTMLResponse)
def run_page(request: Request, name: str) -> Response:
    studio = studio_of(request)
    run = studio.run(name)
    job = studio.jobs.latest("train", name)
    if not run.path.is_dir() and job is None:  # a just-started child may not have made the folder yet
        raise SpecialistError(f"{name}: no run folder in {studio.runs_dir}")
    run.status = _status(run.status, job)
    records, _ = read_metrics(run.path / "metrics.jsonl")
    config = (run.path / "config.yaml").read_text(encoding="utf-8") if (run.path / "config.yaml").exists() else ""
    return studio.render(request, "run.html", run=run, job=job, config=config, progress=progress(records),
                         tail=log_tail(studio.jobs.log(job), 8) if job else [], fmt_seconds=fmt_seconds,
                         can_resume=run.status != "running" and (run.path / "checkpoints").is_dir()
                         and run.status != "completed")


@router.get("/train/{name}/events")
async def events(request: Request, name: str) -> StreamingResponse:
    """metric events (one per metrics.jsonl record), status events (progress, status) and a
    final end event once the run is no longer running."""
    studio = studio_of(request)
    path = studio.run_path(name) / "metrics.jsonl"

    async def stream() -> AsyncIterator[str]:
        offset, seen = 0, []
        yield "retry: 2000\n\n"
        while True:
            size = path.stat().st_size if path.exists() else 0
            if size < offset:  # a resume trimmed the records logged after its checkpoint
                offset, seen = 0, []
                yield _event("reset", {})
            records, offset = await asyncio.to_thread(read_metrics, path, offset)
            for r in records:
                seen.append(r)
                yield _event("metric", r)
            run = await asyncio.to_thread(studio.run, name)
            state = _state(studio, name, run, seen)
            yield _event("status", state)
            if run.status != "running" and not records:
                yield _event("end", state)
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _status(status: str, job: Any) -> str:
    """A training that failed before writing run.json (a bad model, unreadable data) is failed."""
    if status in ("unknown", "not started") and job is not None and not job.running:
        return "failed" if job.status in ("failed", "cancelled") else status
    return status


def _state(studio: Any, name: str, run: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    p = progress(records)
    job = studio.jobs.latest("train", name)
    run.status = _status(run.status, job)
    return {**p, "status": run.status, "eta": fmt_seconds(p["eta_seconds"]) if p["eta_seconds"] is not None else "–",
            "error": job.error if job is not None and not job.running and run.status != "completed" else None}


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _busy(name: str) -> str:
    return (f"{name}: a training is already running in this run folder; stop it first (its page has the "
            "button, or Ctrl-C where it was started) or choose another run name")
