"""Answer prompts with a loaded model: batched (left padding, KV cache) or streamed.

Every caller (generate, chat, serve, eval) goes through Generator, so prompts are formatted by
models.template.encode_prompt exactly as in training."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

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

    def generate_kwargs(self) -> dict:
        if self.temperature and self.temperature > 0:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
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


class Generator:
    def __init__(self, loaded: LoadedModel) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.eos_ids = stop_token_ids(self.tokenizer)
        self.template_stops = stop_strings(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        return encode_prompt(self.tokenizer, messages)

    def _seed(self, settings: GenerationSettings) -> None:
        if settings.seed is not None:
            torch.manual_seed(settings.seed)

    def _batch(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token is its prompt's last
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Sequence[Message]], settings: GenerationSettings | None = None,
                 batch_size: int = 8) -> list[Answer]:
        settings = settings or GenerationSettings()
        answers: list[Answer] = []
        for start in range(0, len(conversations), batch_size):
            chunk = [self.prompt_ids(c) for c in conversations[start:start + batch_size]]
            self._seed(settings)
            t0 = time.perf_counter()
            batch = self._batch(chunk)
            out = self.model.generate(
                **batch, max_new_tokens=settings.max_new_tokens, eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id, **settings.generate_kwargs(),
            )
            seconds = time.perf_counter() - t0
            new = out[:, batch["input_ids"].shape[1]:]
            for prompt, row in zip(chunk, new.tolist()):
                tokens = []
                stopped = False
                for tok in row:
                    if tok in self.eos_ids:
                        stopped = True
                        break
                    tokens.append(tok)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                text, hit = _cut_at_stop(text, [*settings.stop, *self.template_stops])
                answers.append(Answer(text.strip(), len(prompt), len(tokens) + (1 if stopped else 0),
                                      "stop" if (stopped or hit) else "length", seconds / len(chunk)))
        return answers

    def stream(self, messages: Sequence[Message], settings: GenerationSettings | None = None) -> Iterator[str]:
        """Yield the answer's text piece by piece as tokens are generated."""
        from transformers import TextIteratorStreamer

        settings = settings or GenerationSettings()
        self._seed(settings)
        batch = self._batch([self.prompt_ids(messages)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**batch, max_new_tokens=settings.max_new_tokens, eos_token_id=self.eos_ids,
                      pad_token_id=self.pad_id, streamer=streamer, **settings.generate_kwargs())
        error: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                error.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        emitted = ""
        for piece in streamer:
            emitted += piece
            text, hit = _cut_at_stop(emitted, [*settings.stop, *self.template_stops])
            if hit:
                yield text[len(emitted) - len(piece):]
                break
            yield piece
        thread.join()
        if error:
            raise error[0]
