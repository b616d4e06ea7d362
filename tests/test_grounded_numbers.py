"""Grounded numbers: with a knowledge base, an answer states only numbers its prompt holds."""

from __future__ import annotations

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specialist.inference.numbers import NUMBER, NumberGuard, NumberVocab, number_forms, prompt_numbers

# a vocabulary of pieces as tokenizers have them: single digits (Gemma, Llama 2), a multi-digit
# token and one glued to a space (Llama 3), bare separators, words, punctuation
PIECES = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "14", " 20", ",", ".", ":", "-", " ", " zł", " dni",
          "V", " kawa", "!", " od", "\n", "a"]
VOCAB = NumberVocab({i: p for i, p in enumerate(PIECES) if any(c.isdigit() for c in p) or p in {",", ".", ":"}})


def test_number_forms():
    assert number_forms("14,99") == {"14,99", "14.99"}
    assert number_forms("9:00") >= {"9:00", "9"}
    assert number_forms("14,90") >= {"14,9", "14.9"} and number_forms("1,00") >= {"1"}
    assert prompt_numbers(["Dostawa 14,99 zł, od 150 zł gratis; 9:00-17:00.", "V60"]) >= {
        "14,99", "14.99", "150", "9", "17", "60"}


def _allowed_next(guard: NumberGuard, text: str) -> list[int]:
    rule = guard.constraint(text)
    if rule is None:
        return list(range(len(PIECES)))
    ok, _, others = rule
    return sorted(set(ok) | ({i for i in range(len(PIECES)) if i not in VOCAB.pieces} if others else set()))


def _stated(text: str) -> list[str]:
    """Numbers the text states (not glued to a word: V60 is a name)."""
    return [m.group(0) for m in NUMBER.finditer(text) if not (m.start() and text[m.start() - 1].isalpha())]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(r"[0-9]{1,4}([,.:][0-9]{1,2})?", fullmatch=True), min_size=1, max_size=4),
       st.integers(0, 2**32 - 1))
def test_a_walk_the_guard_allows_states_only_prompt_numbers(numbers, seed):
    """Whatever the model prefers among the tokens the guard leaves, once the answer ends (a
    token that is no part of a number, when the guard allows one) each number in it is one of
    the prompt's, in one of its forms."""
    guard = NumberGuard(prompt_numbers([" ".join(numbers)]), VOCAB)
    rng = random.Random(seed)
    text = ""
    for _ in range(40):
        text += PIECES[rng.choice(_allowed_next(guard, text))]
    for _ in range(12):  # finish the number in progress, the way the guard allows
        if guard.constraint(text) is None or guard.constraint(text)[2]:
            break
        text += PIECES[rng.choice(guard.constraint(text)[0])]
    text += " koniec"
    allowed = set().union(*(number_forms(n) for n in numbers))
    # a trailing separator is punctuation ("14," then a word): the number is what precedes it
    assert all(n in allowed for n in _stated(text)), text


def test_the_guard_forces_a_prompt_number_and_leaves_names_alone():
    guard = NumberGuard(prompt_numbers(["Dostawa kosztuje 14,99 zł."]), VOCAB)
    digits = {PIECES[i] for i in guard.constraint(" ")[0] if PIECES[i].strip().isdigit()}
    assert digits == {"1", "14"}  # a number may start only as 14,99 does
    ok, _, others = guard.constraint("kosztuje 14")
    assert not others and {PIECES[i] for i in ok} == {",", "."}  # "14" alone is not a prompt number
    ok, _, others = guard.constraint("kosztuje 14,99")
    assert others  # whole: the answer may go on
    ok, _, others = guard.constraint("zaparz w V6")  # V60: a name, not a quantity
    assert others and {PIECES[i] for i in ok} >= set("0123456789") and " 20" not in {PIECES[i] for i in ok}


def test_guard_masks_torch_and_numpy_rows_in_place():
    import numpy as np

    guard = NumberGuard(prompt_numbers(["150 zł"]), VOCAB)
    for scores in (torch.zeros(len(PIECES)), np.zeros(len(PIECES), dtype=np.float32)):
        guard.apply("od 1", scores)  # only "5" continues 150; nothing else may come
        assert [PIECES[i] for i in range(len(PIECES)) if scores[i] > float("-inf")] == ["5"]


@pytest.fixture
def sevens_model(tiny_chat_model):
    """The tiny chat model, made to prefer the token "7" at every step."""
    from specialist.inference.precision import load_for_generation
    from specialist.models.device import generation_path

    loaded = load_for_generation(str(tiny_chat_model), generation_path(frozenset(), requested="fp32"))
    seven = loaded.tokenizer.convert_tokens_to_ids("7")

    def prefer_seven(module, args, output):
        output.logits[..., seven] += 50.0
        return output

    loaded.model.register_forward_hook(prefer_seven)
    return loaded


def test_generation_with_grounded_numbers_keeps_to_the_prompts_numbers(sevens_model):
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator

    generator = TorchGenerator(sevens_model)
    conversations = [[{"role": "user", "content": "Dostawa kosztuje 14,99 zł, od 150 zł gratis. Ile?"}],
                     [{"role": "user", "content": "Ile kosztuje dostawa?"}]]
    free = generator.generate(conversations, GenerationSettings(max_new_tokens=12))
    assert all("777" in a.text for a in free)  # the model's own preference
    grounded = generator.generate(conversations, GenerationSettings(max_new_tokens=12, grounded_numbers=True))
    allowed = [prompt_numbers([json.dumps(c, ensure_ascii=False)]) for c in conversations]
    for answer, numbers in zip(grounded, allowed):
        assert "7" not in answer.text
        stated = _stated(answer.text)
        if answer.finish_reason == "length" and stated and answer.text.rstrip(",.:").endswith(stated[-1]):
            # cut off by the token budget mid-number: what it wrote is the start of a prompt number
            assert any(n.startswith(stated[-1]) for n in numbers), answer.text
            stated = stated[:-1]
        assert all(n in numbers for n in stated), answer.text
    # the same with streaming (the server's and chat's path)
    streamed = generator.stream(conversations[0], GenerationSettings(max_new_tokens=12, grounded_numbers=True))
    assert "".join(streamed) == grounded[0].text


def test_the_llama_cpp_engine_keeps_to_the_same_numbers(sevens_model, monkeypatch, tmp_path):
    """The llama.cpp engine masks the logits it samples from with the same guard: the same
    answers as PyTorch's (its C API stood in for by the same model, tests/test_llama_cpp_engine)."""
    from specialist.inference.sampling import GenerationSettings
    from specialist.inference.torch_engine import TorchGenerator
    from tests.test_llama_cpp_engine import fake_engine

    torch_generator = TorchGenerator(sevens_model)
    _, engine = fake_engine(monkeypatch, torch_generator, tmp_path, max_batch=2)
    conversations = [[{"role": "user", "content": "Dostawa kosztuje 14,99 zł, od 150 zł gratis. Ile?"}]]
    for grounded in (False, True):
        settings = GenerationSettings(max_new_tokens=12, grounded_numbers=grounded)
        got = engine.generate(conversations, settings)[0].text
        assert got == torch_generator.generate(conversations, settings)[0].text
        assert ("7" in got) is not grounded
