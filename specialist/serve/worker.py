"""The one thread that runs the model, and the jobs it takes.

Requests wait in a bounded queue (full: 429). The worker takes the oldest one and every other
waiting job that can share its sampling settings and its model (up to `max_batch`), and decodes
them as one batch, so concurrent clients share the forward passes instead of waiting for each
other. A job whose client has left is skipped, and gives its place first when the queue is full.
Runs of one base share one model: their jobs batch together, each row with its own adapter."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from specialist.inference.generator import Answer, Generator
from specialist.inference.sampling import GenerationSettings
from specialist.inference.stops import RowDecoder
from specialist.serve.http import APIError


@dataclass
class Job:
    prompt: list[int]
    settings: GenerationSettings
    row: RowDecoder
    on_done: Callable[[Answer | None, BaseException | None], None]
    generator: Generator | None = None  # the specialist's; None: the worker's own

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share a batch; a seeded job runs alone so its seed makes
        its answer reproducible."""
        if self.settings.seed is not None:
            return None
        if self.settings.greedy:
            return ("greedy",)
        return ("sample", self.settings.temperature, self.settings.top_p)


class BatchWorker:
    """The one thread that runs the model (see the module docstring)."""

    def __init__(self, generator: Generator, max_batch: int = 8, max_queue: int = 64) -> None:
        self.generator = generator
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.batches = 0  # how many generate calls ran; tests and /health read it
        self.largest_batch = 0
        self._running: list[Job] = []
        self._thread = threading.Thread(target=self._loop, name="model-worker", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._jobs)

    @property
    def active(self) -> int:
        """Rows of the running batch still being decoded."""
        return sum(not job.row.done for job in self._running)

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._jobs) >= self.max_queue:  # requests whose clients left give their places first
                self._jobs = deque(j for j in self._jobs if not j.row.cancelled.is_set())
            if len(self._jobs) >= self.max_queue:
                raise APIError(429, f"the server is busy: {self.max_queue} requests are waiting; retry later",
                               type="rate_limit_error", code="queue_full")
            self._jobs.append(job)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _key(self, job: Job) -> tuple | None:
        """Jobs share a batch when their sampling allows it (Job.batch_key) and their
        generators share one model (the runs of one base: each row keeps its adapter)."""
        key = job.batch_key
        generator = job.generator or self.generator
        return None if key is None else (id(getattr(generator, "shared_model", generator)), *key)

    def _take_batch(self) -> list[Job]:
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            first = self._jobs.popleft()
            batch = [first]
            key = self._key(first)
            if key is not None:
                for job in list(self._jobs):
                    if len(batch) >= self.max_batch:
                        break
                    if self._key(job) == key:
                        self._jobs.remove(job)
                        batch.append(job)
            return batch

    def _loop(self) -> None:
        while True:
            batch = [j for j in self._take_batch() if not j.row.cancelled.is_set()]
            if self._stopping:
                return
            if not batch:
                continue
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            self._running = batch
            try:
                generators = [j.generator or self.generator for j in batch]
                prompts, rows = [j.prompt for j in batch], [j.row for j in batch]
                if len(set(map(id, generators))) == 1:
                    answers = generators[0].run_batch(prompts, rows, batch[0].settings)
                else:  # several specialists on one shared model: each row names its adapter
                    answers = generators[0].run_batch(prompts, rows, batch[0].settings,
                                                      adapters=[g.adapter for g in generators])
            except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the worker
                for job in batch:
                    job.on_done(None, exc)
                continue
            finally:
                self._running = []
            for job, answer in zip(batch, answers):
                job.on_done(answer, None)
