"""The canonical example every supported format maps to, and every stage reads: data checks,
training (train.dataset), knowledge augmentation and evaluation (evaluate.examples)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specialist.models.template import Message, build_messages, last_user_text

# Record shapes the loaders understand (the "schema" of one record, whatever file holds it).
SCHEMAS = ("prompt-completion", "chat", "alpaca")


@dataclass
class Example:
    """One training pair: the conversation up to the answer, and the answer.

    `messages` is what the model sees before it answers (an optional system turn, earlier
    turns, the last user turn); `completion` is the trained answer. Training encodes it with
    specialist.models.template.encode_example(tok, example.messages, example.completion).
    `file`/`line` point at the source record (for Parquet and saved datasets: the row number).

    `facts`, `wrong` and `answerable` are what evaluation checks an answer against (the optional record
    fields of examples/coffee/facts.jsonl, checked by evaluate.examples); `answerable: false`
    also marks the dataset's own abstention answers for knowledge augmentation."""

    messages: list[Message]
    completion: str
    file: str
    line: int
    schema: str = "prompt-completion"
    meta: dict[str, str] = field(default_factory=dict)  # string extras: label, topic, category, id…
    source: dict[str, Any] | None = field(default=None, repr=False)  # the record as written
    facts: tuple[str, ...] = ()  # regular expressions a right answer must all contain
    wrong: tuple[str, ...] = ()  # regular expressions a right answer (or an abstention) must not contain
    answerable: bool = True  # False: the right answer offers to check / hand over

    @classmethod
    def from_prompt(cls, prompt: str, completion: str, system: str | None = None, file: str = "<memory>",
                    line: int = 0, **fields: Any) -> Example:
        """An example built in code (few-shot turns, tests) rather than read from a file."""
        return cls(build_messages(prompt, system), completion, file, line, **fields)

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0]["role"] == "system":
            return self.messages[0]["content"]
        return None

    @property
    def prompt(self) -> str:
        """The last user turn: the question this example answers."""
        return last_user_text(self.messages) or ""

    @property
    def history(self) -> list[Message]:
        """Turns between the system prompt and the last user turn (multi-turn chats)."""
        start = 1 if self.system is not None else 0
        return self.messages[start:-1]

    @property
    def user_text(self) -> str:
        """Every user turn, joined: what near-duplicate and contradiction checks compare."""
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")

    @property
    def conversation(self) -> list[Message]:
        return [*self.messages, {"role": "assistant", "content": self.completion}]

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"
