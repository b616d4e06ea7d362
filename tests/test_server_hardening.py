"""The server under attack: every bad-request class answers in OpenAI's error shape with its
status, the key guards every route but a minimal /health, no request field reaches the file
system, clients that leave free their rows, and slow clients (slowloris, slow body, a reader
that stops reading) time out without holding up anyone else. Real uvicorn servers on loopback
ports, on the tiny chat model."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import statistics
import sys
import threading
import time

import httpx
import pytest

from specialist.inference.generator import Answer
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.serve import server as server_module
from specialist.serve.server import ServerLimits, create_app, uvicorn_config
from tests.helpers import build_lively_model, free_port, serving

MODEL_ID = "tiny"
KEY = "sk-hardening-42"
CHAT = "/v1/chat/completions"


@contextlib.contextmanager
def running(app, **config):
    """The app behind serve's own HTTP protocol (its request and send deadlines); yields URL and port."""
    port = free_port()
    try:
        with serving(uvicorn_config(app, "127.0.0.1", port, **config)) as url:
            yield url, port
    finally:
        app.state.worker.stop()


@pytest.fixture(scope="module")
def generator(chat_tokenizer_dir, tmp_path_factory) -> TorchGenerator:
    model = build_lively_model(tmp_path_factory.mktemp("lively-hardening"), chat_tokenizer_dir)
    return TorchGenerator(load_model(str(model), dtype="float32"))


LIMITS = dict(max_tokens=64, max_prompt_tokens=200, max_body_bytes=20_000, request_timeout=1.5, send_timeout=1.0)


@pytest.fixture(scope="module")
def server(generator):
    app = create_app(generator, MODEL_ID, limits=ServerLimits(**LIMITS))
    with running(app) as (url, port):
        yield url, port, app


def chat(content: str = "hi", **kw) -> dict:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "max_tokens": 3, **kw}


def assert_openai_error(r: httpx.Response, status: int, type: str | None = None, param=..., code=...) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    if type is not None:
        assert err["type"] == type
    if param is not ...:
        assert err["param"] == param
    if code is not ...:
        assert err["code"] == code
    return err


# ---------------------------------------------------------------- every bad-request class
RAW = {"content-type": "application/json"}
BAD_REQUESTS = [
    # (id, method, path, json body or raw bytes, status, type, param, code)
    ("invalid-json", "POST", CHAT, b"{not json", 400, "invalid_request_error", None, None),
    ("body-not-object", "POST", CHAT, b"[1, 2]", 400, "invalid_request_error", None, None),
    ("missing-model", "POST", CHAT, {"messages": [{"role": "user", "content": "hi"}]}, 400, None, "model", None),
    ("missing-messages", "POST", CHAT, {"model": MODEL_ID}, 400, None, "messages", None),
    ("empty-messages", "POST", CHAT, chat() | {"messages": []}, 400, None, "messages", None),
    (
        "bad-role",
        "POST",
        CHAT,
        chat() | {"messages": [{"role": "wizard", "content": "x"}]},
        400,
        None,
        "messages.0.role",
        None,
    ),
    (
        "image-part",
        "POST",
        CHAT,
        chat()
        | {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}
            ]
        },
        400,
        None,
        "messages",
        None,
    ),
    ("temperature-range", "POST", CHAT, chat(temperature=2.5), 400, None, "temperature", None),
    (
        "temperature-nan",
        "POST",
        CHAT,
        b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        400,
        None,
        "temperature",
        None,
    ),
    ("top-p-zero", "POST", CHAT, chat(top_p=0), 400, None, "top_p", None),
    ("max-tokens-zero", "POST", CHAT, chat(max_tokens=0), 400, None, "max_tokens", None),
    ("max-tokens-too-large", "POST", CHAT, chat(max_tokens=65), 400, None, "max_tokens", "max_tokens_too_large"),
    ("max-tokens-huge-int", "POST", CHAT, chat(max_tokens=10**30), 400, None, "max_tokens", "max_tokens_too_large"),
    ("n-two", "POST", CHAT, chat(n=2), 400, None, "n", None),
    ("seed-negative", "POST", CHAT, chat(seed=-1), 400, None, "seed", None),
    ("seed-too-big", "POST", CHAT, chat(seed=2**64), 400, None, "seed", None),
    ("five-stops", "POST", CHAT, chat(stop=list("abcde")), 400, None, "stop", None),
    ("prompt-too-long", "POST", CHAT, chat("word " * 400), 400, None, "messages", "context_length_exceeded"),
    (
        "lone-surrogate-chat",
        "POST",
        CHAT,
        b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800"}]}',
        400,
        None,
        "messages.0.content",
        "invalid_unicode",
    ),
    (
        "lone-surrogate-model",
        "POST",
        CHAT,
        b'{"model": "\\udfff", "messages": [{"role": "user", "content": "a"}]}',
        400,
        None,
        "model",
        "invalid_unicode",
    ),
    (
        "lone-surrogate-completion",
        "POST",
        "/v1/completions",
        b'{"model": "tiny", "prompt": "x\\ud800y"}',
        400,
        None,
        "prompt",
        "invalid_unicode",
    ),
    ("two-prompts", "POST", "/v1/completions", {"model": MODEL_ID, "prompt": ["a", "b"]}, 400, None, "prompt", None),
    ("empty-prompt", "POST", "/v1/completions", {"model": MODEL_ID, "prompt": ""}, 400, None, "prompt", None),
    ("unknown-model", "POST", CHAT, chat(model="gpt-4"), 404, "invalid_request_error", "model", "model_not_found"),
    (
        "unknown-model-completion",
        "POST",
        "/v1/completions",
        {"model": "nope", "prompt": "x"},
        404,
        None,
        "model",
        "model_not_found",
    ),
    ("unknown-model-card", "GET", "/v1/models/nope", None, 404, None, "model", "model_not_found"),
    ("unknown-route", "GET", "/v1/nothing-here", None, 404, "not_found_error", None, None),
    ("wrong-method", "GET", CHAT, None, 405, "invalid_request_error", None, None),
    ("oversize-declared", "POST", CHAT, chat("x" * 30_000), 413, "invalid_request_error", None, "request_too_large"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_every_bad_request_class_answers_in_openai_shape(server, case):
    _, method, path, body, status, type, param, code = case
    kwargs = {"content": body, "headers": RAW} if isinstance(body, bytes) else {"json": body} if body else {}
    r = httpx.request(method, server[0] + path, timeout=60, **kwargs)
    assert_openai_error(r, status, type, param, code)


def test_error_messages_name_the_field(server):
    r = httpx.post(server[0] + CHAT, json=chat(temperature=9), timeout=60)
    assert r.json()["error"]["message"].startswith("temperature:")


def test_chunked_oversize_body_is_cut_off(server):
    def chunks():
        for _ in range(30):
            yield b"x" * 1000

    r = httpx.post(server[0] + CHAT, content=chunks(), headers=RAW, timeout=60)
    assert_openai_error(r, 413, "invalid_request_error", code="request_too_large")


def test_malformed_http_answers_400_in_openai_shape(server):
    with socket.create_connection(("127.0.0.1", server[1]), timeout=10) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        reply = recv_all(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"]["code"] == "invalid_http"


class _Gate:
    """Wraps the generator: holds every batch until released, or fails it."""

    def __init__(self, inner, fail: bool = False) -> None:
        self.inner, self.fail = inner, fail
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_batch(self, prompts, rows, settings):
        if self.fail:
            raise RuntimeError("the model fell over")
        self.release.wait(20)
        return self.inner.run_batch(prompts, rows, settings)


def test_full_queue_answers_429_in_openai_shape(generator):
    gate = _Gate(generator)
    app = create_app(gate, MODEL_ID, limits=ServerLimits(max_batch=1, max_queue=1))
    with running(app) as (url, _), httpx.Client(timeout=60) as c, contextlib.ExitStack() as stack:
        # one request runs (held by the gate), one waits: the queue is full
        for _ in range(2):
            stack.enter_context(c.stream("POST", url + CHAT, json=chat(seed=1, stream=True)))
            time.sleep(0.3)
        r = httpx.post(url + CHAT, json=chat(seed=1), timeout=60)
        assert_openai_error(r, 429, "rate_limit_error", None, "queue_full")
        gate.release.set()


def test_a_failing_model_answers_500_in_openai_shape(generator):
    app = create_app(_Gate(generator, fail=True), MODEL_ID)
    with running(app) as (url, _):
        r = httpx.post(url + CHAT, json=chat(), timeout=60)
        assert_openai_error(r, 500, "server_error")


# ---------------------------------------------------------------- the key and /health
def test_key_guards_every_route_but_a_minimal_health(generator, monkeypatch):
    app = create_app(generator, MODEL_ID, api_key=KEY)
    routes = sorted(
        {
            (m, r.path.replace("{name:path}", MODEL_ID))
            for r in app.routes
            for m in getattr(r, "methods", ())
            if m != "HEAD"
        }
    )
    assert ("POST", CHAT) in routes and ("GET", "/openapi.json") in routes
    compared: list[bytes] = []
    real = server_module.hmac.compare_digest
    monkeypatch.setattr(server_module.hmac, "compare_digest", lambda a, b: compared.append(a) or real(a, b))
    with running(app) as (url, _):
        for method, path in [*routes, ("GET", "/v1/nothing-here"), ("GET", "/docs")]:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": f"Bearer {KEY[:-1]}"},
                {"Authorization": KEY},
                {"Authorization": f"Basic {KEY}"},
            ):
                r = httpx.request(method, url + path, headers=headers, json=chat() if method == "POST" else None)
                if path == "/health":
                    assert r.status_code == 200 and r.json() == {"status": "ok"}, (headers, r.text)
                else:
                    assert_openai_error(r, 401, "invalid_request_error", None, "invalid_api_key")
                    assert r.headers["www-authenticate"] == "Bearer"
        assert b"wrong" in compared  # the key is compared with hmac.compare_digest, in constant time
        good = {"Authorization": f"Bearer {KEY}"}
        health = httpx.get(url + "/health", headers=good).json()
        assert health["model"] == MODEL_ID and health["active"] == 0 and health["queued"] == 0
        assert httpx.get(url + "/v1/models", headers=good).json()["data"][0]["id"] == MODEL_ID
        assert httpx.get(url + "/openapi.json", headers=good).json()["paths"]
        assert httpx.post(url + CHAT, json=chat(), headers=good, timeout=60).status_code == 200


def test_health_without_a_key_configured_reports_the_load(server):
    health = httpx.get(server[0] + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL_ID
    assert {"queued", "active", "knowledge"} <= set(health)


# ---------------------------------------------------------------- no file paths
PATHS = [
    "../../etc/passwd",
    "/etc/passwd",
    "file:///etc/passwd",
    "~/.ssh/id_rsa",
    "..\\..\\windows\\win.ini",
    "/tmp/specialist-should-not-exist",
]


def test_no_request_field_touches_the_file_system(server, generator):
    opened: list[str] = []
    watching = threading.Event()

    def hook(event: str, args: tuple) -> None:
        if watching.is_set() and event in ("open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir"):
            opened.append(str(args[0]) if args else "")

    sys.addaudithook(hook)  # cannot be removed; it stays inert once `watching` is cleared
    url = server[0]
    watching.set()
    try:
        for path in PATHS:
            for r in (
                httpx.post(url + CHAT, json=chat(model=path), timeout=60),
                httpx.post(url + "/v1/completions", json={"model": path, "prompt": "x"}, timeout=60),
                httpx.get(url + "/v1/models/" + path.lstrip("/"), timeout=60),
            ):
                err = assert_openai_error(r, 404)  # no such model (or, for "..", no such route)
                assert err["code"] in ("model_not_found", None)
            # every other string field carrying a path is just text
            r = httpx.post(url + CHAT, timeout=60, json=chat(path, stop=[path], user=path, knowledge=True))
            assert r.status_code == 200
            # fields the server does not implement are refused by name, their contents unread
            for field, value in (("tools", [{"path": path}]), ("response_format", {"file": path})):
                r = httpx.post(url + CHAT, timeout=60, json=chat(path, **{field: value}))
                assert_openai_error(r, 400, param=field, code="unsupported_parameter")
            r = httpx.post(url + CHAT, timeout=60, json=chat() | {"knowledge": path})
            assert_openai_error(r, 400, param="knowledge")
    finally:
        watching.clear()
    touched = [p for p in opened if any(s in p for s in ("passwd", "id_rsa", "win.ini", "should-not-exist"))]
    assert touched == []


# ---------------------------------------------------------------- disconnects
@contextlib.contextmanager
def paced(model, seconds: float):
    """The model made slower by `seconds` a decoding step, so a long answer takes seconds and
    an early end is visible."""
    handle = model.register_forward_pre_hook(lambda module, args: time.sleep(seconds))
    try:
        yield
    finally:
        handle.remove()


def wait_idle(worker, within: float) -> float:
    t0 = time.perf_counter()
    while worker.active or worker.queued:
        assert time.perf_counter() - t0 < within, f"active {worker.active}, queued {worker.queued}"
        time.sleep(0.01)
    return time.perf_counter() - t0


def test_clients_that_leave_free_their_rows_at_once(generator):
    limits = ServerLimits(max_tokens=400, max_batch=2, max_queue=16)
    app = create_app(generator, MODEL_ID, limits=limits)
    worker = app.state.worker
    long = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0}
    with paced(generator.model, 0.01), running(app) as (url, _):
        # 6 streaming clients for 2 batch slots: each reads its first piece, or waits in the
        # queue, then hangs up
        clients = [httpx.Client(timeout=60) for _ in range(6)]
        streams = [c.stream("POST", url + "/v1/completions", json=long | {"stream": True}) for c in clients]
        responses = [s.__enter__() for s in streams]
        first = responses[0].iter_lines()
        assert next(first).startswith("data: {")  # the first batch is decoding
        time.sleep(0.2)
        assert worker.active >= 1 and worker.active + worker.queued == 6
        for c in clients:
            c.close()
        # 400 paced steps take > 4 s; freed rows end at their next token, queued ones are dropped
        assert wait_idle(worker, within=2.0) < 2.0
        t0 = time.perf_counter()
        r = httpx.post(url + "/v1/completions", json=long | {"max_tokens": 5}, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
        assert time.perf_counter() - t0 < 2.0
        # a non-streaming client that gives up is noticed as well
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/completions", json=long, timeout=0.5)
        assert wait_idle(worker, within=2.0) < 2.0
        assert worker.active == 0 and worker.queued == 0


# ---------------------------------------------------------------- slow clients
def recv_all(s: socket.socket, limit: float = 10.0) -> bytes:
    s.settimeout(limit)
    data = b""
    with contextlib.suppress(ConnectionResetError, socket.timeout):
        while chunk := s.recv(65536):
            data += chunk
    return data


def trickle(port: int, head: bytes, pieces, out: dict) -> None:
    """Sends `head`, then `pieces` one every 0.2 s until the server answers (or hangs up)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head)
        with contextlib.suppress(OSError):
            for piece in pieces:
                if select.select([s], [], [], 0.2)[0]:
                    break
                s.sendall(piece)
        out["reply"], out["seconds"] = recv_all(s), time.perf_counter() - t0


def slowloris(port: int, out: dict) -> None:
    """A request head sent a header line at a time, for ever."""
    trickle(
        port,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n",
        (b"x-trickle-%d: y\r\n" % i for i in range(100)),
        out,
    )


def slow_body(port: int, out: dict) -> None:
    """A declared body sent a byte at a time."""
    body = json.dumps(chat()).encode()
    trickle(
        port,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body),
        (bytes([b]) for b in body),
        out,
    )


def test_slow_senders_get_408_and_others_are_served_meanwhile(server):
    url, port, app = server
    normal = chat("Tell me more", max_tokens=8, temperature=0)
    baseline = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert httpx.post(url + CHAT, json=normal, timeout=60).status_code == 200
        baseline.append(time.perf_counter() - t0)
    outs = [{} for _ in range(4)]
    threads = [
        threading.Thread(target=f, args=(port, o)) for f, o in zip((slowloris, slowloris, slow_body, slow_body), outs)
    ]
    for t in threads:
        t.start()
    # a stalled reader too: it asks for an answer and never reads it
    stalled = socket.create_connection(("127.0.0.1", port))
    body = json.dumps(normal | {"stream": True}).encode()
    stalled.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    wait_idle(app.state.worker, within=30)
    time.sleep(0.3)
    under_attack = []
    for _ in range(3):
        t0 = time.perf_counter()
        assert httpx.post(url + CHAT, json=normal, timeout=60).status_code == 200
        under_attack.append(time.perf_counter() - t0)
    for t in threads:
        t.join(timeout=30)
    stalled.close()
    assert statistics.median(under_attack) < 2 * statistics.median(baseline) + 0.2, (baseline, under_attack)
    for out in outs:
        head, _, body = out["reply"].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), out["reply"][:200]
        assert json.loads(body)["error"]["code"] == "request_timeout"
        assert LIMITS["request_timeout"] <= out["seconds"] < LIMITS["request_timeout"] + 3


def test_an_idle_connection_is_closed(server):
    with socket.create_connection(("127.0.0.1", server[1])) as s:
        t0 = time.perf_counter()
        assert recv_all(s) == b""  # closed without a word: it never asked anything
        assert time.perf_counter() - t0 < LIMITS["request_timeout"] + 2


class _Firehose:
    """Stands in for a fast model with long answers: 2,000 pieces of 2 kB per row, as fast as
    the server takes them, stopping when its row is cancelled."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cancelled_at: int | None = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run_batch(self, prompts, rows, settings):
        for i in range(2000):
            if rows[0].cancelled.is_set():
                self.cancelled_at = i
                break
            rows[0].on_piece("x" * 2000)
            time.sleep(0.002)
        return [Answer("", len(p), 1, "length", 0.0) for p in prompts]


def test_a_reader_that_stops_reading_is_dropped(generator):
    fire = _Firehose(generator)
    app = create_app(fire, MODEL_ID, limits=ServerLimits(send_timeout=1.0))
    with running(app) as (url, port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        body = json.dumps(chat(stream=True)).encode()
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        deadline = time.time() + 20
        while fire.cancelled_at is None:  # the server gives up on the reader and cancels its row
            assert time.time() < deadline, "the stalled reader was never dropped"
            time.sleep(0.05)
        assert fire.cancelled_at < 2000
        got = recv_all(s, limit=5)
        s.close()
        assert b"[DONE]" not in got
        r = httpx.post(url + CHAT, json=chat(), timeout=30)  # and the server serves the next one
        assert r.status_code == 200
