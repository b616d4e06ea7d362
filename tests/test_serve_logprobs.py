"""logprobs and echo on the server, in OpenAI's shapes, checked against a direct forward pass of
the tiny model; and the request fields it does not implement, refused by name."""

from __future__ import annotations

import copy
import json

import httpx
import openai
import pytest
import torch

from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.models.template import build_messages
from specialist.serve.server import ServerLimits, create_app
from tests.helpers import running

MODEL_ID = "tiny"
ATOL = 1e-4


@pytest.fixture(scope="module")
def generator(lively_chat_model) -> TorchGenerator:
    return TorchGenerator(load_model(str(lively_chat_model), dtype="float32"))


@pytest.fixture(scope="module")
def url(generator):
    with running(create_app(generator, MODEL_ID, limits=ServerLimits(max_tokens=32, max_prompt_tokens=200))) as u:
        yield u


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json={"model": MODEL_ID, **body}, timeout=60)


def direct(generator: TorchGenerator, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.log_softmax(generator.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def text_of(generator, token: int) -> str:
    return generator.tokenizer.decode([token], skip_special_tokens=False)


def test_echo_with_zero_tokens_scores_the_prompt_only(url, generator):
    prompt = "The barista poured a flat white"
    r = post(url, "/v1/completions", {"prompt": prompt, "echo": True, "max_tokens": 0, "logprobs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    ids = generator.tokenizer(prompt)["input_ids"]
    lp = choice["logprobs"]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 0 and r.json()["usage"]["prompt_tokens"] == len(ids)
    assert lp["tokens"] == [text_of(generator, t) for t in ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    ref = direct(generator, ids)
    assert lp["token_logprobs"][1:] == pytest.approx([ref[i, t].item() for i, t in enumerate(ids[1:])], abs=ATOL)
    for i, top in enumerate(lp["top_logprobs"][1:]):
        assert text_of(generator, ids[i + 1]) in top and 2 <= len(top) <= 3  # the top 2 and the prompt's token
        assert max(top.values()) == pytest.approx(ref[i].max().item(), abs=ATOL)
    offsets = lp["text_offset"]
    assert offsets[0] == 0 and all(b - a == len(t) for a, b, t in zip(offsets, offsets[1:], lp["tokens"]))


def test_lm_eval_loglikelihood_request_with_token_ids(url, generator):
    """lm-evaluation-harness's local-completions request, as it sends it: one prompt of token ids
    (context + continuation), echo, max_tokens 1, logprobs 1; it sums token_logprobs[ctxlen:-1]
    and calls the continuation greedy when each of its logprobs is the top one."""
    context = generator.tokenizer("Coffee is", add_special_tokens=False)["input_ids"]
    continuation = generator.tokenizer(" a drink", add_special_tokens=False)["input_ids"]
    ids = context + continuation
    body = {"prompt": [ids], "echo": True, "max_tokens": 1, "logprobs": 1, "temperature": 0, "seed": 1234}
    r = post(url, "/v1/completions", body)
    assert r.status_code == 200, r.text
    lp = r.json()["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the one answer token
    ref = direct(generator, ids)
    expected = sum(ref[i - 1, ids[i]].item() for i in range(len(context), len(ids)))
    assert sum(lp["token_logprobs"][len(context) : -1]) == pytest.approx(expected, abs=ATOL)
    greedy = all(ref[i - 1].argmax().item() == ids[i] for i in range(len(context), len(ids)))
    tops = lp["top_logprobs"][len(context) : -1]
    assert greedy == all(t == max(top.values()) for t, top in zip(lp["token_logprobs"][len(context) : -1], tops))
    # the answer token: the most likely one after the prompt, as greedy decoding picks it
    assert lp["token_logprobs"][-1] == pytest.approx(ref[-1].max().item(), abs=ATOL)
    assert r.json()["choices"][0]["text"].startswith(generator.tokenizer.decode(ids))  # echoed


def test_completion_logprobs_match_the_model_and_the_openai_client_reads_them(client, generator):
    prompt = "Once upon a time"
    r = client.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == r.usage.completion_tokens
    assert lp.text_offset[0] == 0
    # every answer token is the greedy pick: its logprob is the largest of its position (lm-eval's test)
    assert all(t == max(top.values()) for t, top in zip(lp.token_logprobs, lp.top_logprobs))
    assert all(len(top) <= 4 for top in lp.top_logprobs)
    ids = generator.tokenizer(prompt)["input_ids"]
    tokens = _greedy_ids(generator, ids, len(lp.tokens))
    assert lp.tokens == [text_of(generator, t) for t in tokens]
    ref = direct(generator, ids + tokens)
    for k, (token, value) in enumerate(zip(tokens, lp.token_logprobs)):
        assert value == pytest.approx(ref[len(ids) - 1 + k, token].item(), abs=ATOL)


def _greedy_ids(generator, ids: list[int], n: int) -> list[int]:
    out = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            out.append(int(generator.model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids) :]


def test_chat_logprobs_in_openai_shape(client, generator):
    messages = [{"role": "user", "content": "Say something"}]
    r = client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    prompt = generator.prompt_ids(build_messages("Say something"))
    tokens = _greedy_ids(generator, prompt, len(content))
    ref = direct(generator, prompt + tokens)
    for k, (entry, token) in enumerate(zip(content, tokens)):
        assert entry.token == text_of(generator, token)
        assert entry.logprob == pytest.approx(ref[len(prompt) - 1 + k, token].item(), abs=ATOL)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token or "\ufffd" in entry.token
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(
            ref[len(prompt) - 1 + k].topk(2).values.tolist(), abs=ATOL
        )
        assert entry.top_logprobs[0].token == entry.token  # greedy
    # without logprobs: null, as before
    plain = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=5, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == r.choices[0].message.content


def test_logprobs_do_not_depend_on_the_temperature(url, generator):
    """vLLM's convention: the raw distribution; the prompt's scores are the same at any temperature."""
    body = {"prompt": "Milk and sugar", "echo": True, "max_tokens": 0, "logprobs": 0}
    cold = post(url, "/v1/completions", {**body, "temperature": 0}).json()["choices"][0]["logprobs"]
    hot = post(url, "/v1/completions", {**body, "temperature": 1.9}).json()["choices"][0]["logprobs"]
    assert hot["token_logprobs"][1:] == pytest.approx(cold["token_logprobs"][1:], abs=ATOL)


def test_echo_streams_the_prompt_first(url):
    body = {"prompt": "Espresso", "echo": True, "max_tokens": 4, "temperature": 0}
    whole = post(url, "/v1/completions", body).json()["choices"][0]["text"]
    with httpx.stream(
        "POST", url + "/v1/completions", json={"model": MODEL_ID, **body, "stream": True}, timeout=60
    ) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert chunks[0]["choices"][0]["text"] == "Espresso"
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole and whole.startswith("Espresso")


def test_echo_is_the_prompt_and_the_answer_as_the_model_continued_it(url, generator):
    """The answer's own leading whitespace is kept after the prompt (the plain answer drops it)."""
    body = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
    plain = post(url, "/v1/completions", body).json()["choices"][0]["text"]
    choice = post(url, "/v1/completions", {**body, "echo": True, "logprobs": 0}).json()["choices"][0]
    n = len(generator.tokenizer(body["prompt"])["input_ids"])
    joined = "".join(choice["logprobs"]["tokens"][n:])
    lead = joined[: len(joined) - len(joined.lstrip())]
    assert choice["text"] == body["prompt"] + lead + plain


COMPLETION = "/v1/completions"
CHAT = "/v1/chat/completions"
MSG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
REFUSED = [
    # (path, body, param, code)
    (COMPLETION, {"prompt": "x", "logprobs": 1, "stream": True}, "logprobs", "unsupported_parameter"),
    (CHAT, {**MSG, "logprobs": True, "stream": True}, "logprobs", "unsupported_parameter"),
    (CHAT, {**MSG, "top_logprobs": 2}, "top_logprobs", None),
    (CHAT, {**MSG, "logprobs": True, "top_logprobs": 21}, "top_logprobs", None),
    (COMPLETION, {"prompt": "x", "logprobs": 21}, "logprobs", None),
    (COMPLETION, {"prompt": "x", "max_tokens": 0}, "max_tokens", None),
    (COMPLETION, {"prompt": "x", "best_of": 2}, "best_of", "unsupported_parameter"),
    (COMPLETION, {"prompt": "x", "suffix": "end"}, "suffix", "unsupported_parameter"),
    (COMPLETION, {"prompt": [[1, 2, 10**9]]}, "prompt", None),
    (COMPLETION, {"prompt": [[1, 2], [3, 4]]}, "prompt", None),
    (COMPLETION, {"prompt": [[]]}, "prompt", None),
    (COMPLETION, {"prompt": "x", "logit_bias": {"1": 5}}, "logit_bias", "unsupported_parameter"),
    (CHAT, {**MSG, "frequency_penalty": 0.5}, "frequency_penalty", "unsupported_parameter"),
    (CHAT, {**MSG, "presence_penalty": -1}, "presence_penalty", "unsupported_parameter"),
    (CHAT, {**MSG, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported_parameter"),
    (CHAT, {**MSG, "tool_choice": "auto"}, "tool_choice", "unsupported_parameter"),
    (CHAT, {**MSG, "response_format": {"type": "json_object"}}, "response_format", "unsupported_parameter"),
    (CHAT, {**MSG, "reasoning_effort": "low"}, "reasoning_effort", "unsupported_parameter"),
    (CHAT, {**MSG, "top_k": 5}, "top_k", "unsupported_parameter"),  # vLLM's, not OpenAI's: unknown here
    (COMPLETION, {"prompt": "x", "repetition_penalty": 1.1}, "repetition_penalty", "unsupported_parameter"),
]


@pytest.mark.parametrize(("path", "body", "param", "code"), REFUSED, ids=[c[2] + "-" + c[0][4:8] for c in REFUSED])
def test_what_the_server_does_not_do_is_refused_by_name(url, path, body, param, code):
    r = post(url, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == code and param in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            CHAT,
            {
                **MSG,
                "frequency_penalty": 0,
                "presence_penalty": 0,
                "logit_bias": {},
                "tool_choice": "none",
                "response_format": {"type": "text"},
                "user": "u1",
                "metadata": {"k": "v"},
                "logprobs": False,
            },
        ),
        (COMPLETION, {"prompt": "x", "max_tokens": 2, "best_of": 1, "suffix": "", "user": "u1", "echo": False}),
    ],
)
def test_the_off_values_of_unimplemented_fields_pass(url, path, body):
    assert post(url, path, body).status_code == 200


def test_an_engine_without_logprobs_refuses_them_and_still_echoes(generator):
    blind = copy.copy(generator)
    blind.scores_logprobs = False  # as an engine that cannot score tokens declares
    with running(create_app(blind, MODEL_ID, limits=ServerLimits(max_tokens=8))) as url:
        for path, body in ((COMPLETION, {"prompt": "x", "logprobs": 1}), (CHAT, {**MSG, "logprobs": True})):
            r = post(url, path, body)
            assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"
            assert "engine" in r.json()["error"]["message"]
        r = post(url, COMPLETION, {"prompt": "Echo me", "echo": True, "max_tokens": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "Echo me"
        assert r.json()["choices"][0]["logprobs"] is None


def test_an_engine_that_scores_only_answers_refuses_echo_scoring(generator):
    """A kept-vocabulary GGUF on llama.cpp scores a specialist's answers but has no logits for
    a prompt's other tokens: echo with logprobs is refused, logprobs of the answer are not."""
    answers_only = copy.copy(generator)
    answers_only.scores_prompts = False
    with running(create_app(answers_only, MODEL_ID, limits=ServerLimits(max_tokens=8))) as url:
        r = post(url, COMPLETION, {"prompt": "Echo me", "echo": True, "logprobs": 1, "max_tokens": 0})
        assert r.status_code == 400 and r.json()["error"]["param"] == "echo"
        assert "--engine torch" in r.json()["error"]["message"]
        r = post(url, COMPLETION, {"prompt": "Echo me", "logprobs": 1, "max_tokens": 2})
        assert r.status_code == 200 and r.json()["choices"][0]["logprobs"]["token_logprobs"]
