"""Answer prompts with a loaded model: batched (left padding, KV cache) or streamed.

Every caller (generate, chat, serve, eval) goes through Generator, so prompts are formatted by
models.template.encode_prompt exactly as in training.

One decoding path serves everything: `run_batch` hands a batch of prompts to transformers'
`generate` with a stopping criterion that follows every row on its own (end-of-turn token,
stop strings, its own token budget, cancellation) and turns its tokens into text pieces as
they arrive. `generate` collects the pieces, `stream` yields them, and the server batches
concurrent requests through it."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from specialist.models.resolve import LoadedModel
from specialist.models.template import Message, encode_prompt, stop_strings, stop_token_ids


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return not (self.temperature and self.temperature > 0)

    def generate_kwargs(self) -> dict:
        if not self.greedy:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn or a stop string) or "length"
    seconds: float


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _partial_stop_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string; that
    much is held back so a stop string is never half-streamed to the client."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if s.startswith(text[-n:]):
                best = n
                break
    return best


class RowDecoder:
    """Follows one row of a batch: collects its tokens, decodes them incrementally and decides
    when the row is finished. `on_piece` receives each new piece of text as it becomes final."""

    def __init__(self, tokenizer, eos_ids: Sequence[int], stops: Sequence[str], max_new_tokens: int,
                 prompt_tokens: int, on_piece: Callable[[str], None] | None = None) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.stops = [s for s in stops if s]
        self.max_new_tokens = max_new_tokens
        self.prompt_tokens = prompt_tokens
        self.on_piece = on_piece
        self.tokens: list[int] = []
        self.completion_tokens = 0
        self.text = ""  # the answer so far, cut at a stop string
        self.emitted = 0  # how much of self.text went out through on_piece
        self.finish_reason: str | None = None
        self.cancelled = threading.Event()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int) -> None:
        if self.done:
            return
        if self.cancelled.is_set():
            self.finish_reason = "cancelled"
            return
        self.completion_tokens += 1
        if token in self.eos_ids:
            self._finish("stop")
            return
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).lstrip()
        text, hit = _cut_at_stop(text, self.stops)
        self.text = text
        if hit:
            self._finish("stop")
        elif len(self.tokens) >= self.max_new_tokens:
            self._finish("length")
        else:
            # hold back an incomplete UTF-8 character (byte tokens), a possible stop string's start
            # and the whitespace before them (cut if the answer ends there)
            safe = len(text.rstrip("\ufffd"))
            safe -= _partial_stop_len(text[:safe], self.stops)
            self._emit(len(text[:safe].rstrip()))

    def _finish(self, reason: str) -> None:
        self.text = self.text.rstrip()
        self.finish_reason = reason
        self._emit(len(self.text))

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            piece = self.text[self.emitted:upto]
            self.emitted = upto
            if self.on_piece is not None:
                self.on_piece(piece)


class _FollowRows:
    """A transformers stopping criterion: after every decoding step it feeds each row's new
    token to that row's RowDecoder and reports which rows are finished."""

    def __init__(self, rows: Sequence[RowDecoder]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last):
            row.push(token)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


class TextStream:
    """An iterator over the text pieces of one streamed answer. After it is exhausted,
    `.answer` holds the Answer (token counts, finish reason); `.close()` stops generation
    early (e.g. the reader went away)."""

    def __init__(self, generator: "Generator", messages: Sequence[Message], settings: GenerationSettings) -> None:
        self._pieces: queue.Queue = queue.Queue()
        self.answer: Answer | None = None
        self._error: BaseException | None = None
        prompt = generator.prompt_ids(messages)
        self.row = generator.row_decoder(len(prompt), settings, on_piece=self._pieces.put)

        def work() -> None:
            try:
                self.answer = generator.run_batch([prompt], [self.row], settings)[0]
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reader's thread
                self._error = exc
            finally:
                self._pieces.put(None)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        piece = self._pieces.get()
        if piece is None:
            self._thread.join()
            if self._error is not None:
                raise self._error
            raise StopIteration
        return piece

    def close(self) -> None:
        self.row.cancelled.set()
        self._thread.join()


class Generator:
    def __init__(self, loaded: LoadedModel) -> None:
        self.model = loaded.model
        self.device = loaded.device
        self._use_tokenizer(loaded.tokenizer)
        config = getattr(self.model, "config", None)
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 2048)

    def _use_tokenizer(self, tokenizer) -> None:
        """Prompts and answers go through the Hugging Face tokenizer whatever the engine."""
        self.tokenizer = tokenizer
        self.eos_ids = stop_token_ids(tokenizer)
        self.template_stops = stop_strings(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        return encode_prompt(self.tokenizer, messages)

    def row_decoder(self, prompt_tokens: int, settings: GenerationSettings,
                    on_piece: Callable[[str], None] | None = None, chat: bool = True) -> RowDecoder:
        """A row for one answer; chat=False (raw text completion) drops the template's stop strings."""
        stops = [*settings.stop, *(self.template_stops if chat else [])]
        return RowDecoder(self.tokenizer, self.eos_ids, stops, settings.max_new_tokens, prompt_tokens, on_piece)

    def _batch(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token is its prompt's last
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    @torch.inference_mode()
    def run_batch(self, prompts: list[list[int]], rows: Sequence[RowDecoder],
                  settings: GenerationSettings) -> list[Answer]:
        """Decode a batch in one `generate` call. Sampling settings (temperature, top_p, seed)
        are shared by the batch; each row keeps its own stop strings and token budget."""
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        batch = self._batch(prompts)
        self.model.generate(
            **batch, max_new_tokens=max(r.max_new_tokens for r in rows), eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id, stopping_criteria=[_FollowRows(rows)], **settings.generate_kwargs(),
        )
        return self._answers(rows, time.perf_counter() - t0)

    @staticmethod
    def _answers(rows: Sequence[RowDecoder], seconds: float) -> list[Answer]:
        for row in rows:  # generation ended (e.g. the context is full) before the row finished
            if not row.done:
                row._finish("length")
        return [Answer(r.text, r.prompt_tokens, r.completion_tokens,
                       "stop" if r.finish_reason == "stop" else "length", seconds) for r in rows]

    def generate(self, conversations: Sequence[Sequence[Message]], settings: GenerationSettings | None = None,
                 batch_size: int = 8) -> list[Answer]:
        settings = settings or GenerationSettings()
        answers: list[Answer] = []
        for start in range(0, len(conversations), batch_size):
            chunk = [self.prompt_ids(c) for c in conversations[start:start + batch_size]]
            rows = [self.row_decoder(len(p), settings) for p in chunk]
            for answer in self.run_batch(chunk, rows, settings):
                answer.seconds /= len(chunk)
                answers.append(answer)
        return answers

    def stream(self, messages: Sequence[Message], settings: GenerationSettings | None = None) -> TextStream:
        """Yield the answer's text piece by piece as tokens are generated."""
        return TextStream(self, messages, settings or GenerationSettings())
