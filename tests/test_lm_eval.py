"""lm-evaluation-harness as a real client of `specialist serve`: its `local-completions` model
scores a loglikelihood (multiple-choice) task and a generation task, from task YAMLs and data
files written here (no hub), on the embedded Gemma 3 270M. The loglikelihoods it logs are
checked against the model scored in this process."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m"
MC = [
    {"question": "The capital of France is", "choices": ["Paris", "a banana", "blue"], "answer": 0},
    {"question": "Two plus two equals", "choices": ["seven", "four", "green"], "answer": 1},
    {"question": "Coffee is a drink made from roasted", "choices": ["rocks", "clouds", "beans"], "answer": 2},
    {"question": "The opposite of hot is", "choices": ["cold", "loud", "tall"], "answer": 0},
]
GEN = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What color is the sky on a clear day?", "answer": "Blue"},
    {"question": "What is the largest planet in the solar system?", "answer": "Jupiter"},
    {"question": "What is the opposite of hot?", "answer": "Cold"},
]


def write_tasks(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name, rows in (("mc", MC), ("gen", GEN)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {}\ntest_split: test\n"
    (folder / "mc.yaml").write_text(
        "task: specialist_mc\n"
        + data.format(folder / "mc.jsonl")
        + 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: choices\n'
        "doc_to_target: answer\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (folder / "gen.yaml").write_text(
        "task: specialist_gen\n"
        + data.format(folder / "gen.jsonl")
        + 'output_type: generate_until\ndoc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_target: answer\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 12\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "    ignore_case: true\n    ignore_punctuation: true\n"
    )


def test_lm_evaluation_harness_scores_tasks_against_the_server(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval", reason="pip install 'specialist[evalharness]'")
    from specialist.inference.torch_engine import TorchGenerator
    from specialist.models.resolve import load_model, resolve

    monkeypatch.delenv("SPECIALIST_HOME")  # use the user's cache: the embedded model is prepared once
    tokenizer_dir = resolve(MODEL).weights  # a local folder: lm-eval reads the tokenizer offline
    write_tasks(tmp_path / "tasks")
    env = {k: v for k, v in os.environ.items() if k != "SPECIALIST_HOME"}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "specialist", "serve", "--model", MODEL, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the server did not start"
            time.sleep(1)
        model_args = ",".join(
            [
                f"model={MODEL}",
                f"base_url=http://127.0.0.1:{port}/v1/completions",
                f"tokenizer={tokenizer_dir}",
                "tokenizer_backend=huggingface",
                "tokenized_requests=True",
                "add_bos_token=True",
                "max_length=1024",
                "num_concurrent=1",
                "max_retries=1",
            ]
        )
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                "local-completions",
                "--model_args",
                model_args,
                "--tasks",
                "specialist_mc,specialist_gen",
                "--include_path",
                str(tmp_path / "tasks"),
                "--output_path",
                str(tmp_path / "out"),
                "--log_samples",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert run.returncode == 0, run.stderr[-3000:]
    print(run.stdout)  # the scores table, for whoever runs this test with -s

    [results_file] = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert results["specialist_mc"]["sample_len"] == len(MC) and results["specialist_gen"]["sample_len"] == len(GEN)
    assert 0.0 <= results["specialist_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["specialist_gen"]["exact_match,none"] <= 1.0

    # every loglikelihood lm-eval logged is the model's own, scored here on the same token ids
    # (lm-eval's encoding: BOS + context, the continuation = the whole's tokens after the context's)
    generator = TorchGenerator(load_model(MODEL))
    tok = generator.tokenizer
    [mc_samples] = (tmp_path / "out").rglob("samples_specialist_mc_*.jsonl")
    samples = [json.loads(line) for line in mc_samples.read_text().splitlines()]
    assert len(samples) == len(MC)
    for sample in samples:
        for args, ((logged, greedy),) in zip(sample["arguments"].values(), sample["resps"]):
            context, continuation = args["arg_0"], args["arg_1"]
            ctx = tok(context)["input_ids"]
            whole = tok(context + continuation)["input_ids"]
            scored = generator.prompt_logprobs([whole], top=1)[0][len(ctx) :]
            assert float(logged) == pytest.approx(sum(s.logprob for s in scored), abs=0.05)
            near_tie = any(s.top[0][0] != s.token and s.top[0][1] - s.logprob < 0.05 for s in scored)
            if not near_tie:  # bf16 here and there may rank a near-tie differently
                assert (greedy == "True") == all(s.top[0][0] == s.token for s in scored)
        best = max(range(len(sample["resps"])), key=lambda i: float(sample["resps"][i][0][0]))
        assert sample["acc"] == float(best == sample["doc"]["answer"])

    [gen_samples] = (tmp_path / "out").rglob("samples_specialist_gen_*.jsonl")
    answers = [json.loads(line) for line in gen_samples.read_text().splitlines()]
    assert len(answers) == len(GEN)
    for sample in answers:
        [answer] = sample["filtered_resps"]
        assert "\n" not in answer  # the task's stop sequence reached the server
        norm = [s.lower().translate(str.maketrans("", "", string.punctuation)) for s in (answer, sample["target"])]
        assert sample["exact_match"] == float(norm[0] == norm[1])
