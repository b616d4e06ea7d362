"""Trainer callbacks: the progress line (step, epoch, loss, tokens/s, ETA) and metrics.jsonl.

Both act on the main process only, so under DDP the run folder is written once."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class Throughput:
    """Tokens per second of training proper: tokens seen since training (re)started over the
    summed duration of optimizer steps, so evaluation and checkpoint time do not count."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self._tokens0: int | None = None
        self._t0: float | None = None

    def begin(self, tokens_seen: int) -> None:
        self._tokens0 = tokens_seen  # the Trainer counts a batch's tokens before its step begins

    def step_begin(self) -> None:
        self._t0 = time.perf_counter()

    def step_end(self, tokens_seen: int) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None
        self.tokens = tokens_seen - (self._tokens0 or 0)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


class MetricsCallback(TrainerCallback):
    """Appends one JSON object per log event to metrics.jsonl (kept across --resume) and shows
    a progress line on stderr."""

    def __init__(self, metrics_path: Path, show_progress: bool = True, seconds_before: float = 0.0) -> None:
        self.metrics_path = metrics_path
        self.show_progress = show_progress
        # training time of earlier attempts of a resumed run, up to the checkpoint it resumes from
        self.seconds_before = seconds_before
        self.throughput = Throughput()
        self.train_started = 0.0
        self.first_step = 0
        self.last_loss: float | None = None
        self.best_eval: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.train_started = time.perf_counter()
        self.first_step = state.global_step
        self.throughput.begin(state.num_input_tokens_seen)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.throughput.step_begin()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.throughput.step_end(state.num_input_tokens_seen)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        # max_steps lets a reader of metrics.jsonl alone (the studio) show progress and ETA
        record: dict[str, Any] = {"step": state.global_step, "max_steps": int(state.max_steps),
                                  "epoch": round(float(state.epoch or 0), 4)}
        if "loss" in logs:
            record["loss"] = float(logs["loss"])
            self.last_loss = record["loss"]
        if "eval_loss" in logs:
            record["eval_loss"] = float(logs["eval_loss"])
            if self.best_eval is None or record["eval_loss"] < self.best_eval:
                self.best_eval = record["eval_loss"]
        if "learning_rate" in logs:
            record["lr"] = float(logs["learning_rate"])
        if "grad_norm" in logs:
            record["grad_norm"] = float(logs["grad_norm"])
        if "train_loss" in logs:
            record["train_loss"] = float(logs["train_loss"])
        record["train_seconds"] = round(self.seconds_before + time.perf_counter() - self.train_started, 2)
        record["tokens_per_second"] = round(self.throughput.tokens_per_second, 1)
        record["tokens_seen"] = int(state.num_input_tokens_seen)
        record["threads"] = _threads()
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        # the end-of-training summary (train_loss, runtime) repeats the last step: file only
        if self.show_progress and ("loss" in record or "eval_loss" in record):
            self._print(record, state)

    def _print(self, record: dict[str, Any], state: Any) -> None:
        from specialist.console import err_console

        done = state.global_step - self.first_step
        elapsed = time.perf_counter() - self.train_started
        left = state.max_steps - state.global_step
        eta = elapsed / done * left if done > 0 else float("nan")
        parts = [f"step {state.global_step}/{state.max_steps}", f"epoch {record['epoch']:.2f}"]
        if "loss" in record:
            parts.append(f"loss {record['loss']:.4f}")
        if "eval_loss" in record:
            parts.append(f"eval_loss {record['eval_loss']:.4f}")
        parts.append(f"{record['tokens_per_second']:.0f} tok/s")
        if left > 0 and eta == eta:
            parts.append(f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        err_console.print("  ".join(parts), highlight=False)


class AdaptiveThreads(TrainerCallback):
    """Re-decides the torch thread count every `every` steps from what other processes did
    since the last decision, as other work on the machine comes and goes (only when the user
    did not fix `threads`). `steps_at` counts the steps run at each thread count."""

    def __init__(self, local_processes: int = 1, every: int = 10) -> None:
        from specialist.train.setup import OtherLoad

        self.local_processes = local_processes
        self.every = every
        self.other_load = OtherLoad()
        self.steps_at: Counter[int] = Counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import torch

        if state.global_step % self.every == 0 and state.global_step > 0:
            from specialist.train.setup import default_threads

            load = self.other_load.cores(siblings=self.local_processes - 1, min_window=0.0)
            wanted = default_threads(self.local_processes, other_load=load)
            if wanted != torch.get_num_threads():
                torch.set_num_threads(wanted)
        self.steps_at[torch.get_num_threads()] += 1
