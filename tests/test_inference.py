"""The decoding core's shared parts: the Generator interface, stop handling, left padding and
the CPU count, without a model (the engines' answers are tested in test_serve.py and
test_llama_cpp_engine.py)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from specialist.inference.batching import left_pad
from specialist.inference.generator import Generator, finish_rows
from specialist.inference.sampling import GenerationSettings
from specialist.inference.stops import RowDecoder
from specialist.models import device

EOS = 0


class CharTokenizer:
    """Token i is chr(i); 0 is the end-of-turn token and decodes to nothing."""

    pad_token_id = None
    eos_token_id = EOS

    def decode(self, tokens, skip_special_tokens=True):
        return "".join(chr(t) for t in tokens if t != EOS)


def row(stops, max_new_tokens=1000, pieces=None):
    return RowDecoder(CharTokenizer(), [EOS], stops, max_new_tokens, prompt_tokens=3,
                      on_piece=None if pieces is None else pieces.append)


def test_an_engine_must_implement_run_batch(monkeypatch):
    monkeypatch.setattr("specialist.inference.generator.stop_token_ids", lambda tok: [EOS])
    monkeypatch.setattr("specialist.inference.generator.stop_strings", lambda tok: ["<end>"])

    class NoDecoding(Generator):
        pass

    with pytest.raises(TypeError, match="run_batch"):
        NoDecoding(CharTokenizer(), 64)

    class Echo(Generator):
        def run_batch(self, prompts, rows, settings):
            for prompt, r in zip(prompts, rows):
                for token in prompt:
                    r.push(token)
            return finish_rows(rows, 0.0)

    echo = Echo(CharTokenizer(), 64)
    assert (echo.context_length, echo.eos_ids, echo.pad_id) == (64, [EOS], EOS)  # set by Generator.__init__
    r = echo.row_decoder(2, GenerationSettings(stop=["!"]))
    assert r.stops == ["!", "<end>"]
    answer = echo.run_batch([[ord(c) for c in "hej<end>x"]], [r], GenerationSettings())[0]
    assert (answer.text, answer.finish_reason) == ("hej", "stop")
    open_row = echo.row_decoder(1, GenerationSettings())
    answer = echo.run_batch([[ord("a")]], [open_row], GenerationSettings())[0]
    assert (answer.text, answer.finish_reason) == ("a", "length")  # an engine that stops early: "length"


def test_finish_hands_out_the_held_back_text():
    pieces: list[str] = []
    r = row(["abc"], pieces=pieces)
    for c in "xab":
        r.push(ord(c))
    assert "".join(pieces) == "x"  # "ab" may still become the stop string
    r.finish("length")
    assert (r.done, r.finish_reason, "".join(pieces), r.text) == (True, "length", "xab", "xab")


ALPHABET = "ab<> "


@given(text=st.text(ALPHABET, max_size=40), stops=st.lists(st.text(ALPHABET, min_size=1, max_size=4), max_size=3),
       budget=st.integers(1, 50))
def test_the_stream_never_shows_a_stop_string_and_adds_up_to_the_answer(text, stops, budget):
    pieces: list[str] = []
    r = row(stops, budget, pieces)
    for c in text:
        r.push(ord(c))
        if r.done:
            break
        # what went out can never be taken back: it is a prefix of every later text
        assert r.text.startswith("".join(pieces))
    if not r.done:
        r.finish("length")
    streamed = "".join(pieces)
    decoded = text[: len(r.tokens)].lstrip()
    cut = min((decoded.find(s) for s in stops if s in decoded), default=-1)
    expected = (decoded[:cut] if cut >= 0 else decoded).rstrip()
    assert r.text == expected
    assert not any(s in streamed for s in stops)
    # trailing whitespace streamed before the end stays streamed; the answer drops it
    assert streamed.rstrip() == r.text and streamed.startswith(r.text)


@given(st.lists(st.lists(st.integers(1, 99), min_size=1, max_size=9), min_size=1, max_size=5))
def test_left_pad_right_aligns_every_row(rows):
    ids, mask = left_pad(rows, pad_id=-1)
    width = max(len(r) for r in rows)
    assert ids.shape == mask.shape == (len(rows), width) and ids.dtype == torch.long
    for i, r in enumerate(rows):
        assert ids[i, width - len(r):].tolist() == r
        assert ids[i, : width - len(r)].tolist() == [-1] * (width - len(r))
        assert mask[i].tolist() == [0] * (width - len(r)) + [1] * len(r)


def test_available_cpus_is_this_process_share(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert device.available_cpus() == 3

    def unsupported(pid):
        raise OSError("no affinity here")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert device.available_cpus() == 7


def test_training_and_llama_cpp_count_cpus_with_the_same_helper(monkeypatch):
    from specialist.inference import llama_cpp_engine
    from specialist.train import setup

    assert setup.available_cpus is device.available_cpus is llama_cpp_engine.available_cpus
    monkeypatch.setattr(setup, "available_cpus", lambda: 1)
    assert setup.physical_cores() == 1
