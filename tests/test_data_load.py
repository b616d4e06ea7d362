"""Loading: every format maps to the canonical Example; load_examples refuses data with errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specialist.data import Example, load_examples
from specialist.errors import SpecialistError

CORPUS = Path(__file__).parent / "data_corpus"


@pytest.mark.parametrize("name", ["good_bom_crlf.jsonl", "good_array.json", "good.csv", "good.tsv"])
def test_prompt_completion_formats_load_to_the_same_shape(name):
    examples = load_examples(CORPUS / name)
    assert len(examples) == 2
    first = examples[0]
    assert isinstance(first, Example)
    assert first.messages == [{"role": "user", "content": "Jak długo trwa wysyłka?"}]
    assert first.completion.startswith("Paczki wysyłamy") or first.completion.startswith("24 godziny")
    assert first.file.endswith(name) and first.line >= 1


def test_bom_and_crlf_do_not_leak_into_text():
    examples = load_examples(CORPUS / "good_bom_crlf.jsonl")
    assert [e.line for e in examples] == [1, 2]
    assert not examples[0].prompt.startswith("\ufeff")
    assert not examples[1].completion.endswith("\r")


def test_csv_keeps_multiline_cells_and_start_lines():
    examples = load_examples(CORPUS / "good.csv")
    assert examples[0].completion == "Paczki wysyłamy\nw 24 godziny."  # CRLF normalised
    assert [e.line for e in examples] == [2, 4]


def test_chat_records_split_into_context_and_answer():
    first, second = load_examples(CORPUS / "good_chat.jsonl")
    assert first.system == "Jesteś baristą." and first.prompt == "Co polecasz do dripa?"
    assert first.completion == "Etiopię!"
    assert second.system is None and second.history == [{"role": "user", "content": "Cześć"},
                                                        {"role": "assistant", "content": "Hej!"}]
    assert second.conversation[-1] == {"role": "assistant", "content": "Tak, w trzech smakach."}


def test_alpaca_joins_instruction_and_input():
    first, second = load_examples(CORPUS / "good_alpaca.json")
    assert first.prompt == "Classify the document.\n\nThis lease is made between…" and first.completion == "lease"
    assert second.prompt == "Say hello." and first.schema == "alpaca"


def test_parquet_and_saved_dataset(tmp_path):
    import datasets

    rows = {"prompt": ["a?", "b?"], "completion": ["A.", "B."], "label": ["x", "y"]}
    ds = datasets.Dataset.from_dict(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "d.parquet", tmp_path / "saved"):
        examples = load_examples(path)
        assert [(e.prompt, e.completion, e.line, e.meta["label"]) for e in examples] == [("a?", "A.", 1, "x"),
                                                                                         ("b?", "B.", 2, "y")]


def test_load_examples_raises_exit_1_with_located_errors():
    with pytest.raises(SpecialistError) as info:
        load_examples(CORPUS / "E005_empty_field.jsonl")
    assert info.value.exit_code == 1
    assert "E005_empty_field.jsonl:2:completion: E005" in str(info.value)


def test_unreadable_input_is_exit_2(tmp_path):
    with pytest.raises(SpecialistError) as info:
        load_examples(CORPUS / "E012_cp1250.jsonl")
    assert info.value.exit_code == 2 and "UTF-8" in str(info.value)
    with pytest.raises(SpecialistError) as info:
        load_examples(tmp_path / "missing.jsonl")
    assert info.value.exit_code == 2


def test_format_can_be_named(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    assert load_examples(path, format="jsonl")[0].completion == "b"
    with pytest.raises(SpecialistError):
        load_examples(path, format="yaml")
