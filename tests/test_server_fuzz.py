"""Schema fuzzing of every route of the server's own OpenAPI document (schemathesis, through
the benchmark's `fuzz`), reduced: a few examples per route and mode, on the tiny model. The
larger run is the reliability benchmark's server section (benchmarks/reliability/server.py)."""

from __future__ import annotations

import pytest

from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.serve.server import ServerLimits, create_app
from tests.helpers import build_lively_model, load_benchmark
from tests.test_server_hardening import running

pytest.importorskip("schemathesis")

KEY = "sk-fuzz"


@pytest.fixture(scope="module")
def generator(chat_tokenizer_dir, tmp_path_factory) -> TorchGenerator:
    model = build_lively_model(tmp_path_factory.mktemp("lively-fuzz"), chat_tokenizer_dir)
    return TorchGenerator(load_model(str(model), dtype="float32"))


def test_fuzzing_every_route_finds_no_5xx_and_no_schema_violation(generator):
    bench = load_benchmark("reliability/server")
    # short answers keep the valid cases fast; a key makes the fuzzer authenticate like a client
    app = create_app(generator, bench.MODEL_ID, api_key=KEY, limits=ServerLimits(max_tokens=4, default_max_tokens=4))
    with running(app) as (url, _):
        result = bench.fuzz(url, max_examples=15, headers={"Authorization": f"Bearer {KEY}"})
    assert result["operations"] == 5  # /health, /v1/models, /v1/models/{name}, both completions
    assert result["fuzz_5xx"] == 0 and result["fuzz_failures"] == 0, result["failures"]
    for route in ("POST /v1/chat/completions", "POST /v1/completions"):  # answered some, refused some
        assert {"200", "400"} <= set(result["by_operation"][route]), result["by_operation"]


def test_fuzzing_catches_a_route_that_breaks(generator):
    """The fuzzer is not blind: on a server whose model fails, it reaches the model and reports the 5xx."""
    bench = load_benchmark("reliability/server")
    app = create_app(generator, bench.MODEL_ID, limits=ServerLimits(max_tokens=4, default_max_tokens=4))

    def broken(prompts, rows, settings):
        raise RuntimeError("the model fell over")

    app.state.worker.generator = type("Broken", (), {"run_batch": staticmethod(broken)})()
    with running(app) as (url, _):
        result = bench.fuzz(url, max_examples=25)
    assert result["fuzz_5xx"] > 0 and result["fuzz_failures"] > 0, result


def test_the_load_phase_counts_requests_errors_latency_and_memory(generator):
    """The server section's load phase, reduced: a few streaming clients for a few seconds, every
    stream complete, its figures (requests, errors, p50/p95, memory growth) measured."""
    import os

    bench = load_benchmark("reliability/server")
    app = create_app(generator, bench.MODEL_ID, limits=ServerLimits(max_tokens=64))  # as the section serves it
    with running(app) as (url, _):
        result = bench.load(url, os.getpid(), clients=4, seconds=3.0)
    assert result["requests"] >= 4 and result["errors"] == result["errors_5xx"] == 0, result["client_errors"]
    assert result["incomplete_streams"] == 0
    assert 0 < result["latency_p50_s"] <= result["latency_p95_s"] and result["tokens_per_s"] > 0
    assert result["rss_samples"] >= 1 and isinstance(result["rss_growth"], float)
