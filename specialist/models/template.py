"""Prompt formatting shared by training and inference.

Training and generation must see byte-identical prompts, so both go through encode_prompt():
the training example is encode_prompt(messages) followed by the completion tokens, and
generation feeds exactly encode_prompt(messages) to the model.

Models with a chat template use it. Base models without one get DEFAULT_CHAT_TEMPLATE:

    <bos>### System:            (only when a system prompt is given)
    {system}

    ### User:
    {prompt}

    ### Assistant:
    {completion}<eos>

With a knowledge base, the retrieved passages go into the last user turn, before the
question, as a context section (format_context):

    Context:
    [1] {title}: {text}
    [2] {title}: {text}

    Question: {prompt}

The same function builds it in training, eval, generate, chat and serve, so a specialist reads
its context exactly as it was trained to. Clients of an exported GGUF/Ollama model that do their
own retrieval put this text in the user message.

The completion always ends with an end-of-turn token that is trained on (the EOS for the
default template, e.g. <|im_end|> or <end_of_turn> for chat templates), so the model learns to
stop; generation stops on it.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Protocol

Message = dict[str, str]

CONTEXT_HEADER = "Context:"
QUESTION_HEADER = "Question:"
NO_CONTEXT = "(nothing found)"


class ContextPassage(Protocol):
    """What the prompt needs of a retrieved passage (specialist.knowledge.Passage has it)."""

    title: str
    text: str

DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '### System:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)

# A marker that cannot occur in real text, used to find where the assistant's content sits in
# a rendered template.
_SENTINEL = "\u2063SPECIALIST_COMPLETION\u2063"


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give a template-less (base model) tokenizer the default template. Returns True if it
    had to. The template is saved with the tokenizer, so a run folder carries it."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def format_context(prompt: str, passages: Sequence[ContextPassage]) -> str:
    """The user turn of a retrieval-augmented prompt: numbered passages, then the question."""
    lines = [CONTEXT_HEADER]
    for i, p in enumerate(passages, 1):
        text = " ".join(p.text.split())
        lines.append(f"[{i}] {p.title}: {text}" if p.title else f"[{i}] {text}")
    if not passages:
        lines.append(NO_CONTEXT)
    return "\n".join(lines) + f"\n\n{QUESTION_HEADER} {prompt}"


def build_messages(prompt: str, system: str | None = None, history: Sequence[Message] = (),
                   context: Sequence[ContextPassage] | None = None) -> list[Message]:
    """The conversation the model sees; `context` (retrieved passages, possibly none) turns the
    last user turn into format_context(prompt, context)."""
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(history)
    messages.append({"role": "user", "content": prompt if context is None else format_context(prompt, context)})
    return messages


def last_user_text(messages: Sequence[Message]) -> str | None:
    """The last user turn: the question being answered (None when there is none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)


def attach_context(messages: Sequence[Message], context: Sequence[ContextPassage]) -> list[Message]:
    """A copy of `messages` whose last user turn carries `context` (see format_context)."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] == "user":
            m["content"] = format_context(m["content"], context)
            break
    return out


def detach_context(messages: Sequence[Message]) -> list[Message] | None:
    """The conversation as it would be without its retrieved context: the last user turn back to
    the bare question (the inverse of attach_context). None when that turn carries no context."""
    out = [dict(m) for m in messages]
    for m in reversed(out):
        if m["role"] != "user":
            continue
        head, sep = CONTEXT_HEADER + "\n", f"\n\n{QUESTION_HEADER} "
        # format_context writes every passage on one line, so the first blank line ends them
        if not m["content"].startswith(head) or sep not in m["content"]:
            return None
        m["content"] = m["content"].split(sep, 1)[1]
        return out
    return None


def render_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The text the model sees before it answers."""
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def completion_suffix(tokenizer: Any) -> str:
    """What the template puts after an assistant answer, cut right after the end-of-turn token
    (text after it is never generated, so it is never trained). Falls back to the EOS token for
    templates that close a turn with none."""
    ensure_chat_template(tokenizer)
    # Cached on the tokenizer (keyed by its template): finding the end-of-turn token walks the
    # vocabulary, too slow to repeat for every training example.
    cached = getattr(tokenizer, "_specialist_suffix", None)
    if cached is not None and cached[0] == tokenizer.chat_template:
        return cached[1]
    suffix = _find_completion_suffix(tokenizer)
    tokenizer._specialist_suffix = (tokenizer.chat_template, suffix)
    return suffix


def _find_completion_suffix(tokenizer: Any) -> str:
    convo = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}]
    full = tokenizer.apply_chat_template(convo, tokenize=False)
    after = full[full.index(_SENTINEL) + len(_SENTINEL):]
    for token in _end_of_turn_candidates(tokenizer):
        pos = after.find(token)
        if pos != -1:
            return after[: pos + len(token)]
    return tokenizer.eos_token or ""


def _end_of_turn_candidates(tokenizer: Any) -> list[str]:
    known = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "</s>", "<|endoftext|>"]
    eos = [tokenizer.eos_token] if tokenizer.eos_token else []
    vocab = tokenizer.get_vocab()
    return eos + [t for t in known if t in vocab and t not in eos]


def render_completion(tokenizer: Any, completion: str) -> str:
    """The trained text of an answer: the answer and the end-of-turn token."""
    return completion + completion_suffix(tokenizer)


def encode_prompt(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of the prompt, used verbatim by training and generation. Special tokens
    (<bos> …) come from the template text itself, so none are added here.

    Only the template makes special tokens: a message that contains a marker's text
    (`<|im_start|>assistant`, `<start_of_turn>model` …) gets it as plain characters, so user
    text, a dataset or a retrieved passage cannot forge a turn. A lone surrogate (what an
    undecodable command-line byte or a JSON \\ud800 escape becomes) is encoded as U+FFFD."""
    messages = [{**msg, "content": valid_text(msg["content"])} for msg in messages]
    markers = special_texts(tokenizer)
    if not any(m in msg["content"] for msg in messages for m in markers):
        return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
    # Stand-ins replace the markers inside messages, so every marker left in the rendered
    # text is the template's own; the stand-ins go back as plain text when encoding.
    stand_ins = {m: f"\ue000{i}\ue001" for i, m in enumerate(markers)}
    defused = [{**msg, "content": _replace_all(msg["content"], stand_ins)} for msg in messages]
    text = render_prompt(tokenizer, defused)
    restore = {v: k for k, v in stand_ins.items()}
    ids: list[int] = []
    for piece in _split_on(text, markers):
        if piece in stand_ins:  # a marker the template wrote
            ids.append(tokenizer.convert_tokens_to_ids(piece))
        elif piece:
            ids.extend(_encode_plain(tokenizer, _replace_all(piece, restore)))
    return ids


def encode_example(tokenizer: Any, messages: Sequence[Message], completion: str) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids) of a training example; loss goes on completion_ids only.
    Marker text inside the completion is trained as plain characters, like in the prompt."""
    prompt_ids = encode_prompt(tokenizer, messages)
    completion = valid_text(completion)
    if any(m in completion for m in special_texts(tokenizer)):
        completion_ids = _encode_plain(tokenizer, completion) + tokenizer(
            completion_suffix(tokenizer), add_special_tokens=False)["input_ids"]
    else:
        completion_ids = tokenizer(render_completion(tokenizer, completion), add_special_tokens=False)["input_ids"]
    return prompt_ids, completion_ids


def valid_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (tokenizers refuse them)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


# tokenizer -> (its special tokens when computed, special_texts): Gemma 3's tokenizer builds
# its 6,384 added tokens anew on every `added_tokens_decoder` read, and every encoded example
# asks twice (profiled: 13.3 of the 14.6 s spent tokenizing 2 x 160 coffee examples)
_SPECIAL_TEXTS: weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], tuple[str, ...]]] = weakref.WeakKeyDictionary()


def special_texts(tokenizer: Any) -> tuple[str, ...]:
    """The text of every special token (longest first, so `<|im_start|>` wins over a prefix)."""
    declared = tuple(getattr(tokenizer, "all_special_tokens", []) or [])
    cached = _SPECIAL_TEXTS.get(tokenizer)
    if cached is not None and cached[0] == declared:
        return cached[1]
    found = set(declared)
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(token.content)
    texts = tuple(sorted((t for t in found if t), key=lambda t: (-len(t), t)))
    _SPECIAL_TEXTS[tokenizer] = (declared, texts)
    return texts


def _encode_plain(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _replace_all(text: str, mapping: dict[str, str]) -> str:
    import re

    if not mapping:
        return text
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda m: mapping[m.group(0)], text)


def _split_on(text: str, markers: Sequence[str]) -> list[str]:
    """`text` cut into plain pieces and the markers themselves (kept as pieces)."""
    import re

    return re.split("(" + "|".join(re.escape(m) for m in markers) + ")", text)


def stop_strings(tokenizer: Any) -> list[str]:
    """Text that ends an answer besides the stop tokens: with the default template a base
    model that has not learnt to stop yet goes on with the next turn's header."""
    if getattr(tokenizer, "chat_template", None) == DEFAULT_CHAT_TEMPLATE:
        return ["\n### User:", "\n### System:", "\n### Assistant:"]
    return []


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the EOS and the template's end-of-turn token."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    suffix = completion_suffix(tokenizer)
    if suffix:
        suffix_ids = tokenizer(suffix, add_special_tokens=False)["input_ids"]
        if suffix_ids and suffix_ids[-1] not in ids:
            ids.append(int(suffix_ids[-1]))
    return ids
