"""Chat: streamed answers from a run or a base model, two models side by side on the same
question (an arena), the system prompt editable.

The page keeps the conversation and sends it with every question, so the server holds no
session: a reload keeps the page's copy, a restarted studio loses nothing. Answers are
decoded by the same Generator as `specialist chat` (inference.engines.make_generator, on the
same engine), with the run's knowledge base when it was trained with one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from specialist.errors import SpecialistError
from specialist.studio.web import studio_of

router = APIRouter()


class Turn(BaseModel):
    role: str = Field(pattern="^(user|assistant)$")
    content: str = Field(max_length=20_000)


class ChatRequest(BaseModel):
    model: str = Field(min_length=1, max_length=1000)
    prompt: str = Field(min_length=1, max_length=20_000)
    system: str | None = Field(None, max_length=20_000)
    history: list[Turn] = Field(default_factory=list, max_length=200)
    max_new_tokens: int = Field(256, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    knowledge: bool = True


@router.get("/chat", response_class=HTMLResponse)
def chat_page(request: Request, model: str = "", model_b: str = "") -> Response:
    from specialist.models.registry import DEFAULT_MODEL, KNOWN_MODELS

    studio = studio_of(request)
    runs = [r for r in studio.runs() if r.loadable]
    choices = [r.name for r in runs] + list(KNOWN_MODELS)
    return studio.render(request, "chat.html", choices=choices,
                         model=model or (runs[0].name if runs else DEFAULT_MODEL), model_b=model_b or DEFAULT_MODEL)


@router.post("/chat/stream")
async def chat_stream(request: Request, body: ChatRequest) -> StreamingResponse:
    """Server-sent events: `passages` (when a knowledge base is used), `piece` per text piece,
    then `done` with the token counts, or `error` with the CLI's one-line message."""
    studio = studio_of(request)

    async def stream() -> AsyncIterator[str]:
        text_stream = None
        try:
            generator = await asyncio.to_thread(studio.generator, body.model)
            messages, hits, knowing = await asyncio.to_thread(_prepare, studio, generator, body)
            if hits is not None:
                yield _event("passages", {"passages": [{"id": h.passage.id, "title": h.passage.title,
                                                        "score": round(float(h.score), 3)} for h in hits]})
            from dataclasses import replace

            settings = replace(knowing, max_new_tokens=body.max_new_tokens, temperature=body.temperature)
            text_stream = generator.stream(messages, settings)
            while True:
                piece = await asyncio.to_thread(next, text_stream, None)
                if piece is None:
                    break
                yield _event("piece", {"text": piece})
                if await request.is_disconnected():
                    return
            answer = text_stream.answer
            text_stream = None
            yield _event("done", {"prompt_tokens": answer.prompt_tokens if answer else None,
                                  "completion_tokens": answer.completion_tokens if answer else None,
                                  "seconds": round(answer.seconds, 2) if answer else None})
        except SpecialistError as exc:
            yield _event("error", {"message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one line for the page, never a traceback
            yield _event("error", {"message": f"{type(exc).__name__}: {exc}".splitlines()[0]})
        finally:
            if text_stream is not None:  # the reader went away: stop decoding
                await asyncio.to_thread(text_stream.close)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _prepare(studio: Any, generator: Any, body: ChatRequest) -> tuple[list[dict[str, str]], list[Any] | None, Any]:
    """The conversation as `specialist chat` builds it (ChatSession: history trimmed to fit,
    the run's knowledge base retrieved into this turn), its hits, and the generation settings
    its knowledge base asks for (grounded numbers, context-aware decoding), as chat's."""
    from specialist.inference.sampling import GenerationSettings
    from specialist.serve.chat import ChatSession

    knowledge = studio.knowledge(body.model) if body.knowledge else None
    session = ChatSession(generator, (body.system or "").strip() or None, min(4096, generator.context_length),
                          GenerationSettings(max_new_tokens=body.max_new_tokens), knowledge=knowledge)
    session.history = [t.model_dump() for t in body.history]
    messages, _, hits = session.prepare(body.prompt)
    return messages, hits if knowledge is not None else None, session.settings


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
