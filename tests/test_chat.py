"""`specialist chat`: streamed multi-turn chat, history trimmed to the context, /reset, /exit."""

from __future__ import annotations

import pytest

from specialist.inference.generator import Generator
from specialist.inference.precision import load_for_generation
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model
from specialist.models.template import build_messages
from specialist.serve.chat import ChatSession, PromptTooLong

SETTINGS = GenerationSettings(max_new_tokens=6)


def bot_lines(stdout: str) -> list[str]:
    return [part.split("\n", 1)[0] for part in stdout.split("bot> ")[1:]]


@pytest.fixture(scope="module")
def generator(lively_chat_model) -> Generator:
    return TorchGenerator(load_model(str(lively_chat_model), dtype="float32"))


def test_session_keeps_history_and_streams(generator):
    session = ChatSession(generator, "Be nice.", 1024, SETTINGS)
    pieces: list[str] = []
    first = session.ask("Hello", pieces.append)
    assert len(pieces) >= 1 and "".join(pieces).strip() == first
    assert first == generator.generate([build_messages("Hello", "Be nice.")], SETTINGS)[0].text
    second = session.ask("And then?", lambda p: None)
    history = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first}]
    assert second == generator.generate([build_messages("And then?", "Be nice.", history)], SETTINGS)[0].text
    assert session.history == [*history, {"role": "user", "content": "And then?"},
                               {"role": "assistant", "content": second}]
    session.reset()
    assert session.messages_for("x") == build_messages("x", "Be nice.")


def test_history_is_trimmed_oldest_first_to_fit_the_context(generator):
    session = ChatSession(generator, "System words.", 120, SETTINGS)
    for i in range(12):
        session.ask(f"Turn number {i} with a few extra words to fill the context", lambda p: None)
        messages = session.messages_for("next")
        assert len(generator.prompt_ids(messages)) <= 120 - SETTINGS.max_new_tokens
        assert messages[0]["role"] == "system"
    kept_users = [m["content"] for m in messages if m["role"] == "user"]
    assert "Turn number 0 with a few extra words to fill the context" not in kept_users
    assert kept_users[-2] == "Turn number 11 with a few extra words to fill the context"
    with pytest.raises(PromptTooLong):
        session.messages_for("long " * 200)


def test_cli_chat_with_piped_stdin(lively_chat_model, generator, tmp_path, run_cli):
    system = tmp_path / "system.txt"
    system.write_text("Be nice.\n", encoding="utf-8")
    proc = run_cli("chat", "--model", lively_chat_model, "--max-new-tokens", "6", "--system-prompt", system,
                   input="Hello\n\nAnd then?\n/reset\nAnd then?\n/exit\nnever asked\n")
    assert proc.exit_code == 0, proc.stderr
    assert "history cleared" in proc.stderr
    answers = bot_lines(proc.stdout)
    assert len(answers) == 3  # the empty line is skipped, nothing is read after /exit
    # the CLI runs this CPU's generation path (int8 weights, bf16 or fp32); compare on the same path
    gen = TorchGenerator(load_for_generation(str(lively_chat_model)))
    first = gen.generate([build_messages("Hello", "Be nice.")], SETTINGS)[0].text
    with_history = gen.generate([build_messages("And then?", "Be nice.", [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": first}])], SETTINGS)[0].text
    fresh = gen.generate([build_messages("And then?", "Be nice.")], SETTINGS)[0].text
    assert answers == [first, with_history, fresh]
    assert with_history != fresh  # the history changed the answer, and /reset dropped it


def test_cli_chat_on_a_base_model_and_too_long_message(tiny_base_model, run_cli):
    proc = run_cli("chat", "--model", tiny_base_model, "--max-new-tokens", "6", "--max-context", "64",
                   input="hi\n" + "word " * 300 + "\n")
    assert proc.exit_code == 0, proc.stderr  # EOF ends the session
    assert len(bot_lines(proc.stdout)) == 2
    assert "too long" in proc.stderr and "Traceback" not in proc.stderr
