"""The OpenAI-compatible server, driven by the official `openai` client against a real uvicorn
server on a loopback port, on the tiny chat model."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from specialist.inference.generator import Answer, Generator
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.models.template import build_messages
from specialist.serve.http import APIError
from specialist.serve.server import ServerLimits, create_app
from specialist.serve.worker import BatchWorker, Job
from tests.helpers import free_port, running

MODEL_ID = "tiny"
KEY = "sk-test-123"


@pytest.fixture(scope="module")
def generator(lively_chat_model) -> Generator:
    return TorchGenerator(load_model(str(lively_chat_model), dtype="float32"))


@pytest.fixture(scope="module")
def server(generator):
    app = create_app(generator, MODEL_ID,
                     limits=ServerLimits(max_tokens=64, max_prompt_tokens=200, max_body_bytes=20_000))
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def greedy(generator: Generator, prompt: str, n: int) -> Answer:
    return generator.generate([build_messages(prompt)], GenerationSettings(max_new_tokens=n))[0]


def test_health_and_models(server, client):
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == [MODEL_ID]


def test_chat_completion_matches_generator_and_counts_usage(client, generator):
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Hello there"}],
                                       max_tokens=7, temperature=0)
    expected = greedy(generator, "Hello there", 7)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == expected.text
    assert r.choices[0].finish_reason == expected.finish_reason
    assert r.usage.prompt_tokens == len(generator.prompt_ids(build_messages("Hello there")))
    assert r.usage.completion_tokens == expected.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_chat_equals_the_non_streamed_answer(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Stream this"}]
    full = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=9, temperature=0)
    stream = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=9, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full.choices[0].message.content
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_raw_sse_framing(server):
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server[0] + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


def test_completions_endpoint_stream_and_not(client, generator):
    r = client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.object == "text_completion"
    assert r.usage.prompt_tokens == len(generator.tokenizer("Once upon a time")["input_ids"])
    assert r.usage.completion_tokens == 6 and r.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL_ID, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True))
    assert streamed == r.choices[0].text


def test_stop_sequence_cuts_the_answer(client, generator):
    # the random model stops at once on some prompts: use one it answers at length
    prompt = "Tell me more"
    full = greedy(generator, prompt, 24).text
    assert len(full) > 10
    stop = full[len(full) // 2: len(full) // 2 + 3]
    expected = full[: full.index(stop)].rstrip()
    for stream in (False, True):
        kwargs = dict(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                      max_tokens=24, temperature=0, stop=[stop])
        if stream:
            chunks = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices]
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
            finish = chunks[-1].choices[0].finish_reason
        else:
            r = client.chat.completions.create(**kwargs)
            text, finish = r.choices[0].message.content, r.choices[0].finish_reason
        assert text == expected and stop not in text
        assert finish == "stop"


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "Pick words"}],
                                              max_tokens=12, temperature=1.0, top_p=0.9,
                                              seed=seed).choices[0].message.content
    a, b, c = sample(7), sample(7), sample(8)
    assert a == b
    assert a != c  # a random 49k-vocab model: two seeds agreeing on 12 tokens is practically impossible


def test_twenty_concurrent_streaming_clients(server, client, generator):
    prompts = [f"Question number {i}" for i in range(20)]
    expected = {p: greedy(generator, p, 8).text for p in prompts}
    worker = server[1].state.worker
    batches_before = worker.batches

    def ask(prompt: str) -> str:
        stream = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=8, temperature=0, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, prompts))
    assert answers == [expected[p] for p in prompts]
    assert len(set(answers)) >= 3  # the comparison means something: answers differ by prompt
    assert worker.batches - batches_before < 20  # requests shared batches
    assert worker.largest_batch > 1
    assert httpx.get(server[0] + "/health").json()["status"] == "ok"


@pytest.mark.parametrize(("kwargs", "status", "param", "code"), [
    (dict(max_tokens=65), 400, "max_tokens", "max_tokens_too_large"),
    (dict(max_tokens=5, temperature=3.0), 400, "temperature", None),
    (dict(max_tokens=5, n=2), 400, "n", None),
    (dict(max_tokens=5, model="gpt-4"), 404, "model", "model_not_found"),
    (dict(max_tokens=5, messages=[{"role": "user", "content": "word " * 400}]), 400, "messages",
     "context_length_exceeded"),
    (dict(max_tokens=5, messages=[]), 400, "messages", None),
])
def test_bad_requests_get_openai_errors(client, kwargs, status, param, code):
    args = dict(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}])
    args.update(kwargs)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**args)
    err = info.value
    assert err.status_code == status
    assert set(err.body) == {"message", "type", "param", "code"}
    assert err.body["param"] == param and err.body["code"] == code
    assert err.body["message"]


def test_oversize_and_malformed_bodies(server):
    url = server[0] + "/v1/chat/completions"
    big = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x" * 30_000}]}
    r = httpx.post(url, json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(30):
            yield b"x" * 1000
    r = httpx.post(url, content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"

    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.get(server[0] + "/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_api_key(generator):
    app = create_app(generator, MODEL_ID, api_key=KEY)
    with running(app) as url:
        assert httpx.get(url + "/health").status_code == 200  # health stays open for probes
        for key in ("wrong", ""):
            bad = openai.OpenAI(base_url=url + "/v1", api_key=key or "x", max_retries=0,
                                default_headers={} if key else {"Authorization": ""})
            with pytest.raises(openai.AuthenticationError) as info:
                bad.models.list()
            assert info.value.body["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        r = good.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert r.usage.completion_tokens >= 1


class _BlockingGenerator:
    """Stands in for the model: holds the worker until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def run_batch(self, prompts, rows, settings):
        self.calls.append(len(prompts))
        self.release.wait(10)
        return [Answer("ok", len(p), 1, "stop", 0.0) for p in prompts]


def test_full_queue_answers_429_and_worker_survives_errors(generator):
    fake = _BlockingGenerator()
    worker = BatchWorker(fake, max_batch=4, max_queue=2)
    done: list = []

    def job(seed=None):
        settings = GenerationSettings(max_new_tokens=1, seed=seed)
        return Job([1, 2], settings, generator.row_decoder(2, settings), lambda a, e: done.append((a, e)))

    worker.submit(job(seed=1))  # taken by the worker, which now blocks
    time.sleep(0.2)
    worker.submit(job())
    worker.submit(job())
    with pytest.raises(APIError) as info:
        worker.submit(job())
    assert info.value.status == 429
    fake.release.set()
    deadline = time.time() + 10
    while len(done) < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert fake.calls == [1, 2]  # the seeded job ran alone, the two waiting ones as one batch
    assert all(a is not None and e is None for a, e in done)

    def broken(*args):
        raise RuntimeError("boom")
    fake.run_batch = broken
    worker.submit(job())
    time.sleep(0.3)
    assert isinstance(done[-1][1], RuntimeError)
    fake.run_batch = _BlockingGenerator.run_batch.__get__(fake)
    worker.submit(job())
    time.sleep(0.3)
    assert done[-1][0] is not None  # still serving after a failed batch
    worker.stop()


def test_cli_serve_subprocess(tiny_chat_model):
    port = free_port()
    env = {**os.environ, "SPECIALIST_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "specialist", "serve", "--model", str(tiny_chat_model),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health").status_code == 200:
                    break
            assert time.time() < deadline
            time.sleep(0.3)
        assert httpx.get(url + "/health").json() == {"status": "ok"}  # probes learn nothing more without the key
        model_id = httpx.get(url + "/health", headers={"Authorization": f"Bearer {KEY}"}).json()["model"]
        assert model_id == Path(tiny_chat_model).name
        assert httpx.get(url + "/v1/models").status_code == 401  # the key came from the environment
        c = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        assert c.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=3).choices[0].message.content is not None
    finally:
        proc.terminate()
        proc.wait(timeout=20)
