"""Log-probabilities from the inference layer, checked against a direct forward pass of the
tiny model (log-softmax of its logits), alone and in left-padded batches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specialist.inference.logprobs import token_bytes, token_text
from specialist.inference.sampling import GenerationSettings
from specialist.inference.torch_engine import TorchGenerator
from specialist.models.resolve import load_model

ATOL = 1e-4  # float32 model: a padded batch and a single row differ only in summation order


@pytest.fixture(scope="module")
def generator(lively_chat_model) -> TorchGenerator:
    return TorchGenerator(load_model(str(lively_chat_model), dtype="float32"))


def direct(generator: TorchGenerator, ids: list[int]) -> torch.Tensor:
    """log_softmax of the model's logits for one unpadded row: (len(ids), vocab)."""
    with torch.inference_mode():
        logits = generator.model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def prompts_of(generator: TorchGenerator, texts: list[str]) -> list[list[int]]:
    return [generator.tokenizer(t)["input_ids"] for t in texts]


def test_prompt_logprobs_of_a_padded_batch_equal_each_row_alone(generator):
    prompts = prompts_of(generator, ["Hi", "The quick brown fox jumps over", "Zażółć gęślą jaźń, proszę"])
    assert len({len(p) for p in prompts}) == 3  # the batch really is padded
    batch = generator.prompt_logprobs(prompts, top=3)
    for ids, scored in zip(prompts, batch):
        ref = direct(generator, ids)
        assert scored[0] is None and len(scored) == len(ids)
        for pos in range(1, len(ids)):
            lp = scored[pos]
            assert lp.token == ids[pos]
            assert lp.logprob == pytest.approx(ref[pos - 1, ids[pos]].item(), abs=ATOL)
            top = ref[pos - 1].topk(3)
            assert [t for t, _ in lp.top] == top.indices.tolist()
            assert [v for _, v in lp.top] == pytest.approx(top.values.tolist(), abs=ATOL)


@pytest.mark.parametrize("temperature", [0.0, 1.7])
def test_completion_logprobs_are_the_raw_distribution_the_tokens_came_from(generator, temperature):
    """Greedy or sampled, in a batch of different lengths: each answer token's logprob is the
    log-softmax of the raw logits before it (temperature does not change it), end-of-turn included."""
    prompts = prompts_of(generator, ["Tell me", "A much longer prompt about coffee and tea", "x"])
    settings = GenerationSettings(max_new_tokens=6, temperature=temperature, seed=3 if temperature else None)
    rows = [generator.row_decoder(len(p), settings, chat=False, logprobs=2) for p in prompts]
    answers = generator.run_batch(prompts, rows, settings)
    for ids, answer in zip(prompts, answers):
        scores = answer.logprobs
        assert len(scores) == answer.completion_tokens > 0
        tokens = [s.token for s in scores]
        ref = direct(generator, ids + tokens)
        for k, s in enumerate(scores):
            at = len(ids) - 1 + k
            assert s.logprob == pytest.approx(ref[at, s.token].item(), abs=ATOL)
            assert len(s.top) == 2 and s.top[0][1] >= s.top[1][1]
            assert s.top[0][1] == pytest.approx(ref[at].max().item(), abs=ATOL)
            if temperature == 0:
                assert s.top[0][0] == s.token  # greedy: the token is the most likely one
        assert answer.prompt_logprobs is None  # not asked for


def test_only_rows_that_ask_are_scored_and_zero_tokens_scores_the_prompt_only(generator):
    prompts = prompts_of(generator, ["Score me please", "Answer me"])
    settings = GenerationSettings(max_new_tokens=3)
    rows = [
        generator.row_decoder(
            len(prompts[0]), GenerationSettings(max_new_tokens=0), chat=False, logprobs=0, prompt_logprobs=0
        ),
        generator.row_decoder(len(prompts[1]), settings, chat=False),
    ]
    scored, plain = generator.run_batch(prompts, rows, settings)
    assert scored.completion_tokens == 0 and scored.text == "" and scored.logprobs == []
    assert scored.finish_reason == "length"
    ref = direct(generator, prompts[0])
    assert [s.logprob for s in scored.prompt_logprobs[1:]] == pytest.approx(
        [ref[i, t].item() for i, t in enumerate(prompts[0][1:])], abs=ATOL
    )
    assert all(s.top == () for s in scored.prompt_logprobs[1:])
    assert plain.logprobs is None and plain.prompt_logprobs is None and plain.completion_tokens > 0
    # the same prompt answered without scoring: scoring changes no answer
    alone = generator.run_batch([prompts[1]], [generator.row_decoder(len(prompts[1]), settings, chat=False)], settings)[
        0
    ]
    assert alone.text == plain.text


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(0, 2000), min_size=1, max_size=10), min_size=1, max_size=4))
def test_property_batched_prompt_scoring_equals_scoring_each_prompt_alone(generator, prompts):
    batch = generator.prompt_logprobs(prompts, top=1)
    for ids, scored in zip(prompts, batch):
        alone = generator.prompt_logprobs([ids], top=1)[0]
        assert [s and s.token for s in scored] == [s and s.token for s in alone]
        assert [s.logprob for s in scored[1:]] == pytest.approx([s.logprob for s in alone[1:]], abs=ATOL)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=30))
def test_property_token_bytes_spell_the_text(generator, text):
    """OpenAI's `bytes`: a token that holds part of a character still gives its real bytes, so
    the bytes of a text's tokens join into the text's UTF-8."""
    tok = generator.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if tok.decode(ids) != text:  # a text the tokenizer does not round-trip (normalization) says nothing here
        return
    assert b"".join(bytes(token_bytes(tok, i)) for i in ids) == text.encode("utf-8")
    assert all(isinstance(token_text(tok, i), str) for i in ids)


def test_logprobs_are_read_before_the_model_configs_own_processors(generator):
    """A model whose generation config penalizes repetition still reports the raw distribution."""
    config = generator.model.generation_config
    saved = config.repetition_penalty
    config.repetition_penalty = 5.0
    try:
        ids = prompts_of(generator, ["the the the the the"])[0]
        settings = GenerationSettings(max_new_tokens=5)
        answer = generator.run_batch(
            [ids], [generator.row_decoder(len(ids), settings, chat=False, logprobs=1)], settings
        )[0]
    finally:
        config.repetition_penalty = saved
    tokens = [s.token for s in answer.logprobs]
    ref = direct(generator, ids + tokens)
    for k, s in enumerate(answer.logprobs):
        assert s.logprob == pytest.approx(ref[len(ids) - 1 + k, s.token].item(), abs=ATOL)
        assert s.top[0][1] == pytest.approx(ref[len(ids) - 1 + k].max().item(), abs=ATOL)
