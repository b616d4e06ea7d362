"""Errors: every E0xx code on a malformed file of the corpus, located at file:line:field;
checking goes on after an error and counts the good records; never a traceback or a hang."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from specialist.data.findings import CODES, render_markdown
from specialist.data.validate import read_dataset
from specialist.errors import SpecialistError

CORPUS = Path(__file__).parent / "data_corpus"
OK = json.dumps({"prompt": "Jak długo trwa wysyłka?", "completion": "Paczki wysyłamy w ciągu 24 godzin."},
                ensure_ascii=False)

# file → (records, valid, [(code, line, field)])
EXPECTED = {
    "E001_invalid_json.jsonl": (3, 2, [("E001", 2, "")]),
    "E001_bad_array_item.json": (3, 2, [("E001", 3, "")]),
    "E001_bad_csv.csv": (3, 2, [("E001", 3, "")]),
    "E002_truncated.jsonl": (3, 2, [("E002", 3, "")]),
    "E002_truncated_array.json": (3, 2, [("E002", 4, "")]),
    "E003_not_object.jsonl": (4, 1, [("E003", 2, ""), ("E003", 3, ""), ("E003", 4, "")]),
    "E004_missing_field.jsonl": (3, 1, [("E004", 2, "completion"), ("E004", 3, "")]),
    "E004_csv_no_completion.csv": (1, 0, [("E004", 1, "header")]),
    "E005_empty_field.jsonl": (2, 1, [("E005", 2, "completion")]),
    "E006_whitespace_field.jsonl": (2, 1, [("E006", 2, "prompt")]),
    "E007_wrong_type.jsonl": (5, 1, [("E007", 2, "prompt"), ("E007", 3, "completion"), ("E007", 4, "messages"),
                                     ("E007", 5, "messages[0].content")]),
    "E008_unknown_role.jsonl": (1, 0, [("E008", 1, "messages[0].role"), ("E008", 1, "messages[1].role")]),
    "E009_no_final_answer.jsonl": (1, 0, [("E009", 1, "messages[2].role")]),
    "E010_empty_file.jsonl": (0, 0, [("E010", 1, "")]),
    "E010_blank_lines.jsonl": (0, 0, [("E010", 1, "")]),
    "E012_not_utf8_later.jsonl": (3002, 3001, [("E012", 3001, "")]),
    "E013_misplaced_system.jsonl": (1, 0, [("E013", 1, "messages[1].role")]),
    "E014_no_user_turn.jsonl": (1, 0, [("E014", 1, "messages")]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_errors_are_located(name):
    data = read_dataset(CORPUS / name)
    records, valid, errors = EXPECTED[name]
    assert (data.records, data.valid) == (records, valid)
    assert [(e.code, e.line, e.field) for e in data.errors] == errors
    for e in data.errors:
        assert e.file == str(CORPUS / name) and e.message and "\n" not in e.message


def test_every_error_code_is_covered():
    covered = {code for _, _, errs in EXPECTED.values() for code, _, _ in errs} | {"E011", "E015"}
    assert covered == {c for c in CODES if c.startswith("E")}


def test_a_single_json_object_is_not_a_dataset(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"data": [{"prompt": "a", "completion": "b"}]}, indent=2))
    data = read_dataset(path)
    assert [(e.code, e.line) for e in data.errors] == [("E001", 1)] and "array" in data.errors[0].message


def test_invalid_json_reports_the_column():
    (err,) = read_dataset(CORPUS / "E001_invalid_json.jsonl").errors
    assert "column 35" in err.message


def test_record_over_the_size_cap_is_skipped_without_reading_it_whole(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(OK + "\n")
        f.write('{"prompt": "' + "x" * 5_000_000 + '", "completion": "y"}\n')
        f.write(OK + "\n")
    data = read_dataset(path, max_record_bytes=1 << 20)
    assert (data.records, data.valid) == (3, 2)
    assert [(e.code, e.line) for e in data.errors] == [("E011", 2)]


def test_record_over_the_size_cap_in_a_json_array(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + OK + ",\n" + json.dumps({"prompt": "x" * 5000, "completion": "y"}) + "]")
    data = read_dataset(path, max_record_bytes=1000)
    assert [(e.code, e.line) for e in data.errors] == [("E011", 2)] and data.valid == 1


def test_huge_single_line_without_newline_does_not_hang(tmp_path):
    path = tmp_path / "one-line.jsonl"
    path.write_bytes(b'{"prompt": "' + b"a" * 50_000_000)
    start = time.perf_counter()
    data = read_dataset(path)
    assert time.perf_counter() - start < 10
    assert [e.code for e in data.errors] == ["E011"]


def test_error_cap_stops_checking(tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_text("not json at all\n" * 50 + OK + "\n")
    data = read_dataset(path, max_errors=10)
    assert [e.code for e in data.errors] == ["E001"] * 10 + ["E015"]
    assert data.stopped_early and data.records == 10


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "nested.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n" + OK + "\n")
    data = read_dataset(path)
    assert [e.code for e in data.errors] == ["E001"] and data.valid == 1


@pytest.mark.parametrize(("content", "needle"), [
    (os.urandom(4096) + b"\x00" * 16, "binary"),
    ("prompt,completion\n\"żółw\",\"ok\"\n".encode("utf-16"), "UTF-16"),
    ('{"prompt": "Zażółć", "completion": "gęślą"}\n'.encode("cp1250"), "not UTF-8"),
])
def test_unreadable_files_are_exit_2(tmp_path, content, needle):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(SpecialistError) as info:
        read_dataset(path)
    assert info.value.exit_code == 2 and needle in str(info.value)


def test_binary_file_without_a_known_suffix(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(SpecialistError) as info:
        read_dataset(path)
    assert info.value.exit_code == 2 and "format" in str(info.value)


def test_broken_parquet_is_exit_2(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(SpecialistError) as info:
        read_dataset(path)
    assert info.value.exit_code == 2


def test_parquet_rows_with_wrong_types(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", None, "c"], "completion": ["A", "B", ""]}), tmp_path / "d.parquet")
    data = read_dataset(tmp_path / "d.parquet")
    assert [(e.code, e.line, e.field) for e in data.errors] == [("E007", 2, "prompt"), ("E005", 3, "completion")]


def test_docs_table_is_in_sync_with_the_codes():
    docs = Path(__file__).parent.parent / "docs" / "data-checks.md"
    assert docs.read_text(encoding="utf-8") == render_markdown(), \
        "regenerate: python -m specialist.data.findings > docs/data-checks.md"
    for code in CODES.values():
        assert code.fix and code.title
