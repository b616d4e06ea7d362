"""The contenders and how each one is asked.

- zero-shot: the run's base model, the user prompt only;
- prompt-engineering: the base model with a system prompt and k few-shot turns drawn (seeded)
  from the training set, the same k for every prompt;
- fine-tuned: the run, the short prompt only (as it was trained);
- an OpenAI-compatible endpoint (optional), asked with the prompt-engineering messages;
with a knowledge base (--knowledge, or the run's own snapshot) two more:
- prompt-engineering+knowledge: the base model, a system prompt that asks it to answer from the
  context (system_prompt_knowledge.txt) in place of the full fact list, the same few-shot turns,
  and the retrieved passages in the last user turn;
- fine-tuned+knowledge: the run, its training system prompt if any, the retrieved passages in
  the last user turn, the prompt a run trained with --knowledge saw.
The passages come from one retrieval per prompt, shared by both (models.template.format_context).

The base model is loaded once: the base contenders run with the run's LoRA adapter disabled
(PeftModel.disable_adapter), the fine-tuned contender with it enabled."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from specialist.data.example import Example
from specialist.errors import SpecialistError
from specialist.models.template import ContextPassage, Message, build_messages
from specialist.models.vocab_head import whole_vocabulary

ZERO_SHOT = "zero-shot"
PROMPT_ENGINEERING = "prompt-engineering"
FINE_TUNED = "fine-tuned"
PROMPT_ENGINEERING_KNOWLEDGE = "prompt-engineering+knowledge"
FINE_TUNED_KNOWLEDGE = "fine-tuned+knowledge"

Kind = Literal["base", "fine-tuned", "endpoint"]


@dataclass
class Contender:
    name: str
    kind: Kind
    system: str | None = None
    shots: list[Example] = field(default_factory=list)
    knowledge: bool = False  # retrieved passages go into the last user turn

    def messages(self, example: Example, context: Sequence[ContextPassage] = ()) -> list[Message]:
        """The conversation for `example`; `context` (the retrieved passages) is used only by a
        knowledge contender, which gets a context section even when nothing was found."""
        history: list[Message] = []
        for shot in self.shots:
            history += [{"role": "user", "content": shot.prompt}, {"role": "assistant", "content": shot.completion}]
        system = "\n\n".join(s for s in (self.system, example.system) if s) or None
        return build_messages(example.prompt, system, [*history, *example.history],
                              list(context) if self.knowledge else None)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "system_prompt": self.system, "few_shot": len(self.shots)}
        if self.knowledge:
            out["knowledge"] = True
        return out


def pick_shots(train: Sequence[Example], k: int, seed: int, exclude: Sequence[Example] = ()) -> list[Example]:
    """k training examples, the same for a given seed; never one whose prompt is being evaluated."""
    held = {p.prompt.strip() for p in exclude}
    pool = [p for p in train if p.prompt.strip() not in held]
    if k <= 0:
        return []
    if len(pool) < k:
        raise SpecialistError(f"--few-shot {k}: the training data has only {len(pool)} usable examples")
    return random.Random(seed).sample(pool, k)


def standard_contenders(system_prompt: str | None, shots: list[Example], fine_tuned: bool) -> list[Contender]:
    contenders = [Contender(ZERO_SHOT, "base"), Contender(PROMPT_ENGINEERING, "base", system_prompt, shots)]
    if fine_tuned:
        contenders.append(Contender(FINE_TUNED, "fine-tuned"))
    return contenders


def knowledge_contenders(system_prompt: str | None, shots: list[Example],
                         training_system_prompt: str | None) -> list[Contender]:
    """prompt-engineering+knowledge and fine-tuned+knowledge (see the module's docstring)."""
    return [Contender(PROMPT_ENGINEERING_KNOWLEDGE, "base", system_prompt, shots, knowledge=True),
            Contender(FINE_TUNED_KNOWLEDGE, "fine-tuned", training_system_prompt, knowledge=True)]


@contextlib.contextmanager
def adapter_enabled(model: Any, enabled: bool) -> Iterator[None]:
    """Run the block with the PEFT adapter on or off (no-op for a model without one). Off, the
    base model also answers over its whole vocabulary: a specialist-sized head is the run's."""
    if enabled or not hasattr(model, "disable_adapter"):
        yield
        return
    with model.disable_adapter(), whole_vocabulary(model):
        yield


# ------------------------------------------------------------------ answers
@dataclass
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency: float  # seconds the caller waited for this answer


def answer_locally(generator: Any, conversations: Sequence[Sequence[Message]], settings: Any,
                   batch_size: int, progress: Any = None) -> list[Reply]:
    """Batched generation; a request's latency is the wall time of the batch it was answered in
    (what a caller of a batching server waits)."""
    replies: list[Reply] = []
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start:start + batch_size]
        t0 = time.perf_counter()
        answers = generator.generate(chunk, settings, batch_size=len(chunk))
        wall = time.perf_counter() - t0
        replies += [Reply(a.text, a.prompt_tokens, a.completion_tokens, a.finish_reason, wall) for a in answers]
        if progress is not None:
            progress(len(chunk))
    return replies


class Endpoint:
    """An OpenAI-compatible chat completions endpoint, asked one request at a time."""

    def __init__(self, url: str, model: str, api_key: str | None = None, name: str | None = None,
                 http_client: Any = None, timeout: float = 120.0) -> None:
        try:
            from openai import OpenAI
        except ImportError as exc:
            raise SpecialistError("--endpoint needs the openai package: pip install openai") from exc
        self.name = name or model
        self.model = model
        self.client = OpenAI(base_url=url, api_key=api_key or "not-needed", http_client=http_client,
                             timeout=timeout, max_retries=1)

    def answer(self, conversations: Sequence[Sequence[Message]], max_new_tokens: int, seed: int,
               count_tokens: Any, progress: Any = None) -> list[Reply]:
        import openai

        replies = []
        for messages in conversations:
            t0 = time.perf_counter()
            try:
                resp = self.client.chat.completions.create(model=self.model, messages=list(messages),
                                                           max_tokens=max_new_tokens, temperature=0, seed=seed)
            except openai.OpenAIError as exc:
                raise SpecialistError(f"endpoint {self.name}: {type(exc).__name__}: {exc}") from exc
            latency = time.perf_counter() - t0
            choice = resp.choices[0]
            text = (choice.message.content or "").strip()
            usage = resp.usage
            # The endpoint's own token counts when it reports them, else the local tokenizer's.
            prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens else count_tokens(messages, None)
            completion_tokens = (usage.completion_tokens if usage and usage.completion_tokens is not None
                                 else count_tokens(None, text))
            replies.append(Reply(text, int(prompt_tokens), int(completion_tokens), choice.finish_reason or "stop",
                                 latency))
            if progress is not None:
                progress(1)
        return replies
