"""Interactive chat in the terminal with streamed answers."""

from __future__ import annotations

from typing import Callable

from specialist.errors import SpecialistError
from specialist.models.template import Message, build_messages
from specialist.serve.generation import GenerationSettings, Generator


class PromptTooLong(SpecialistError):
    pass


class ChatSession:
    """Multi-turn history, trimmed from the oldest turns so prompt + answer fit the context."""

    def __init__(self, generator: Generator, system: str | None = None, max_context: int | None = None,
                 settings: GenerationSettings | None = None) -> None:
        self.generator = generator
        self.system = system
        self.settings = settings or GenerationSettings()
        self.max_context = max_context or generator.context_length
        self.history: list[Message] = []

    def reset(self) -> None:
        self.history = []

    @property
    def prompt_budget(self) -> int:
        return max(1, self.max_context - self.settings.max_new_tokens)

    def messages_for(self, prompt: str) -> list[Message]:
        """The conversation to send: the system prompt, as much recent history as fits, the
        new prompt. Whole user/assistant pairs are dropped, oldest first."""
        history = list(self.history)
        while True:
            messages = build_messages(prompt, self.system, history)
            size = len(self.generator.prompt_ids(messages))
            if size <= self.prompt_budget:
                return messages
            if not history:
                raise PromptTooLong(f"the message is too long: {size} prompt tokens, the context leaves room "
                                    f"for {self.prompt_budget} (context {self.max_context}, "
                                    f"answer up to {self.settings.max_new_tokens})")
            history = history[2:]

    def ask(self, prompt: str, on_piece: Callable[[str], None]) -> str:
        """Stream the answer to `prompt` through on_piece and remember the turn. An interrupted
        answer (Ctrl-C) is not remembered."""
        messages = self.messages_for(prompt)
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
        self.history = [m for m in messages if m["role"] != "system"]
        self.history.append({"role": "assistant", "content": answer})
        return answer
