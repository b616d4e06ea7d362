"""Small helpers the page modules share."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from specialist.errors import SpecialistError
from specialist.studio.state import Studio


def studio_of(request: Request) -> Studio:
    return request.app.state.studio


def redirect(request: Request, path: str, **params: object) -> Response:
    """After a successful POST: htmx navigates (HX-Redirect), a plain form follows the 303."""
    url = path + ("?" + urlencode({k: v for k, v in params.items() if v is not None}) if params else "")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def existing_file(text: str, what: str) -> Path:
    """A path the user typed: relative paths are taken from where the studio was started."""
    if not text or not text.strip():
        raise SpecialistError(f"give the {what} (a file path)")
    path = Path(text.strip()).expanduser()
    if not path.exists():
        raise SpecialistError(f"{path}: no such file ({what})")
    return path.resolve()


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
