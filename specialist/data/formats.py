"""File formats → a stream of raw records, each with its source line.

Readers never load a model and never raise on bad records: a record that cannot be parsed
comes out as a RawRecord carrying its located error, so checking goes on through the file.
Only an unreadable file (missing, binary, not UTF-8 at all, a broken Parquet file) raises
SpecialistError (exit 2).

Supported: JSONL, a JSON array, CSV, TSV, Parquet and a dataset saved with
datasets.save_to_disk. UTF-8 with or without a BOM; LF or CRLF line ends."""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialist.data.findings import DataError
from specialist.errors import SpecialistError

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf")
DEFAULT_MAX_RECORD_BYTES = 1 << 20  # 1 MiB: far beyond any training context, small enough to stay fast
_SNIFF_BYTES = 1 << 16


@dataclass
class RawRecord:
    file: str
    line: int
    value: Any = None
    error: DataError | None = None


# ---------------------------------------------------------------- detection
def detect_format(path: Path) -> str:
    """The container format from the path (and, for .json or unknown suffixes, the first byte)."""
    if path.is_dir():
        if any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "hf"
        raise SpecialistError(f"{path}: a folder, but not a dataset saved with datasets.save_to_disk "
                              "(no dataset_info.json or dataset_dict.json)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv",):
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    head = _head(path)
    if head.startswith(b"PAR1"):
        return "parquet"
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    first = body[:1]
    if first == b"[" or body.split(b"\n", 1)[0].strip() == b"{":
        return "json"  # an array, or one pretty-printed object (reported as not an array)
    if first == b"{" or suffix == ".json":
        return "jsonl"
    raise SpecialistError(f"{path}: cannot tell the format from the name or content; "
                          f"name it with --format ({', '.join(FORMATS)})")


def _head(path: Path, size: int = _SNIFF_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise SpecialistError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def check_text_file(path: Path) -> None:
    """Refuse binary files and other encodings up front, with a reason the user can act on."""
    head = _head(path)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SpecialistError(f"{path}: E012 the file is UTF-16 encoded; save it as UTF-8")
    nul = head.find(b"\x00")
    if nul != -1:
        raise SpecialistError(f"{path}: E012 binary data (NUL byte at offset {nul}), not a text dataset")
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError as exc:
        line = head.count(b"\n", 0, exc.start) + 1
        raise SpecialistError(
            f"{path}:{line}: E012 not UTF-8 (byte 0x{head[exc.start]:02x} at offset {exc.start}); "
            "re-save the file as UTF-8 (e.g. iconv -f cp1250 -t utf-8)") from exc


def read_records(path: str | Path, format: str | None = None,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Iterator[RawRecord]:
    """Stream the raw records of a dataset file with their source lines."""
    path = Path(path)
    if not path.exists():
        raise SpecialistError(f"{path}: no such file or folder")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise SpecialistError(f"unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt in ("jsonl", "json", "csv", "tsv"):
        if path.is_dir():
            raise SpecialistError(f"{path}: a folder, expected a {fmt} file")
        check_text_file(path)
    reader = {"jsonl": _read_jsonl, "json": _read_json_array, "csv": _read_csv, "tsv": _read_csv,
              "parquet": _read_parquet, "hf": _read_hf}[fmt]
    kwargs = {"delimiter": "\t"} if fmt == "tsv" else {}
    yield from reader(path, max_record_bytes, **kwargs)


# ---------------------------------------------------------------- JSONL
def _binary_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | None, bool]]:
    """(line number, bytes without the line end or None if over max_bytes, had a line end).
    Over-long lines are skipped in chunks, so a 1 GB line costs no memory."""
    with open(path, "rb") as f:
        number = 0
        while True:
            chunk = f.readline(max_bytes + 1)
            if not chunk:
                return
            number += 1
            if len(chunk) > max_bytes and not chunk.endswith(b"\n"):
                ended = False
                while True:
                    more = f.readline(1 << 20)
                    if not more or more.endswith(b"\n"):
                        ended = bool(more)
                        break
                yield number, None, ended
                continue
            ended = chunk.endswith(b"\n")
            if number == 1 and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[3:]
            yield number, chunk.rstrip(b"\r\n"), ended


def _decode(raw: bytes, file: str, line: int) -> tuple[str | None, DataError | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, DataError("E012", file, line, "",
                               f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    file = str(path)
    for number, raw, ended in _binary_lines(path, max_bytes):
        if raw is None:
            yield RawRecord(file, number,
                            error=DataError("E011", file, number, "", f"record longer than {max_bytes} bytes"))
            continue
        if not raw.strip():
            continue  # blank lines (often a trailing one) carry no record
        text, err = _decode(raw, file, number)
        if err:
            yield RawRecord(file, number, error=err)
            continue
        try:
            value = json.loads(text)
            err = _surrogate_error(value, text, file, number)
            yield RawRecord(file, number, value=value) if err is None else RawRecord(file, number, error=err)
        except json.JSONDecodeError as exc:
            if not ended and _runs_to_end(exc, text):
                yield RawRecord(file, number, error=DataError(
                    "E002", file, number, "", f"the last line stops mid-record ({exc.msg}, column {exc.colno})"))
            else:
                yield RawRecord(file, number,
                                error=DataError("E001", file, number, "", f"{exc.msg} (column {exc.colno})"))
        except RecursionError:
            yield RawRecord(file, number, error=DataError("E001", file, number, "", "JSON nested too deeply"))


def lone_surrogate_field(value: Any, where: str = "") -> str | None:
    """The field (`prompt`, `messages[1].content`, or "" for the record itself) of the first
    string holding a lone surrogate — what a JSON escape such as \\ud800 decodes to. Such a
    string is not text: it cannot be written as UTF-8 or tokenized."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        for key, v in value.items():
            printable = key.encode("utf-8", "backslashreplace").decode("utf-8")  # the name is shown
            name = f"{where}.{printable}" if where else printable
            if printable != key:
                return name
            found = lone_surrogate_field(v, name)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = lone_surrogate_field(v, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _surrogate_error(value: Any, text: str, file: str, line: int) -> DataError | None:
    if "\\u" not in text:  # only an escape can produce one (the bytes themselves are valid UTF-8)
        return None
    where = lone_surrogate_field(value)
    if where is None:
        return None
    return DataError("E012", file, line, where, "a lone surrogate escape (\\ud800–\\udfff without its pair): not text")


def _runs_to_end(exc: json.JSONDecodeError, text: str) -> bool:
    """The parser hit the end of the text: the record was cut off, not mistyped."""
    return exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")


# ---------------------------------------------------------------- JSON array
_WS = re.compile(r"[ \t\r\n]*")


def _read_json_array(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    file = str(path)
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        yield RawRecord(file, line, error=DataError("E012", file, line, "",
                                                    f"not UTF-8 (byte 0x{data[exc.start]:02x}); checking stopped here"))
        return
    del data
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end()
    if pos >= len(text) or text[pos] != "[":
        yield RawRecord(file, 1, error=DataError("E001", file, 1, "", "expected a JSON array of records ('[' …)"))
        return
    line, line_pos = 1, 0  # line number of line_pos, advanced incrementally (never rescans the text)
    indent = None  # indentation of records, used to find the next record after a syntax error

    def line_at(p: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, p)
        line_pos = p
        return line

    pos = _WS.match(text, pos + 1).end()
    if text.startswith("]", pos):
        return
    while True:
        if pos >= len(text):
            yield RawRecord(file, line_at(pos), error=DataError("E002", file, line_at(pos), "",
                                                                "the file ends inside the array (no closing ']')"))
            return
        start_line = line_at(pos)
        if indent is None:
            indent = pos - (text.rfind("\n", 0, pos) + 1)
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if _runs_to_end(exc, text):
                yield RawRecord(file, start_line,
                                error=DataError("E002", file, start_line, "", f"the file ends mid-record ({exc.msg})"))
                return
            err_line = line_at(exc.pos)
            col = exc.pos - text.rfind("\n", 0, exc.pos)
            yield RawRecord(file, err_line, error=DataError("E001", file, err_line, "", f"{exc.msg} (column {col})"))
            nxt = re.compile(r"\n" + r"[ \t]" * indent + r"\{").search(text, exc.pos)
            if nxt is None:
                return
            pos = nxt.start() + 1 + indent
            continue
        except RecursionError:
            yield RawRecord(file, start_line, error=DataError("E001", file, start_line, "", "JSON nested too deeply"))
            return
        if end - pos > max_bytes:
            yield RawRecord(file, start_line,
                            error=DataError("E011", file, start_line, "", f"record longer than {max_bytes} bytes"))
        elif err := _surrogate_error(value, text[pos:end], file, start_line):
            yield RawRecord(file, start_line, error=err)
        else:
            yield RawRecord(file, start_line, value=value)
        pos = _WS.match(text, end).end()
        if pos >= len(text):
            yield RawRecord(file, line_at(pos), error=DataError("E002", file, line_at(pos), "",
                                                                "the file ends inside the array (no closing ']')"))
            return
        if text[pos] == "]":
            return
        if text[pos] != ",":
            err_line = line_at(pos)
            yield RawRecord(file, err_line, error=DataError("E001", file, err_line, "",
                                                            f"expected ',' or ']' after a record, found {text[pos]!r}"))
            return
        pos = _WS.match(text, pos + 1).end()


# ---------------------------------------------------------------- CSV / TSV
def _read_csv(path: Path, max_bytes: int, delimiter: str | None = None) -> Iterator[RawRecord]:
    file = str(path)
    bad_lines: dict[int, DataError] = {}

    def text_lines() -> Iterator[str]:
        for number, raw, ended in _binary_lines(path, max_bytes):
            if raw is None:
                bad_lines[number] = DataError("E011", file, number, "", f"line longer than {max_bytes} bytes")
                yield "\n"
                continue
            text, err = _decode(raw, file, number)
            if err:
                bad_lines[number] = err
                text = raw.decode("utf-8", errors="replace")
            yield text + ("\n" if ended else "")

    if delimiter is None:
        delimiter = ","
        sample = _head(path, 8192).decode("utf-8", errors="replace")
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
        except csv.Error:
            pass
    csv.field_size_limit(max_bytes)
    reader = csv.reader(text_lines(), delimiter=delimiter)
    header: list[str] | None = None
    last_end = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            start = last_end + 1
            last_end = reader.line_num
            yield RawRecord(file, start, error=DataError("E001", file, start, "", f"malformed CSV: {exc}"))
            continue
        start, last_end = last_end + 1, reader.line_num
        bad = [bad_lines.pop(n) for n in range(start, last_end + 1) if n in bad_lines]
        if bad:
            for err in bad:
                yield RawRecord(file, err.line, error=err)
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if header is None:
            header = [h.strip() for h in row]
            columns = set(header)
            if not ({"prompt", "completion"} <= columns or {"instruction", "output"} <= columns):
                yield RawRecord(file, start, error=DataError(
                    "E004", file, start, "header", f"no prompt and completion (or instruction and output) columns "
                                                   f"in the header (columns: {', '.join(header[:8])})"))
                return
            continue
        if len(row) != len(header):
            yield RawRecord(file, start, error=DataError(
                "E001", file, start, "", f"row has {len(row)} cells, the header has {len(header)}"))
            continue
        yield RawRecord(file, start, value=dict(zip(header, row)))


# ---------------------------------------------------------------- Parquet / saved datasets
def _read_parquet(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise SpecialistError(f"{path}: not a readable Parquet file ({exc})") from exc
    batches = (_valid(batch).to_pylist() for batch in pf.iter_batches(batch_size=2048))
    yield from _rows(path, batches, "Parquet data")


def _valid(batch: Any) -> Any:
    batch.validate(full=True)  # offsets and UTF-8 checked before any row is read
    return batch


def _rows(path: Path, batches: Iterator[list[Any]], what: str) -> Iterator[RawRecord]:
    """Records of a columnar file, numbered from 1. Decoding a corrupt file fails in whatever
    way the decoder happens to (UnicodeDecodeError, SystemError, ArrowInvalid …): any of them
    is an unreadable file at that row, not a crash."""
    row = 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:
            raise SpecialistError(f"{path}: row {row + 1}: unreadable {what} ({type(exc).__name__}: {exc})") from exc
        if batch is None:
            return
        for value in batch:
            row += 1
            yield RawRecord(str(path), row, value=value)


def _read_hf(path: Path, max_bytes: int) -> Iterator[RawRecord]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many kinds for a broken folder
        raise SpecialistError(f"{path}: not a loadable saved dataset ({exc})") from exc
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            ds = ds["train"]
        elif len(ds) == 1:
            ds = next(iter(ds.values()))
        else:
            raise SpecialistError(f"{path}: a dataset with splits {', '.join(ds)}; save the split to check on its own")
    try:
        # Arrow files are memory-mapped and read without checks: corrupt offsets would make
        # reading a row jump outside the file (a segmentation fault), so validate them first.
        ds.data.table.validate(full=True)
    except Exception as exc:
        raise SpecialistError(f"{path}: corrupt Arrow data ({type(exc).__name__}: {exc})") from exc
    yield from _rows(path, ([value] for value in ds), "saved dataset")
