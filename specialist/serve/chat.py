"""Interactive chat in the terminal with streamed answers."""

from __future__ import annotations

from typing import Callable

from specialist.models.template import Message, build_messages
from specialist.serve.generation import GenerationSettings, Generator


class ChatSession:
    """Multi-turn history, trimmed from the oldest turns so the prompt fits the context."""

    def __init__(self, generator: Generator, system: str | None = None, max_context: int = 2048,
                 settings: GenerationSettings | None = None) -> None:
        self.generator = generator
        self.system = system
        self.settings = settings or GenerationSettings()
        self.max_context = max_context
        self.history: list[Message] = []

    def reset(self) -> None:
        self.history = []

    def messages_for(self, prompt: str) -> list[Message]:
        history = list(self.history)
        budget = self.max_context - self.settings.max_new_tokens
        while True:
            messages = build_messages(prompt, self.system, history)
            if len(self.generator.prompt_ids(messages)) <= budget or not history:
                return messages
            history = history[2:]  # drop the oldest user/assistant pair

    def ask(self, prompt: str, on_piece: Callable[[str], None]) -> str:
        messages = self.messages_for(prompt)
        answer = ""
        for piece in self.generator.stream(messages, self.settings):
            answer += piece
            on_piece(piece)
        self.history = messages[1:] if self.system else messages
        self.history = [m for m in self.history if m["role"] != "system"]
        self.history.append({"role": "assistant", "content": answer.strip()})
        return answer
