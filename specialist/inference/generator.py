"""The interface every engine implements, and what is the same on all of them.

Prompts are encoded by the model's Hugging Face tokenizer with models.template.encode_prompt
exactly as in training, and each answer is followed by a RowDecoder (stop strings, end-of-turn,
token budget, streaming, cancellation), so generate, chat, serve and eval behave the same on
every engine. An engine only decodes: `run_batch` takes a batch of prompts with one RowDecoder
per prompt and feeds each row its tokens until every row is done. `generate` collects the
pieces, `stream` yields them, and the server batches concurrent requests through run_batch."""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from specialist.inference.logprobs import TokenLogprob
from specialist.inference.numbers import NumberGuard
from specialist.inference.sampling import GenerationSettings
from specialist.inference.stops import RowDecoder
from specialist.models.template import Message, detach_context, encode_prompt, stop_strings, stop_token_ids


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn or a stop string) or "length"
    seconds: float
    # every completion token scored, end-of-turn included (when the row asked for logprobs)
    logprobs: list[TokenLogprob] | None = None
    # the prompt's tokens scored, the first None (when the row asked for prompt_logprobs)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    # prompt tokens read for an earlier request, whose cache this one started from
    cached_tokens: int = 0


def finish_rows(rows: Sequence[RowDecoder], seconds: float) -> list[Answer]:
    """The rows' answers once decoding ended; a row still open (the engine stopped first, e.g.
    its context is full) ends for "length"."""
    for row in rows:
        if not row.done:
            row.finish("length")
    return [Answer(r.text, r.prompt_tokens, r.completion_tokens, "stop" if r.finish_reason == "stop" else "length",
                   seconds, r.scores if r.logprobs is not None else None, r.prompt_scores, r.cached_tokens)
            for r in rows]


class Generator(ABC):
    """Answers conversations with one model. `tokenizer` is the model's Hugging Face tokenizer,
    whatever the engine; `context_length` is how many tokens one sequence holds.
    `scores_logprobs`: whether run_batch scores tokens for rows that ask (RowDecoder's
    logprobs and prompt_logprobs); an engine that cannot leaves it False and the server
    refuses such requests."""

    scores_logprobs = False
    scores_prompts = True  # with scores_logprobs: prompt tokens too, over the whole vocabulary

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = stop_token_ids(tokenizer)
        self.template_stops = stop_strings(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.context_length = context_length

    adapter: str | None = None  # set on generators that share one model, each with its own adapter

    @property
    def shared_model(self) -> object:
        """What this generator decodes with: generators returning the same object (runs of one
        base, engines.make_generators) can decode their rows in one batch, run_batch(adapters=)."""
        return self

    @abstractmethod
    def run_batch(self, prompts: list[list[int]], rows: Sequence[RowDecoder], settings: GenerationSettings,
                  adapters: Sequence[str | None] | None = None) -> list[Answer]:
        """Decode a batch of prompts (token ids), feeding row i the tokens of prompt i until
        every row is done. Sampling settings (temperature, top_p, seed) are shared by the
        batch; each row keeps its own stop strings and token budget. `adapters` (one per row)
        is given only for a batch that mixes the rows of generators sharing this one's model."""

    def close(self) -> None:  # noqa: B027 - an optional hook: engines holding only Python objects keep it
        """Free what the engine holds outside Python's memory (nothing, by default)."""

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        return encode_prompt(self.tokenizer, messages)

    def contrast_ids(self, messages: Sequence[Message], settings: GenerationSettings) -> list[int] | None:
        """The prompt context-aware decoding contrasts with (inference/contrast.py): the
        conversation without its retrieved context; None when it is off or there is no context."""
        if settings.context_contrast <= 0:
            return None
        if not self.contrasts:
            if not self._said_no_contrast:
                from specialist.console import err_console

                err_console.print(f"[yellow]note:[/yellow] context-aware decoding runs on --engine torch only; "
                                  f"{type(self).__name__} answers without it")
                self._said_no_contrast = True
            return None
        plain = detach_context(messages)
        return self.prompt_ids(plain) if plain is not None else None

    contrasts = False  # whether run_batch honours RowDecoder.contrast (context-aware decoding)
    _said_no_contrast = False

    def row_decoder(self, prompt_tokens: int, settings: GenerationSettings,
                    on_piece: Callable[[str], None] | None = None, chat: bool = True,
                    logprobs: int | None = None, prompt_logprobs: int | None = None,
                    prompt: Sequence[int] | None = None, contrast: Sequence[int] | None = None) -> RowDecoder:
        """A row for one answer; chat=False (raw text completion) drops the template's stop
        strings; `logprobs`/`prompt_logprobs`: see RowDecoder. With settings.grounded_numbers,
        the answer states only numbers that `prompt` (its token ids) holds; `contrast`
        (contrast_ids) turns on context-aware decoding for it."""
        stops = [*settings.stop, *(self.template_stops if chat else [])]
        guard = (NumberGuard.for_prompt(self.tokenizer, prompt)
                 if settings.grounded_numbers and prompt is not None else None)
        return RowDecoder(self.tokenizer, self.eos_ids, stops, settings.max_new_tokens, prompt_tokens, on_piece,
                          logprobs=logprobs, prompt_logprobs=prompt_logprobs, guard=guard, contrast=contrast,
                          contrast_alpha=settings.context_contrast)

    def generate(self, conversations: Sequence[Sequence[Message]], settings: GenerationSettings | None = None,
                 batch_size: int = 8) -> list[Answer]:
        settings = settings or GenerationSettings()
        answers: list[Answer] = []
        for start in range(0, len(conversations), batch_size):
            convs = conversations[start:start + batch_size]
            chunk = [self.prompt_ids(c) for c in convs]
            rows = [self.row_decoder(len(p), settings, prompt=p, contrast=self.contrast_ids(c, settings))
                    for p, c in zip(chunk, convs)]
            for answer in self.run_batch(chunk, rows, settings):
                answer.seconds /= len(chunk)
                answers.append(answer)
        return answers

    def stream(self, messages: Sequence[Message], settings: GenerationSettings | None = None) -> TextStream:
        """Yield the answer's text piece by piece as tokens are generated."""
        return TextStream(self, messages, settings or GenerationSettings())


class TextStream:
    """An iterator over the text pieces of one streamed answer. After it is exhausted,
    `.answer` holds the Answer (token counts, finish reason); `.close()` stops generation
    early (e.g. the reader went away)."""

    def __init__(self, generator: Generator, messages: Sequence[Message], settings: GenerationSettings) -> None:
        self._pieces: queue.Queue = queue.Queue()
        self.answer: Answer | None = None
        self._error: BaseException | None = None
        prompt = generator.prompt_ids(messages)
        self.row = generator.row_decoder(len(prompt), settings, on_piece=self._pieces.put, prompt=prompt,
                                         contrast=generator.contrast_ids(messages, settings))

        def work() -> None:
            try:
                self.answer = generator.run_batch([prompt], [self.row], settings)[0]
            except BaseException as exc:  # noqa: BLE001 - re-raised in the reader's thread
                self._error = exc
            finally:
                self._pieces.put(None)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def __iter__(self) -> TextStream:
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
