"""Invariants checked on generated inputs (hypothesis): the streaming decoder, the data split
and tokenized training examples."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from specialist.inference.stops import RowDecoder

# ---------------------------------------------------------------- streaming decoder
# A tokenizer whose tokens are arbitrary pieces of text: stop strings can then start, end or
# sit inside any token, which is what the decoder has to handle.
PIECES = st.text(alphabet="ab <>|#\n", min_size=1, max_size=4)


class PieceTokenizer:
    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(self.vocab[i] for i in ids)


@settings(max_examples=300, deadline=None)
@given(vocab=st.lists(PIECES, min_size=1, max_size=12), ids=st.lists(st.integers(0, 11), min_size=1, max_size=30),
       stops=st.lists(st.text(alphabet="ab <>|#\n", min_size=1, max_size=4), max_size=3))
# whitespace streamed before the answer's end, then dropped: at the length limit, before a stop
@example(vocab=["<", " "], ids=[0, 1, 1], stops=[])
@example(vocab=["<", " a", "b"], ids=[0, 1, 2], stops=["ab"])
def test_streamed_pieces_never_show_a_stop_string_and_join_to_the_answer(vocab, ids, stops):
    ids = [i % len(vocab) for i in ids]
    pieces: list[str] = []
    row = RowDecoder(PieceTokenizer(vocab), eos_ids=[], stops=stops, max_new_tokens=len(ids), prompt_tokens=0,
                     on_piece=pieces.append)
    for token in ids:
        row.push(token)
        streamed = "".join(pieces)
        # what went out is never taken back: it is the start of the answer so far
        assert row.text.startswith(streamed)
        assert not any(stop in streamed for stop in stops if stop)
    assert row.done
    assert "".join(pieces) == row.text
    assert not any(stop in row.text for stop in stops if stop)


# ---------------------------------------------------------------- data split
WORDS = st.sampled_from("kawa herbata dostawa zwrot paczka cena sklep ziarno mielenie palarnia kurier "
                        "subskrypcja faktura rabat prezent espresso".split())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=st.lists(st.tuples(st.lists(WORDS, min_size=8, max_size=12), st.integers(1, 3)),
                       min_size=3, max_size=12),
       fraction=st.sampled_from([0.2, 0.3, 0.5]), seed=st.integers(0, 3))
def test_split_never_puts_near_duplicates_on_both_sides(tmp_path_factory, groups, fraction, seed):
    """Each generated group is one prompt and its near copies (case, punctuation, spacing,
    one extra word): a group must land on one side whole."""
    from specialist.data.split import split_dataset
    from specialist.errors import SpecialistError

    variants = [lambda p: p, lambda p: p.upper() + "?", lambda p: "  " + p.replace(" ", "  ") + "!",
                lambda p: p + " proszę"]
    rows, group_of = [], {}
    for g, (words, copies) in enumerate(groups):
        prompt = " ".join(words) + f" numer{g}"  # distinct groups stay distinct
        for c in range(copies):
            text = variants[c % len(variants)](prompt)
            rows.append({"prompt": text, "completion": f"odpowiedź {g}.{c}"})
            group_of[f"odpowiedź {g}.{c}"] = g
    out = tmp_path_factory.mktemp("split")
    data = out / "data.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    try:
        result = split_dataset(data, fraction, out / "split", seed=seed)
    except SpecialistError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:  # clusters too large for the share: a clear refusal is fine
        assert "one side empty" in refusal
        return
    train_groups = {group_of[e.completion] for e in result.train}
    eval_groups = {group_of[e.completion] for e in result.eval}
    assert not train_groups & eval_groups
    assert len(result.train) + len(result.eval) == len(rows)


# ---------------------------------------------------------------- tokenized examples
@pytest.fixture(scope="module")
def chat_tokenizer(chat_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(chat_tokenizer_dir)


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=80)


@settings(max_examples=150, deadline=None)
@given(prompt=TEXT, completion=TEXT.filter(lambda t: t.strip()), system=st.none() | TEXT,
       max_length=st.integers(2, 160))
def test_tokenized_examples_fit_max_length_and_train_on_the_answer_only(chat_tokenizer, prompt, completion,
                                                                        system, max_length):
    from specialist.data.example import Example
    from specialist.models.template import encode_example
    from specialist.train.dataset import tokenize_example

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    example = Example(messages, completion, "t", 1)
    row = tokenize_example(chat_tokenizer, example, max_length)
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels) <= max_length
    masked = next((i for i, label in enumerate(labels) if label != -100), len(labels))
    assert masked >= 1  # some of the prompt is always kept
    assert all(label == -100 for label in labels[:masked])
    assert labels[masked:] == ids[masked:]  # labels aligned with the tokens they are
    prompt_ids, completion_ids = encode_example(chat_tokenizer, messages, completion)
    trained = labels[masked:]
    assert trained and trained == completion_ids[: len(trained)]  # the answer, from its start
    assert ids[:masked] == prompt_ids[len(prompt_ids) - masked:]  # the prompt's end, next to the answer
    if len(prompt_ids) + len(completion_ids) <= max_length:
        assert ids == prompt_ids + completion_ids
