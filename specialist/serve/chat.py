"""Interactive chat in the terminal with streamed answers.

With a knowledge base, every new user message retrieves its own passages, which go into that
turn only (models.template.build_messages(context=...), the prompt training used). The history
keeps the plain questions and answers: earlier turns' contexts would pile up, crowd the window
and differ from what the specialist was trained on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from specialist.errors import SpecialistError
from specialist.inference.generator import Generator
from specialist.inference.sampling import GenerationSettings
from specialist.models.template import Message, build_messages

if TYPE_CHECKING:
    from specialist.knowledge.retrieve import Hit
    from specialist.knowledge.runtime import KnowledgeContext


class PromptTooLong(SpecialistError):
    pass


class ChatSession:
    """Multi-turn history, trimmed from the oldest turns so prompt + answer fit the context."""

    def __init__(self, generator: Generator, system: str | None = None, max_context: int | None = None,
                 settings: GenerationSettings | None = None, knowledge: KnowledgeContext | None = None) -> None:
        self.generator = generator
        self.system = system
        self.settings = settings or GenerationSettings()
        if knowledge is not None:
            self.settings = knowledge.generation(self.settings)
        self.max_context = max_context or generator.context_length
        self.knowledge = knowledge
        self.history: list[Message] = []
        self.last_hits: list[Hit] = []  # the passages the last answer was given (/sources)

    def reset(self) -> None:
        self.history = []
        self.last_hits = []

    @property
    def prompt_budget(self) -> int:
        return max(1, self.max_context - self.settings.max_new_tokens)

    def messages_for(self, prompt: str) -> list[Message]:
        """The conversation to send: the system prompt, as much recent history as fits, the
        new prompt (with its retrieved context). Whole user/assistant pairs are dropped, oldest first."""
        return self.prepare(prompt)[0]

    def prepare(self, prompt: str) -> tuple[list[Message], list[Message], list[Hit]]:
        """(messages, the history kept, the retrieved hits); retrieval runs once per message."""
        hits = self.knowledge.retrieve(prompt) if self.knowledge is not None else []
        context = [h.passage for h in hits] if self.knowledge is not None else None
        history = list(self.history)
        while True:
            messages = build_messages(prompt, self.system, history, context)
            size = len(self.generator.prompt_ids(messages))
            if size <= self.prompt_budget:
                return messages, history, hits
            if not history:
                with_context = " with its retrieved context" if context else ""
                raise PromptTooLong(f"the message{with_context} is too long: {size} prompt tokens, the context leaves "
                                    f"room for {self.prompt_budget} (context {self.max_context}, "
                                    f"answer up to {self.settings.max_new_tokens})")
            history = history[2:]

    def ask(self, prompt: str, on_piece: Callable[[str], None]) -> str:
        """Stream the answer to `prompt` through on_piece and remember the turn. An interrupted
        answer (Ctrl-C) is not remembered."""
        messages, history, hits = self.prepare(prompt)
        stream = self.generator.stream(messages, self.settings)
        pieces: list[str] = []
        try:
            for piece in stream:
                pieces.append(piece)
                on_piece(piece)
        except KeyboardInterrupt:
            stream.close()
            raise
        answer = "".join(pieces).strip()
        self.history = [*history, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        self.last_hits = hits
        return answer
