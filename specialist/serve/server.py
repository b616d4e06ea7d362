"""An OpenAI-compatible HTTP API over one loaded model (FastAPI + uvicorn).

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions, with
and without streaming (server-sent events ending in `data: [DONE]`).

One worker thread owns the model (serve/worker.py): concurrent requests that can share their
sampling settings decode as one batch, and a full queue answers 429. Oversize bodies, prompts
and token budgets answer 4xx; every error has OpenAI's shape
{"error": {"message", "type", "param", "code"}}. A client that hangs up (streaming or not)
cancels its row at the next token, or its place in the queue. The API key, compared in
constant time, guards every route but /health, which tells a probe without it only
{"status": "ok"}; the request and send deadlines against slow clients are in serve/http.py.
No request field names a file: the model field is only compared with the served model's name.

Request bodies are closed sets (serve/schemas.py): a field the server does not know, or an
OpenAI field it does not implement set to anything but its "off" value, is refused with a 400
naming it (the list is in docs/api.md). Log-probabilities (`logprobs`, `echo`,
`top_logprobs`) are computed by the engine (inference/logprobs.py: log-softmax of the raw
logits); this module only shapes them into OpenAI's JSON.

A model served with a knowledge base (its run's snapshot, or --knowledge) retrieves inside the
server: /v1/chat/completions searches the knowledge base with the last user message and puts
the passages found into that message (models.template.attach_context, the layout the
specialist was trained on), so clients send plain questions. The response names the passages
in an extra top-level field "context": [{"id", "score", "title"}] (streamed: on the first
chunk). A request opts out with the extra body field "knowledge": false. /v1/completions
takes raw text and does no retrieval: the client builds the whole prompt itself. /health and
/v1/models say whether a knowledge base is attached (passages, fingerprint).

One server can answer for several specialists (serve/specialists.py), each addressed by its
name in the request's `model` field; /v1/models lists them all and an unknown name answers 404
(`model_not_found`). Each keeps its own tokenizer, knowledge base and training system prompt.
Runs of one base share one model in memory, and the worker batches their requests together
(PEFT's mixed-adapter batches: one `generate` call, each row with its own adapter)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from specialist.inference.generator import Answer, Generator
from specialist.inference.logprobs import TokenLogprob, token_bytes, token_text
from specialist.inference.sampling import GenerationSettings
from specialist.models.template import attach_context, last_user_text
from specialist.serve.http import APIError, ErrorResponse, error_body, protocol_class
from specialist.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    SamplingRequest,
    require_unicode,
    unsupported,
)
from specialist.serve.specialists import Specialist
from specialist.serve.worker import BatchWorker, Job

if TYPE_CHECKING:
    from specialist.knowledge.runtime import KnowledgeContext


@dataclass
class ServerLimits:
    max_body_bytes: int = 1_000_000
    max_tokens: int = 1024  # the most tokens one request may ask for
    default_max_tokens: int = 256
    max_prompt_tokens: int | None = None  # None: the model's context length
    max_batch: int = 8
    max_queue: int = 64
    request_timeout: float = 10.0  # seconds for a request's head and body to arrive (slow senders get 408)
    send_timeout: float = 30.0  # seconds a client may take none of its answer before it is dropped


def _error_response(exc: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status, headers=headers)


# ---------------------------------------------------------------- request → job
def _settings(req: SamplingRequest, requested: int | None, prompt_len: int, context: int,
              limits: ServerLimits) -> GenerationSettings:
    max_prompt = min(limits.max_prompt_tokens or context, context - 1)
    if prompt_len > max_prompt:
        raise APIError(400, f"the prompt has {prompt_len} tokens; this server accepts at most {max_prompt}",
                       param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
                       code="context_length_exceeded")
    room = context - prompt_len
    if requested is not None:
        if requested > limits.max_tokens:
            raise APIError(400, f"max_tokens is {requested}; this server allows at most {limits.max_tokens}",
                           param="max_tokens", code="max_tokens_too_large")
        if requested > room:
            raise APIError(400, f"the prompt ({prompt_len} tokens) plus max_tokens ({requested}) exceeds the "
                           f"context length ({context})", param="max_tokens", code="context_length_exceeded")
        budget = requested
    else:
        budget = min(limits.default_max_tokens, room)
    return GenerationSettings(max_new_tokens=budget, temperature=req.temperature, top_p=req.top_p,
                              seed=req.seed, stop=req.stops())


def _usage(answer: Answer) -> dict:
    """OpenAI's usage, with the prompt tokens a kept prompt start spared this request (read for an
    earlier one) as its prompt_tokens_details.cached_tokens."""
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": answer.cached_tokens}}


# ---------------------------------------------------------------- log-probabilities, in OpenAI's shapes
def completion_logprobs(tokenizer: Any, tokens: list[int], scores: list[TokenLogprob | None]) -> dict:
    """/v1/completions' choices[].logprobs: {tokens, token_logprobs, top_logprobs, text_offset}.
    A position nothing predicts (the prompt's first token) has null logprob and top_logprobs;
    top_logprobs maps token text to logprob and, as OpenAI's does, always holds the chosen
    token (so up to logprobs + 1 entries); text_offset counts characters of the tokens' texts."""
    texts, token_logprobs, tops, offsets = [], [], [], []
    offset = 0
    for token, scored in zip(tokens, scores):
        text = token_text(tokenizer, token)
        texts.append(text)
        offsets.append(offset)
        offset += len(text)
        if scored is None:
            token_logprobs.append(None)
            tops.append(None)
            continue
        token_logprobs.append(scored.logprob)
        top: dict[str, float] = {}
        # most likely first, so of two ids with one text the likelier one stays
        for alt, logprob in (*scored.top, (token, scored.logprob)):
            top.setdefault(token_text(tokenizer, alt), logprob)
        tops.append(top)
    return {"tokens": texts, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(tokenizer: Any, scores: list[TokenLogprob]) -> dict:
    """/v1/chat/completions' choices[].logprobs: {content: [{token, logprob, bytes, top_logprobs}]}."""

    def entry(token: int, logprob: float) -> dict:
        return {"token": token_text(tokenizer, token), "logprob": logprob, "bytes": token_bytes(tokenizer, token)}

    return {"content": [{**entry(s.token, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
                        for s in scores],
            "refusal": None}


def _sse(doc: dict | str) -> str:
    return f"data: {doc if isinstance(doc, str) else json.dumps(doc, ensure_ascii=False)}\n\n"



async def _disconnected(request: Request) -> None:
    """Returns when the client of a request whose body was read goes away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---------------------------------------------------------------- auth and body size
def key_ok(authorization: str, api_key: str | None) -> bool:
    """Whether an Authorization header carries the key (always, when no key is set); compared
    in constant time, so the answer's timing says nothing of how much of a guess was right."""
    if not api_key:
        return True
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


class _Guard:
    """ASGI middleware in front of every route but /health: the bearer key, then the body
    size — the declared Content-Length at once, and the bytes actually received (chunked
    uploads) as they arrive, so an oversize body is never read into memory whole."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not key_ok(headers.get("authorization", ""), self.api_key):
            error = APIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                             code="invalid_api_key")
            await _error_response(error)(scope, receive, send)
            return
        too_large = f"the body is larger than {self.max_body_bytes} bytes"
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _error_response(APIError(413, too_large, code="request_too_large"))(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # an HTTPException passes through FastAPI's body parsing to the 413 handler
                    raise StarletteHTTPException(413, too_large)
            return message

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------- the app
def knowledge_info(knowledge: KnowledgeContext | None) -> dict | None:
    """What clients may know of the attached knowledge base (not its path on this machine)."""
    if knowledge is None:
        return None
    d = knowledge.describe()
    return {k: d[k] for k in ("passages", "fingerprint", "top_k", "method")}


# What the OpenAPI document (/openapi.json, behind the key) says each route answers: errors in
# OpenAI's shape (declaring "4XX" also keeps FastAPI from documenting a 422 it never sends), and
# completions as JSON or, with "stream": true, server-sent events.
_ERRORS: dict = {"4XX": {"model": ErrorResponse, "description": "a bad request, a missing key, no such model, "
                                                                 "a full queue (429), a slow client (408)"},
                 "5XX": {"model": ErrorResponse, "description": "the model failed"}}
_COMPLETION = {**_ERRORS, 200: {"description": "the answer; with stream: true, server-sent events ending in "
                                               "`data: [DONE]`", "content": {"text/event-stream": {}}}}


def create_app(generator: Generator | list[Specialist], model_id: str | None = None, api_key: str | None = None,
               limits: ServerLimits | None = None, knowledge: KnowledgeContext | None = None) -> FastAPI:
    """The app for one model (`generator` named `model_id`, with `knowledge`), or for several
    specialists (a list of them; `model_id` and `knowledge` unused)."""
    limits = limits or ServerLimits()
    specialists = generator if isinstance(generator, list) else [Specialist(model_id or "model", generator, knowledge)]
    by_name = {spec.name: spec for spec in specialists}
    if not specialists or len(by_name) != len(specialists):
        raise ValueError("create_app: give at least one specialist, each under a name of its own")
    generator, model_id, knowledge = specialists[0].generator, specialists[0].name, specialists[0].knowledge
    kb_info = knowledge_info(knowledge)
    app = FastAPI(title="specialist", docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    worker = BatchWorker(generator, limits.max_batch, limits.max_queue)
    app.state.worker, app.state.limits = worker, limits
    created = int(time.time())

    # -- errors in OpenAI's shape
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        msg = first.get("msg", "invalid request")
        code = None
        if first.get("type") == "json_invalid":  # its loc is a character position, not a field
            msg, loc = "the body is not valid JSON", []
        elif first.get("type") == "extra_forbidden":
            msg, code = "an unknown field; this server does not support it", "unsupported_parameter"
        return _error_response(APIError(400, f"{'.'.join(loc) + ': ' if loc else ''}{msg}",
                                        param=".".join(loc) or None, code=code))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        code = "request_too_large" if exc.status_code == 413 else None
        return _error_response(APIError(exc.status_code, str(exc.detail), type=kind, code=code))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))

    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    def check_model(name: str) -> Specialist:
        if name not in by_name:
            served = ", ".join(repr(n) for n in by_name)
            raise APIError(404, f"the model {name!r} does not exist; this server serves {served}",
                           param="model", code="model_not_found")
        return by_name[name]

    @app.get("/health")
    def health(request: Request) -> dict:
        """Open to probes without the key, and then only {"status": "ok"}; with the key (or on a
        server without one) also the model, the load and the knowledge base."""
        if not key_ok(request.headers.get("authorization", ""), api_key):
            return {"status": "ok"}
        single = len(specialists) == 1  # "model" and "knowledge" describe the one model served
        return {"status": "ok", "model": model_id if single else None, "models": list(by_name),
                "queued": worker.queued, "active": worker.active, "knowledge": kb_info if single else None}

    def model_card(spec: Specialist) -> dict:
        return {"id": spec.name, "object": "model", "created": created, "owned_by": "specialist",
                "knowledge": knowledge_info(spec.knowledge)}

    @app.get("/v1/models", responses=_ERRORS)
    def models() -> dict:
        return {"object": "list", "data": [model_card(spec) for spec in specialists]}

    @app.get("/v1/models/{name:path}", responses=_ERRORS)
    def model_info(name: str) -> dict:
        return model_card(check_model(name))

    async def run(prompt: list[int], settings: GenerationSettings, chat: bool, stream: bool,
                  logprobs: int | None = None, prompt_logprobs: int | None = None,
                  generator: Generator = generator, contrast: list[int] | None = None):
        """Queue one job; returns (row, asyncio queue of pieces ending in ("done", answer|error))."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_piece(piece: str) -> None:
            if stream:
                loop.call_soon_threadsafe(events.put_nowait, ("piece", piece))

        def on_done(answer: Answer | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("done", answer if error is None else error))

        row = generator.row_decoder(len(prompt), settings, on_piece=on_piece, chat=chat, logprobs=logprobs,
                                    prompt_logprobs=prompt_logprobs, prompt=prompt, contrast=contrast)
        # the first specialist's jobs name no generator: they run on the worker's own
        worker.submit(Job(prompt, settings, row, on_done, None if generator is specialists[0].generator else generator))
        return row, events

    async def answer_or_stream(prompt: list[int], settings: GenerationSettings, req: SamplingRequest, request: Request,
                               chat: bool, extra: dict | None = None, logprobs: int | None = None,
                               echo: str | None = None, spec: Specialist = specialists[0],
                               contrast: list[int] | None = None):
        """`extra`: top-level fields added to the response (the first chunk when streaming);
        `logprobs`: score the answer's tokens, listing that many alternatives; `echo`: the
        prompt's text, put before the answer (completions; with logprobs, its tokens scored too);
        `spec`: the specialist the request named; `contrast`: the prompt without its retrieved
        context, for context-aware decoding (Generator.contrast_ids)."""
        extra = extra or {}
        generator, model_id = spec.generator, spec.name
        prompt_logprobs = logprobs if echo is not None else None
        row, events = await run(prompt, settings, chat, req.stream, logprobs, prompt_logprobs, generator, contrast)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        now = int(time.time())
        if not req.stream:
            answer = asyncio.ensure_future(events.get())
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not answer.done():  # the client left (or the server is stopping): free the row
                    answer.cancel()
                    row.cancelled.set()
            if answer.cancelled():
                return Response(status_code=499)  # nobody reads it
            _kind, result = answer.result()
            if isinstance(result, BaseException):
                raise APIError(500, f"generation failed: {type(result).__name__}", type="server_error")
            if chat:
                scores = chat_logprobs(generator.tokenizer, result.logprobs) if logprobs is not None else None
                choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                          "finish_reason": result.finish_reason, "logprobs": scores}
                obj = "chat.completion"
            else:
                scores = None
                if logprobs is not None:
                    tokens = [s.token for s in result.logprobs]
                    scored: list[TokenLogprob | None] = list(result.logprobs)
                    if echo is not None:
                        tokens, scored = prompt + tokens, [*result.prompt_logprobs, *scored]
                    scores = completion_logprobs(generator.tokenizer, tokens, scored)
                # an echo is the prompt and the answer as the model continued it, its leading space kept
                text = echo + row.lead + result.text if echo is not None else result.text
                choice = {"index": 0, "text": text, "finish_reason": result.finish_reason,
                          "logprobs": scores}
                obj = "text_completion"
            return JSONResponse({"id": rid, "object": obj, "created": now, "model": model_id,
                                 "choices": [choice], "usage": _usage(result), **extra})

        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: dict | str, finish: str | None) -> dict:
            choice = ({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None} if chat
                      else {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None})
            return {"id": rid, "object": obj, "created": now, "model": model_id, "choices": [choice]}

        async def events_sse():
            first = extra
            lead = echo is not None  # the answer's leading whitespace goes out with its first piece
            try:
                if chat:
                    yield _sse({**chunk({"role": "assistant", "content": ""}, None), **first})
                    first = {}
                elif echo:
                    yield _sse(chunk(echo, None))
                while True:
                    kind, value = await events.get()
                    if kind == "piece":
                        if lead:
                            value, lead = row.lead + value, False
                        yield _sse({**chunk({"content": value} if chat else value, None), **first})
                        first = {}
                        continue
                    if isinstance(value, BaseException):
                        yield _sse(error_body(f"generation failed: {type(value).__name__}", "server_error"))
                        break
                    yield _sse(chunk({} if chat else "", value.finish_reason))
                    if include_usage:
                        yield _sse({"id": rid, "object": obj, "created": now, "model": model_id,
                                    "choices": [], "usage": _usage(value)})
                    break
                yield _sse("[DONE]")
            finally:
                # the client went away (or we are done): a queued or running row stops at its next token
                row.cancelled.set()

        return StreamingResponse(events_sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def check_logprobs(req: SamplingRequest, generator: Generator, wanted: bool, param: str) -> None:
        if not wanted:
            return
        if not generator.scores_logprobs:
            raise unsupported(param, "this server's engine does not compute log-probabilities (serve with "
                                      "--engine torch)")
        if req.stream:
            raise unsupported(param, "not available with stream: true (ask without streaming)")

    @app.post("/v1/chat/completions", responses=_COMPLETION)
    async def chat_completions(req: ChatCompletionRequest, request: Request):
        require_unicode(req.model_dump())
        spec = check_model(req.model)
        generator, knowledge, context = spec.generator, spec.knowledge, spec.generator.context_length
        req.refuse_unsupported()
        check_logprobs(req, generator, bool(req.logprobs), "logprobs")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        if spec.system and not any(m["role"] == "system" for m in messages):  # as the run was trained
            messages = [{"role": "system", "content": spec.system}, *messages]
        extra: dict = {}
        question = last_user_text(messages)
        if knowledge is not None and req.knowledge and question is not None:
            # off the event loop: dense retrieval encodes the question with a model
            hits = await asyncio.to_thread(knowledge.retrieve, question)
            messages = attach_context(messages, [h.passage for h in hits])
            extra["context"] = [{"id": h.passage.id, "score": round(float(h.score), 4), "title": h.passage.title}
                                for h in hits]
        try:
            prompt = generator.prompt_ids(messages)
        except Exception as exc:
            raise APIError(400, f"the chat template rejects these messages: {exc}", param="messages") from exc
        requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        settings = _settings(req, requested, len(prompt), context, limits)
        contrast = None
        if "context" in extra:  # the answer reads passages: grounded numbers, the run's contrast
            settings = knowledge.generation(settings)
            contrast = generator.contrast_ids(messages, settings)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        return await answer_or_stream(prompt, settings, req, request, chat=True, extra=extra, logprobs=logprobs,
                                      spec=spec, contrast=contrast)

    @app.post("/v1/completions", responses=_COMPLETION)
    async def completions(req: CompletionRequest, request: Request):
        """Raw text in, raw text out: no retrieval (the client owns the whole prompt). The prompt
        is a text (tokenized with the model's special tokens, e.g. BOS) or token ids (used as
        they are)."""
        require_unicode(req.model_dump())
        spec = check_model(req.model)
        generator, context = spec.generator, spec.generator.context_length
        req.refuse_unsupported()
        check_logprobs(req, generator, req.logprobs is not None, "logprobs")
        if req.echo and req.logprobs is not None and not generator.scores_prompts:
            raise unsupported("echo", "this server's engine scores a specialist's answers over its own vocabulary, "
                                      "not a prompt's tokens (serve with --engine torch)")
        one = req.prompt
        if isinstance(one, list) and one and isinstance(one[0], (str, list)):
            if len(one) != 1:
                raise APIError(400, "exactly one prompt per request is supported (lm-evaluation-harness: "
                               "batch_size=1)", param="prompt")
            one = one[0]
        if isinstance(one, str):
            prompt, text = generator.tokenizer(one, add_special_tokens=True)["input_ids"], one
        else:
            vocab = len(generator.tokenizer)
            bad = next((t for t in one if not 0 <= t < vocab), None)
            if bad is not None:
                raise APIError(400, f"prompt: token id {bad} is outside the vocabulary (0..{vocab - 1})",
                               param="prompt")
            prompt, text = list(one), generator.tokenizer.decode(one, skip_special_tokens=False)
        if not prompt:
            raise APIError(400, "the prompt is empty", param="prompt")
        settings = _settings(req, req.max_tokens, len(prompt), context, limits)
        return await answer_or_stream(prompt, settings, req, request, chat=False, logprobs=req.logprobs,
                                      echo=text if req.echo else None, spec=spec)

    return app


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any):
    """uvicorn's settings for an app of create_app: its HTTP protocol with the request and send
    deadlines of the app's limits (specialist.serve.http)."""
    import uvicorn

    limits: ServerLimits = app.state.limits
    kwargs = {"log_level": "warning", "timeout_keep_alive": 5, **kwargs}
    return uvicorn.Config(app, host=host, port=port, http=protocol_class(limits.request_timeout, limits.send_timeout),
                          **kwargs)


def serve(model_ref: str | list[Specialist], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: ServerLimits | None = None, model_id: str | None = None, engine: str = "auto",
          threads: int | None = None, quant: str | None = None, knowledge: KnowledgeContext | None = None) -> None:
    """Load the model and run the server until interrupted; with `knowledge`, chat completions
    retrieve from it (see the module docstring). `model_ref` may be specialists already loaded
    (serve/specialists.py), then the model options are unused."""
    import uvicorn

    from specialist.console import err_console
    from specialist.inference.engines import make_generator

    limits = limits or ServerLimits()
    if isinstance(model_ref, list):
        specialists = model_ref
    else:
        generator = make_generator(model_ref, engine, threads, quant, max_batch=limits.max_batch)
        specialists = [Specialist(model_id or model_ref, generator, knowledge)]
    app = create_app(specialists, api_key=api_key, limits=limits)
    if host not in LOOPBACK and not api_key:
        err_console.print(f"[yellow]warning:[/yellow] listening on {host} without an API key: anyone who can "
                          "reach this port can use the model (set --api-key or SPECIALIST_API_KEY)")
    names = ", ".join(f"[bold]{spec.name}[/bold]" for spec in specialists)
    err_console.print(f"serving {names} at http://{host}:{port}/v1{' (API key required)' if api_key else ''}")
    try:
        uvicorn.Server(uvicorn_config(app, host, port, timeout_graceful_shutdown=5)).run()
    finally:
        app.state.worker.stop()
