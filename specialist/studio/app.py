"""The studio's FastAPI application: one page per stage, pages rendered on the server (Jinja2),
htmx and uPlot served from the package (no CDN: it works offline).

Every route is behind the API key when one is set (a bearer header, or a cookie the key page
sets). Errors reach the user as the one line the CLI would print (SpecialistError's message),
never a traceback."""

from __future__ import annotations

import logging
import secrets
import traceback
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from specialist.errors import SpecialistError
from specialist.studio import chat_page, data_page, export_page, proof_page, train_page
from specialist.studio.jobs import log_tail, progress_rows
from specialist.studio.state import HERE, Studio, StudioSettings

COOKIE = "specialist_studio_key"
log = logging.getLogger("specialist.studio")


def create_app(settings: StudioSettings) -> FastAPI:
    studio = Studio(settings)
    app = FastAPI(title="specialist studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        key = settings.api_key
        if key and not request.url.path.startswith("/login"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
                request.cookies.get(COOKIE, "")
            if not secrets.compare_digest(given.encode(), key.encode()):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse(f"/login?next={quote(str(request.url.path))}", status_code=303)
                return PlainTextResponse("unauthorized: this studio needs its API key", status_code=401)
        return await call_next(request)

    @app.exception_handler(SpecialistError)
    async def specialist_error(request: Request, exc: SpecialistError) -> Response:
        return _error_response(request, str(exc), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("studio: %s", "".join(traceback.format_exception(exc)))  # the traceback for the terminal only
        return _error_response(request, f"{type(exc).__name__}: {exc}".splitlines()[0], 500)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/data", status_code=303)

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/data") -> Response:
        return studio.render(request, "login.html", next=next if next.startswith("/") else "/data")

    @app.post("/login")
    def login(key: str = Form(...), next: str = Form("/data")) -> Response:
        if not settings.api_key or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
            return RedirectResponse(f"/login?next={quote(next)}&wrong=1", status_code=303)
        response = RedirectResponse(next if next.startswith("/") else "/data", status_code=303)
        response.set_cookie(COOKIE, key, httponly=True, samesite="strict")
        return response

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_fragment(request: Request, job_id: str) -> Response:
        job = studio.jobs.get(job_id)
        text = studio.jobs.log(job)
        return studio.render(request, "_job.html", job=job, rows=progress_rows(text), tail=log_tail(text))

    @app.get("/jobs/{job_id}/log", response_class=PlainTextResponse)
    def job_log(job_id: str) -> str:
        job = studio.jobs.get(job_id)
        return "\n".join(log_tail(studio.jobs.log(job), 400))

    @app.post("/jobs/{job_id}/cancel")
    def job_cancel(request: Request, job_id: str) -> Response:
        job = studio.jobs.get(job_id)
        studio.jobs.cancel(job)
        return RedirectResponse(request.headers.get("referer") or "/data", status_code=303)

    @app.get("/files/{path:path}")
    def download(path: str) -> Response:
        """Files under the runs directory (exports, reports, edited datasets)."""
        target = studio.runs_dir / path
        if not studio.within(target) or studio.state_dir in target.resolve().parents or not target.is_file():
            raise SpecialistError(f"{path}: no such file under {studio.runs_dir}")
        return FileResponse(target, filename=target.name)

    for module in (data_page, train_page, proof_page, chat_page, export_page):
        app.include_router(module.router)
    return app


def _error_response(request: Request, message: str, status: int) -> Response:
    studio: Studio = request.app.state.studio
    if request.headers.get("hx-request") or "text/html" not in request.headers.get("accept", ""):
        # htmx swaps this into the page's error slot; other clients get the line as text
        if request.headers.get("hx-request"):
            return HTMLResponse(f'<p class="error" role="alert">error: {_escape(message)}</p>', status_code=200,
                                headers={"HX-Retarget": "#errors", "HX-Reswap": "innerHTML"})
        return PlainTextResponse(f"error: {message}", status_code=status)
    return studio.render(request, "error.html", message=message, page="error")


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 7860, **kwargs: Any) -> Any:
    """uvicorn's settings for a studio app: the serve command's HTTP protocol, with its request
    (slow headers or body: 408) and send (a client that takes nothing) deadlines."""
    import uvicorn

    from specialist.serve.http import protocol_class

    settings: StudioSettings = app.state.studio.settings
    kwargs = {"log_level": "warning", **kwargs}
    return uvicorn.Config(app, host=host, port=port, http=protocol_class(settings.request_timeout,
                                                                          settings.send_timeout), **kwargs)


def serve(host: str, port: int, settings: StudioSettings) -> None:
    import uvicorn

    from specialist.console import err_console

    app = create_app(settings)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    err_console.print(f"specialist studio: open [bold]http://{shown}:{port}/[/bold]  "
                      f"(runs in {app.state.studio.runs_dir}; "
                      "Ctrl-C stops the studio, not the trainings it started)", highlight=False)
    uvicorn.Server(uvicorn_config(app, host, port)).run()

