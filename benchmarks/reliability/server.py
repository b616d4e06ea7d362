"""The OpenAI-compatible server under load and attack, on loopback.

`specialist serve` runs in its own process on a tiny random model (built here in seconds: the
server's own costs show, not a real model's decoding). Then, in turn:

1. load: 50 concurrent streaming clients for 5 minutes (`--quick`: 20 s), each asking again as
   soon as its answer ends: 5xx and other errors, streams that did not end with `data: [DONE]`,
   latency p50/p95 (to the last byte) and time to first token, requests and tokens per second,
   and the server's RSS sampled every 2 s: growth from the first minute's plateau (`--quick`:
   the first third) to the end of the run;
2. disconnects: twice as many streaming clients as batch slots hang up after their first
   piece: how long until the server has no row decoding and nothing queued, and the latency
   of the next request;
3. slow clients: 2 slowloris heads, 2 slow bodies and 1 client that never reads its stream,
   while a normal request is timed against its latency on an idle server; the slow senders
   must get 408 within the server's request deadline;
4. schema fuzzing: schemathesis generates requests for every route of the server's own OpenAPI
   document (valid ones, with the served model's name half the time, and invalid ones): 5xx
   and responses that do not match the document.

Every loop is bounded in time and count and ends by itself.

    python benchmarks/bench_reliability.py --section server [--quick] [--clients 50] [--seconds 300] [--json]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTION = "server"
DESCRIPTION = "the server: 50 streaming clients, disconnects, slow clients, schema fuzzing"
GOAL = (
    "0 errors and every stream complete under load, RSS growth < 10%, disconnected rows freed, slow senders 408, "
    "others unhindered, 0 fuzz 5xx / schema failures"
)
ROOT = Path(__file__).resolve().parents[2]
GOALS = {"errors": 0, "incomplete_streams": 0, "rss_growth": 0.10, "fuzz_5xx": 0, "fuzz_failures": 0}
MODEL_ID = "tiny"
# Python 3.10 has no BaseExceptionGroup; schemathesis raises one from 3.11 on
_GROUP = getattr(__import__("builtins"), "BaseExceptionGroup", Exception)


def build_model(out: Path) -> Path:
    """A 2-layer Llama (hidden 64) with SmolLM2's real tokenizer and chat template, its weights
    scaled so that its greedy answers are varied text rather than one repeated token."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers import build_lively_model, save_chat_tokenizer  # the suite's own tiny models

    return build_lively_model(out, save_chat_tokenizer(out.parent / "tok"))


@contextlib.contextmanager
def served(model: Path, max_batch: int, max_tokens: int):
    """`specialist serve` in its own process; yields (url, port, pid)."""
    import httpx

    from tests.helpers import free_port

    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "specialist",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-tokens",
        str(max_tokens),
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("SPECIALIST_API_KEY", None)
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop() with the server it logs
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise SystemExit("the server did not start:\n" + log.read().decode(errors="replace")[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                raise SystemExit("the server did not start within 180 s")
            time.sleep(0.3)
        yield url, port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


# ---------------------------------------------------------------- 1. load
def request_body(rng: random.Random, i: int) -> dict:
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": f"Question {i}: what about {rng.random():.4f}?"}],
        "max_tokens": rng.randint(8, 32),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if rng.random() < 0.2:  # some sampled answers: a second batch key besides greedy
        body.update(temperature=0.8, top_p=0.95)
    else:
        body["temperature"] = 0
    return body


async def stream_once(client, url: str, body: dict) -> dict:
    t0 = time.perf_counter()
    first = None
    events: list[str] = []
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        status = r.status_code
        if status != 200:
            await r.aread()
            return {"status": status, "complete": False, "seconds": time.perf_counter() - t0}
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if first is None and line != "data: [DONE]" and '"content": ""' not in line:
                first = time.perf_counter() - t0
            events.append(line[6:])
    seconds = time.perf_counter() - t0
    complete = bool(events) and events[-1] == "[DONE]"
    tokens = 0
    finish = None
    for e in events[:-1]:
        doc = json.loads(e)
        if doc.get("usage"):
            tokens = doc["usage"]["completion_tokens"]
        for choice in doc.get("choices", []):
            finish = choice.get("finish_reason") or finish
    return {
        "status": status,
        "complete": complete and finish is not None,
        "seconds": seconds,
        "ttft": first,
        "tokens": tokens,
    }


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, int]], every: float = 2.0) -> None:
    import psutil

    proc = psutil.Process(pid)
    t0 = time.perf_counter()
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            samples.append((time.perf_counter() - t0, proc.memory_info().rss))
        stop.wait(every)


def load(url: str, pid: int, clients: int, seconds: float, max_requests: int = 100_000) -> dict:
    import httpx

    results: list[dict] = []
    errors: list[str] = []
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pid, stop, rss), daemon=True)
    sampler.start()

    async def client_loop(n: int, client, deadline: float) -> None:
        rng = random.Random(n)
        i = 0
        while time.perf_counter() < deadline and len(results) + len(errors) < max_requests:
            try:
                results.append(await stream_once(client, url, request_body(rng, n * 100_000 + i)))
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            i += 1

    async def main() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
            t0 = time.perf_counter()
            await asyncio.gather(*(client_loop(n, client, t0 + seconds) for n in range(clients)))
            return time.perf_counter() - t0

    wall = asyncio.run(main())
    stop.set()
    sampler.join()
    ok = [r for r in results if r["status"] == 200]
    # the plateau: after warm-up (the first batches allocate), over the first minute (or third)
    plateau_end = min(60.0, wall / 3)
    warm = min(15.0, plateau_end / 2)
    early = [b for t, b in rss if warm <= t <= plateau_end] or [b for _, b in rss[:3]]
    late = [b for t, b in rss if t >= wall - max(10.0, wall / 10)] or [b for _, b in rss[-3:]]
    base, end = statistics.median(early), statistics.median(late)
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(results) + len(errors),
        "status_counts": {
            str(s): sum(r["status"] == s for r in results) for s in sorted({r["status"] for r in results})
        },
        "errors_5xx": sum(r["status"] >= 500 for r in results),
        "errors": sum(r["status"] != 200 for r in results) + len(errors),
        "client_errors": errors[:5],
        "incomplete_streams": sum(not r["complete"] for r in ok),
        "latency_p50_s": percentile([r["seconds"] for r in ok], 0.5),
        "latency_p95_s": percentile([r["seconds"] for r in ok], 0.95),
        "ttft_p50_s": percentile([r["ttft"] for r in ok if r["ttft"] is not None], 0.5),
        "ttft_p95_s": percentile([r["ttft"] for r in ok if r["ttft"] is not None], 0.95),
        "requests_per_s": round(len(ok) / wall, 2),
        "tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
        "rss_samples": len(rss),
        "rss_plateau_mb": round(base / 2**20, 1),
        "rss_end_mb": round(end / 2**20, 1),
        "rss_peak_mb": round(max(b for _, b in rss) / 2**20, 1),
        "rss_growth": round(end / base - 1, 4),
    }


# ---------------------------------------------------------------- 2. disconnects
def health(url: str) -> dict:
    import httpx

    return httpx.get(url + "/health", timeout=10).json()


def disconnects(url: str, slots: int) -> dict:
    """2 x slots streaming clients with long answers hang up after their first piece (or while
    queued); then: seconds until nothing decodes or waits, and the next request's latency."""
    import httpx

    body = {"model": MODEL_ID, "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0, "stream": True}
    clients = [httpx.Client(timeout=60) for _ in range(2 * slots)]
    try:
        streams = [
            c.stream("POST", url + "/v1/completions", json=body) for c in clients
        ]  # kept: dropping one closes it
        responses = [s.__enter__() for s in streams]
        next(responses[0].iter_lines())
        busy = health(url)
    finally:
        for c in clients:
            c.close()
    t0 = time.perf_counter()
    deadline = t0 + 60
    while (h := health(url))["active"] or h["queued"]:
        if time.perf_counter() > deadline:
            break
        time.sleep(0.02)
    freed = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = httpx.post(url + "/v1/completions", json={**body, "stream": False, "max_tokens": 8}, timeout=60)
    return {
        "clients": len(clients),
        "slots": slots,
        "busy_active": busy["active"],
        "busy_queued": busy["queued"],
        "seconds_to_idle": round(freed, 3),
        "active_after": h["active"],
        "queued_after": h["queued"],
        "next_request_status": r.status_code,
        "next_request_s": round(time.perf_counter() - t1, 3),
    }


# ---------------------------------------------------------------- 3. slow clients
def _recv_all(s: socket.socket, limit: float) -> bytes:
    s.settimeout(limit)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := s.recv(65536):
            data += chunk
    return data


def _trickle(port: int, head: bytes, pieces, out: dict, every: float = 0.5, limit: float = 60) -> None:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head)
        with contextlib.suppress(OSError):
            for piece in pieces:
                if select.select([s], [], [], every)[0] or time.perf_counter() - t0 > limit:
                    break
                s.sendall(piece)
        reply = _recv_all(s, 10)
    out.update(status=reply[9:12].decode(errors="replace"), seconds=round(time.perf_counter() - t0, 2))


def slow_clients(url: str, port: int) -> dict:
    import httpx

    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Tell me more"}],
        "max_tokens": 16,
        "temperature": 0,
    }

    def timed() -> float:
        t0 = time.perf_counter()
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        return time.perf_counter() - t0

    baseline = statistics.median(timed() for _ in range(5))
    raw = json.dumps(body).encode()
    post = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    outs = [{} for _ in range(4)]
    threads = [
        threading.Thread(
            target=_trickle,
            args=(port, b"POST /v1/chat/completions HTTP/1.1\r\n", (b"x-%d: y\r\n" % i for i in range(1000)), outs[0]),
        ),
        threading.Thread(
            target=_trickle, args=(port, b"GET /health HTTP/1.1\r\nho", (b"s" for _ in range(1000)), outs[1])
        ),
        threading.Thread(
            target=_trickle,
            args=(port, post + b"content-length: %d\r\n\r\n" % len(raw), (bytes([b]) for b in raw), outs[2]),
        ),
        threading.Thread(
            target=_trickle,
            args=(port, post + b"content-length: %d\r\n\r\n" % (len(raw) + 1000), (b" " for _ in range(1000)), outs[3]),
        ),
    ]
    for t in threads:
        t.start()
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", port))
    stream = json.dumps({**body, "stream": True}).encode()
    stalled.sendall(post + b"content-length: %d\r\n\r\n" % len(stream) + stream)
    # its answer is decoded like anyone's (one batch); from then on it must hold nothing up
    deadline = time.time() + 120
    while ((h := health(url))["active"] or h["queued"]) and time.time() < deadline:
        time.sleep(0.05)
    under = []
    while any(t.is_alive() for t in threads) and len(under) < 50:
        under.append(timed())
    for t in threads:
        t.join(timeout=60)
    stalled.close()
    return {
        "slow_clients": 5,
        "normal_baseline_s": round(baseline, 3),
        "normal_under_attack_p50_s": percentile(under, 0.5),
        "normal_under_attack_max_s": round(max(under), 3) if under else None,
        "normal_requests_under_attack": len(under),
        "slow_statuses": [o.get("status") for o in outs],
        "slow_seconds": [o.get("seconds") for o in outs],
    }


# ---------------------------------------------------------------- 4. schema fuzzing
def fuzz(url: str, max_examples: int, headers: dict | None = None) -> dict:
    """Every route of the server's /openapi.json, positive and negative cases; each response
    checked by schemathesis against the document (status, content type, body schema), for
    5xx, and that invalid requests are refused. Not checked: that every schema-valid request
    is accepted — the server also refuses what a static schema cannot say (a prompt longer than
    the context, max_tokens above the server's limit, an image content part), always with a
    documented 400. Returns counts and the first failures."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    headers = headers or {}
    schema = schemathesis.openapi.from_url(url + "/openapi.json", headers=headers)
    statuses: dict[int, int] = {}
    by_operation: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), served_model=st.booleans())
            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.generate],
            )
            def check(case, served_model: bool) -> None:
                if served_model and isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = MODEL_ID  # reach past the model check into the request itself
                if served_model and case.path_parameters and "name" in case.path_parameters:
                    case.path_parameters["name"] = MODEL_ID
                response = case.call(base_url=url, headers=headers, timeout=180)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                seen = by_operation.setdefault(operation.label, {})  # noqa: B023 - called in this iteration
                seen[str(response.status_code)] = seen.get(str(response.status_code), 0) + 1
                case.validate_response(response, headers=headers, excluded_checks=[positive_data_acceptance])

            try:
                check()
            except Unsatisfiable:  # a route with nothing to make invalid (no parameters, no body)
                continue
            except (Exception, _GROUP) as exc:  # noqa: BLE001 - a failed check is a finding, not a crash
                failures.append(f"{operation.label} ({mode.value}): {str(exc).strip()[:600]}")
    return {
        "operations": operations,
        "requests": sum(statuses.values()),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "by_operation": by_operation,
        "fuzz_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "fuzz_failures": len(failures),
        "failures": failures[:5],
    }


# ---------------------------------------------------------------- all of it
def measure(quick: bool = False, clients: int = 50, seconds: float | None = None, max_batch: int = 8) -> dict:
    seconds = seconds if seconds is not None else (20.0 if quick else 300.0)
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        model = build_model(Path(tmp) / "tiny")
        with served(model, max_batch=max_batch, max_tokens=64) as (url, port, pid):
            result = {
                "load_average": round(os.getloadavg()[0], 2),
                "model": "tiny random Llama (2 layers, hidden 64, SmolLM2 tokenizer)",
                "max_batch": max_batch,
            }
            result["load"] = load(url, pid, clients, seconds)
            result["disconnects"] = disconnects(url, max_batch)
            result["slow"] = slow_clients(url, port)
            result["fuzz"] = fuzz(url, max_examples=15 if quick else 50)
    ld, d, s, f = result["load"], result["disconnects"], result["slow"], result["fuzz"]
    result["ok"] = {
        "no_errors": ld["errors"] == 0 and ld["errors_5xx"] == 0,
        "streams_complete": ld["incomplete_streams"] == 0,
        "rss_growth_under_10pct": ld["rss_growth"] < GOALS["rss_growth"],
        "disconnects_free_rows": d["active_after"] == 0 and d["queued_after"] == 0 and d["next_request_status"] == 200,
        "slow_senders_get_408": s["slow_statuses"] == ["408"] * 4,
        # measured only while a slow client still holds on (a loaded machine may end them first)
        "others_unhindered": bool(s["normal_requests_under_attack"])
        and s["normal_under_attack_p50_s"] < 2 * s["normal_baseline_s"] + 0.2,
        "fuzz_clean": f["fuzz_5xx"] == 0 and f["fuzz_failures"] == 0,
    }
    return result


def run(
    quick: bool = False,
    work: Path | None = None,
    clients: int = 50,
    seconds: float | None = None,
    max_batch: int = 8,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The server section: a load phase of `seconds` (300; quick 20), then disconnects, slow
    clients and schema fuzzing."""
    (progress or (lambda m: None))(f"server: {clients} clients, load phase {seconds or (20 if quick else 300)} s")
    r = measure(quick, clients, seconds, max_batch)
    ld, d, s, f = r["load"], r["disconnects"], r["slow"], r["fuzz"]
    ok = r["ok"]
    rows = [
        {
            "section": SECTION,
            "phase": "load",
            "requests": ld["requests"],
            "errors": ld["errors"],
            "p50_s": ld["latency_p50_s"],
            "p95_s": ld["latency_p95_s"],
            "tokens_per_s": ld["tokens_per_s"],
            "rss_growth": ld["rss_growth"],
        },
        {
            "section": SECTION,
            "phase": "disconnects",
            "requests": d["clients"],
            "errors": d["active_after"] + d["queued_after"],
            "p50_s": d["seconds_to_idle"],
            "p95_s": d["next_request_s"],
        },
        {
            "section": SECTION,
            "phase": "slow clients",
            "requests": s["normal_requests_under_attack"],
            "errors": 0,
            "p50_s": s["normal_under_attack_p50_s"],
            "p95_s": s["normal_under_attack_max_s"],
        },
        {
            "section": SECTION,
            "phase": "schema fuzzing",
            "requests": f["requests"],
            "errors": f["fuzz_5xx"] + f["fuzz_failures"],
        },
    ]
    figures = [
        ("load-test requests", ld["requests"], "", None, f"{ld['clients']} streaming clients, {ld['seconds']} s"),
        ("load-test errors (5xx, refused, failed)", ld["errors"], "0", ok["no_errors"], f"{ld['errors_5xx']} 5xx"),
        ("load-test incomplete streams", ld["incomplete_streams"], "0", ok["streams_complete"]),
        ("load-test latency p50 / p95 (s)", f"{ld['latency_p50_s']} / {ld['latency_p95_s']}", "", None),
        ("load-test server memory growth", f"{ld['rss_growth']:+.1%}", "< 10%", ok["rss_growth_under_10pct"]),
        (
            "disconnected clients' rows freed",
            f"{d['active_after']} active, {d['queued_after']} queued after {d['seconds_to_idle']} s",
            "0, 0",
            ok["disconnects_free_rows"],
        ),
        ("slow senders answered 408", " ".join(map(str, s["slow_statuses"])), "408 × 4", ok["slow_senders_get_408"]),
        (
            "normal request under slow clients, p50 (s)",
            s["normal_under_attack_p50_s"],
            f"< 2 × idle ({s['normal_baseline_s']}) + 0.2",
            ok["others_unhindered"],
        ),
        ("fuzzed requests", f["requests"], "", None, f"{f['operations']} routes"),
        ("fuzzed requests answered 5xx", f["fuzz_5xx"], "0", f["fuzz_5xx"] == 0),
        ("schema failures", f["fuzz_failures"], "0", f["fuzz_failures"] == 0),
    ]
    return {
        "rows": rows,
        "summary": {"clients": ld["clients"], "load_seconds": ld["seconds"], "load_average": r["load_average"]},
        "figures": figures,
        "ok": all(ok.values()),
        "failures": [{"problem": p} for p in f["failures"]] + [{"problem": e} for e in ld["client_errors"]],
        "detail": r,
    }
