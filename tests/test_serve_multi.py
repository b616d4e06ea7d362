"""Several specialists behind one server: two LoRA runs of one tiny base (and the base itself)
share its weights in memory, answer by name exactly as each run served alone, and their
requests decode together in mixed-adapter batches."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from specialist.inference.engines import make_generators
from specialist.inference.generator import Generator, finish_rows
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.models.template import build_messages
from specialist.serve.server import create_app
from specialist.serve.specialists import load_specialists, model_entries
from specialist.serve.worker import BatchWorker, Job
from tests.helpers import make_adapter_run, running

PROMPTS = ["Hello there", "What is a good coffee?", "Tell me about leases", "Numbers: 1 2 3"]
SYSTEM = "You answer in one short sentence."


@pytest.fixture(scope="module")
def runs(lively_chat_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multi")
    return {
        "alpha": make_adapter_run(lively_chat_model, root / "alpha", seed=1),
        "beta": make_adapter_run(lively_chat_model, root / "beta", seed=2, config={"system_prompt": SYSTEM}),
        "base": lively_chat_model,
    }


@pytest.fixture(scope="module")
def shared(runs) -> list[Generator]:
    """alpha, beta and the base, loaded together (float32: the comparisons are exact)."""
    return make_generators([str(runs["alpha"]), str(runs["beta"]), str(runs["base"])], dtype="float32")


@pytest.fixture(scope="module")
def alone(runs) -> dict[str, Generator]:
    """Each served alone, as `serve --model X` loads it (a run's adapter merged)."""
    return {
        name: TorchGenerator(load_model(str(ref), dtype="float32", merge_adapter=True)) for name, ref in runs.items()
    }


def greedy(generator: Generator, prompt: str, system: str | None = None, n: int = 10) -> str:
    return generator.generate([build_messages(prompt, system)], GenerationSettings(max_new_tokens=n))[0].text


def test_runs_of_one_base_share_its_weights(shared, alone):
    model = shared[0].shared_model
    assert all(g.shared_model is model for g in shared)  # one model for the three
    assert [g.adapter for g in shared] == ["adapter0", "adapter1", "__base__"]
    assert set(model.peft_config) == {"adapter0", "adapter1"}
    assert shared[0].tokenizer is shared[1].tokenizer  # both runs saved the same tokenizer files: loaded once
    base_alone = alone["base"].model
    # the base's weights are in memory once: as many base tensors as the base alone has
    # (each adapter adds only its small LoRA matrices)
    base_tensors = {p.data_ptr() for n, p in model.named_parameters() if "lora_" not in n}
    assert len(base_tensors) == len({p.data_ptr() for p in base_alone.parameters()})
    base_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    lora_numel = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert base_numel == sum(p.numel() for p in base_alone.parameters())
    assert 0 < lora_numel < base_numel / 2  # two adapters: far less than a second copy of the base


def test_each_answers_as_it_does_alone(shared, alone):
    for generator, name in zip(shared, ["alpha", "beta", "base"]):
        for prompt in PROMPTS:
            assert greedy(generator, prompt) == greedy(alone[name], prompt), (name, prompt)
    # the comparison means something: the three models answer differently
    assert len({greedy(alone[name], p) for name in alone for p in PROMPTS[:2]}) >= 4


def test_a_mixed_batch_equals_separate_batches(shared):
    settings = GenerationSettings(max_new_tokens=10)
    mixed = [(shared[i % 3], PROMPTS[i % len(PROMPTS)]) for i in range(6)]  # alpha, beta, base, alpha, …
    prompts = [g.prompt_ids(build_messages(p)) for g, p in mixed]
    rows = [g.row_decoder(len(ids), settings) for (g, _), ids in zip(mixed, prompts)]
    together = shared[0].run_batch(prompts, rows, settings, adapters=[g.adapter for g, _ in mixed])
    apart: dict[int, str] = {}
    for generator in shared:  # one batch per specialist
        own = [i for i, (g, _) in enumerate(mixed) if g is generator]
        answers = generator.run_batch(
            [prompts[i] for i in own], [generator.row_decoder(len(prompts[i]), settings) for i in own], settings
        )
        apart.update({i: a.text for i, a in zip(own, answers)})
    assert [a.text for a in together] == [apart[i] for i in range(len(mixed))]
    assert len({a.text for a in together}) >= 4


class _Gate:
    """Holds the worker on its first batch, so that the jobs submitted meanwhile queue up."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def run_batch(self, prompts, rows, settings):
        self.release.wait(20)
        for row in rows:
            row.finish("stop")
        return finish_rows(rows, 0.0)


def test_the_worker_batches_specialists_of_one_base_together(shared, alone, tiny_chat_model):
    other = TorchGenerator(load_model(str(tiny_chat_model), dtype="float32"))  # another base
    gate = _Gate()
    worker = BatchWorker(gate, max_batch=8)
    done: dict[int, str] = {}

    def job(i: int, generator, prompt: str, seed: int | None = None) -> Job:
        s = GenerationSettings(max_new_tokens=10, seed=seed)
        text = generator if isinstance(generator, Generator) else other  # the gate has no tokenizer
        ids = text.prompt_ids(build_messages(prompt))
        return Job(
            ids,
            s,
            text.row_decoder(len(ids), s),
            lambda a, e: done.__setitem__(i, a.text if a is not None else repr(e)),
            generator,
        )

    try:
        worker.submit(job(-1, gate, "hold", seed=1))  # a seeded job runs alone: the worker waits in it
        time.sleep(0.2)
        plan = [
            (shared[0], PROMPTS[0]),
            (other, PROMPTS[1]),
            (shared[1], PROMPTS[1]),
            (shared[2], PROMPTS[2]),
            (shared[0], PROMPTS[3]),
        ]
        for i, (generator, prompt) in enumerate(plan):
            worker.submit(job(i, generator, prompt))
        gate.release.set()
        deadline = time.time() + 60
        while len(done) < len(plan) + 1:
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        worker.stop()
    assert worker.batches == 3  # the gate; alpha, beta and the base together; the other base alone
    assert worker.largest_batch == 4
    expected = [
        greedy(alone["alpha"], PROMPTS[0]),
        greedy(other, PROMPTS[1]),
        greedy(alone["beta"], PROMPTS[1]),
        greedy(alone["base"], PROMPTS[2]),
        greedy(alone["alpha"], PROMPTS[3]),
    ]
    assert [done[i] for i in range(len(plan))] == expected


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    models = tmp_path_factory.mktemp("models-file") / "models.yaml"
    models.write_text(f"base: {runs['base']}\n")
    entries = model_entries([str(runs["alpha"]), str(runs["beta"])], models)
    app = create_app(load_specialists(entries, dtype="float32"))
    with running(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_one_server_answers_each_by_name(server, client, alone):
    assert [m.id for m in client.models.list().data] == ["alpha", "beta", "base"]
    assert client.models.retrieve("beta").id == "beta"

    def ask(name_prompt: tuple[str, str]) -> str:
        name, prompt = name_prompt
        r = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": prompt}], max_tokens=10, temperature=0
        )
        assert r.model == name
        return r.choices[0].message.content

    asks = [(name, p) for p in PROMPTS for name in ("alpha", "beta", "base")]
    with ThreadPoolExecutor(len(asks)) as pool:
        answers = list(pool.map(ask, asks))
    # beta was trained with a system prompt: a request without one gets it, as in training
    assert answers == [greedy(alone[name], p, SYSTEM if name == "beta" else None) for name, p in asks]
    assert server[1].state.worker.largest_batch > 1


def test_beta_keeps_its_training_system_prompt(client, alone):
    def ask(messages):
        return (
            client.chat.completions.create(model="beta", messages=messages, max_tokens=10, temperature=0)
            .choices[0]
            .message.content
        )

    implicit = ask([{"role": "user", "content": PROMPTS[1]}])
    assert implicit == ask([{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPTS[1]}])
    other = "Answer at length."
    assert ask([{"role": "system", "content": other}, {"role": "user", "content": PROMPTS[1]}]) == greedy(
        alone["beta"], PROMPTS[1], other
    )  # a client's own system prompt replaces it


def test_unknown_model_is_404_in_openai_shape(client):
    for call in (
        lambda: client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "hi"}]),
        lambda: client.completions.create(model="gamma", prompt="hi"),
        lambda: client.models.retrieve("gamma"),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.body["code"] == "model_not_found"
        assert info.value.body["param"] == "model"
        assert "'alpha', 'beta', 'base'" in info.value.body["message"]


def test_completions_route_by_name(client, alone):
    for name in ("alpha", "base"):
        text = client.completions.create(model=name, prompt="Once upon a time", max_tokens=8, temperature=0)
        ids = alone[name].tokenizer("Once upon a time", add_special_tokens=True)["input_ids"]
        settings = GenerationSettings(max_new_tokens=8)
        row = alone[name].row_decoder(len(ids), settings, chat=False)
        assert text.choices[0].text == alone[name].run_batch([ids], [row], settings)[0].text


def test_runs_of_different_bases_get_their_own_models(runs, tiny_chat_model, tmp_path):
    other = make_adapter_run(tiny_chat_model, tmp_path / "other")
    generators = make_generators([str(runs["alpha"]), str(other), str(runs["beta"])], dtype="float32")
    assert generators[0].shared_model is generators[2].shared_model
    assert generators[1].shared_model is not generators[0].shared_model
    assert generators[1].adapter is None  # alone on its base: merged, as `serve` loads one run


def test_models_file_names_and_relative_paths(runs, tmp_path):
    (tmp_path / "models.yaml").write_text(f"first: {runs['alpha']}\nsecond: beta\nknown: gemma-3-270m\n")
    (tmp_path / "beta").symlink_to(runs["beta"])
    entries = model_entries([str(runs["alpha"])], tmp_path / "models.yaml")
    assert [(e.name, e.ref) for e in entries] == [
        ("alpha", str(runs["alpha"])),
        ("first", str(runs["alpha"])),
        ("second", str(tmp_path / "beta")),
        ("known", "gemma-3-270m"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "expected a mapping of model names"),
        ("a: [1, 2]\n", "a: expected a model reference"),
        ("a: x\nb: {\n", ":3: not valid YAML/JSON"),
        ('{"": "x"}', "a model name must be printable"),
    ],
)
def test_a_bad_models_file_is_one_located_line(run_cli, tmp_path, text, message):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    result = run_cli("serve", "--models", path)
    assert result.exit_code == 2
    assert str(path) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_two_models_of_one_name_are_refused(run_cli, runs, tmp_path):
    twin = tmp_path / "x" / "alpha"
    twin.parent.mkdir()
    twin.symlink_to(runs["alpha"])
    result = run_cli("serve", "--model", runs["alpha"], "--model", twin)
    assert result.exit_code == 2
    assert "two models are named 'alpha'" in result.stderr


def test_knowledge_options_with_several_models_are_refused(run_cli, runs, tmp_path):
    result = run_cli("serve", "--model", runs["alpha"], "--model", runs["beta"], "--top-k", "2")
    assert result.exit_code == 2
    assert "its own run's knowledge base" in result.stderr


def scored(generator: Generator, prompt: str, n: int = 6):
    """The answer's and the prompt's log-probabilities, as the server asks for them."""
    settings = GenerationSettings(max_new_tokens=n)
    ids = generator.prompt_ids(build_messages(prompt))
    row = generator.row_decoder(len(ids), settings, logprobs=2, prompt_logprobs=2)
    (answer,) = generator.run_batch([ids], [row], settings)
    return answer.text, answer.logprobs, answer.prompt_logprobs


def close(a, b) -> bool:
    return [x is None for x in a] == [x is None for x in b] and all(
        x is None or (x.token == y.token and abs(x.logprob - y.logprob) < 1e-4) for x, y in zip(a, b)
    )


def test_a_shared_specialist_scores_tokens_as_it_does_alone(shared, alone):
    """Log-probabilities come from the request's own adapter: the answer's (read by a hook on the
    model PEFT wraps) and the prompt's (one forward with its adapter named)."""
    for generator, name in zip(shared, ["alpha", "beta", "base"]):
        text, answer_lps, prompt_lps = scored(generator, PROMPTS[1])
        ref_text, ref_answer, ref_prompt = scored(alone[name], PROMPTS[1])
        assert text == ref_text and answer_lps and close(answer_lps, ref_answer), name
        assert prompt_lps[0] is None and close(prompt_lps, ref_prompt), name
