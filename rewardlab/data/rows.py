"""Data files → rows, each with its origin (``file:line``), under one set of rules that every reader shares.

Formats: ``.jsonl`` (one JSON object a line), ``.json`` (a list of objects, or one object a line), ``.csv`` (a header,
then one record a row), ``.parquet``; a name that is not a local file is a hub dataset (:func:`datasets.load_dataset`).

The rules (README, "Data"); anything else is a :class:`DataError` naming the file and the line (``file row N`` for
a ``.json`` list, parquet and hub datasets):

- Text is UTF-8; a byte-order mark at the start is dropped; LF and CRLF line ends both work. A blank line is no row.
  An empty file is an error.
- JSON is strict: ``NaN`` and ``Infinity`` are not JSON, a string holding a lone surrogate (``"\\ud800"``) is not
  text, and a row nests at most :data:`MAX_DEPTH` levels.
- CSV: distinct header names; every record has as many fields as the header (a missing field, or an unquoted comma
  that adds one, would shift the columns); fields of any size. Every value is text (:class:`TextRow`): numbers
  are parsed from it, and an empty field is an absent value.
- ``null`` (a parquet null, a hub dataset's ``None``) is never a value: in a column that must hold something it is
  an error, in an optional one (``margin``, ``source``, ``label``) it is the same as leaving the column out.

The column helpers (:func:`text`, :func:`number`, :func:`messages`, :func:`missing_column`) apply the same rules to
every reader's columns.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

from rewardlab.errors import DataError

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MAX_DEPTH = 100  # nesting levels of a JSON row; messages need 3, and this keeps every later step clear of recursion
PARQUET_BATCH = 1024  # rows decoded at a time
_SURROGATE = re.compile("[\ud800-\udfff]")




class TextRow(dict):
    """A row of a format without types (CSV): every value is text, so numbers are parsed from it."""


def iter_rows(source: str, split: str = "train") -> Iterator[tuple[dict, str]]:
    """Yield ``(row, origin)`` from a local file or a hub dataset, under the rules of this module."""
    path = Path(source)
    suffix = path.suffix.lower()
    if path.is_file() or suffix in FILE_SUFFIXES:
        if not path.is_file():
            raise DataError(f"{source}: no such file")
        if suffix not in FILE_SUFFIXES:
            raise DataError(f"{source}: a data file is {', '.join(FILE_SUFFIXES)}; got a '{suffix}' file")
        if path.stat().st_size == 0:
            raise DataError(f"{source}: empty file")
        if suffix == ".csv":
            yield from _csv_rows(path, source)
        elif suffix == ".parquet":
            yield from _parquet_rows(path, source)
        elif suffix == ".json" and _first_byte(path) == b"[":
            yield from _json_list_rows(path, source)
        else:
            yield from _json_line_rows(path, source)
    else:
        yield from _hub_rows(source, split)


def _json_line_rows(path: Path, source: str) -> Iterator[tuple[dict, str]]:
    hint = " (a .json file is a list of objects, or one object a line)" if path.suffix.lower() == ".json" else ""
    for n, line in text_lines(path, source):
        if line.strip():
            yield _json_row(_json(line, source, n, hint), f"{source}:{n}"), f"{source}:{n}"


def _json_list_rows(path: Path, source: str) -> Iterator[tuple[dict, str]]:
    hint = " (a .json file holds one list; for one object a line, use .jsonl)"
    rows = _json(read_text(path, source), source, hint=hint)
    if not isinstance(rows, list):
        raise DataError(f"{source}: expected a JSON list of objects, or one object a line")
    for n, row in enumerate(rows, 1):
        yield _json_row(row, f"{source} row {n}"), f"{source} row {n}"


class _NotJson:
    """What the decoder leaves for a value that is not JSON (NaN, Infinity) or not usable (a number of thousands of
    digits), so that the row check names the row and column."""

    def __init__(self, problem: str):
        self.problem = problem


def _integer(digits: str) -> int | _NotJson:
    if len(digits) > 4000:  # Python refuses to convert more than 4300 digits, with advice meant for programmers
        return _NotJson(f"a number of {len(digits)} digits is too long to be a value")
    return int(digits)


_DECODER = json.JSONDecoder(
    parse_constant=lambda name: _NotJson(f"{name} is not a JSON value (write null, or leave the value out)"),
    parse_int=_integer,
)


def _json(text: str, source: str, line: int | None = None, hint: str = ""):
    """The JSON value of ``text`` (a file, or its ``line``)."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{source}:{line or e.lineno}: malformed JSON ({e.msg} at column {e.colno}){hint}") from None
    except RecursionError:
        raise DataError(f"{source}{f':{line}' if line else ''}: nested deeper than {MAX_DEPTH} levels") from None


def _json_row(row, origin: str) -> dict:
    """``row`` if it is an object whose strings are all text (no lone surrogate, which no tokenizer takes), whose
    values are all JSON, and which nests at most MAX_DEPTH levels."""
    if isinstance(row, _NotJson):
        raise DataError(f"{origin}: {row.problem}")
    if not isinstance(row, dict):
        raise DataError(f"{origin}: expected a JSON object, got {describe(row)}")
    stack = [(row, 0, None)]
    while stack:
        item, depth, column = stack.pop()
        if isinstance(item, _NotJson):
            raise DataError(f"{origin}: {item.problem} (column '{column}')")
        if isinstance(item, str):
            surrogate = _SURROGATE.search(item)
            if surrogate:
                raise DataError(f"{origin}: a lone surrogate ({surrogate[0]!r}) in column '{column}' is not text; a "
                                f"\\uD800-\\uDFFF escape must be half of a pair")
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise DataError(f"{origin}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, value in item.items():
                    where = key if depth == 0 else column
                    stack += [(key, depth + 1, where), (value, depth + 1, where)]
            else:
                stack += [(value, depth + 1, column) for value in item]
    return row


def _csv_rows(path: Path, source: str) -> Iterator[tuple[TextRow, str]]:
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # fields of any size (the default stops at 128 KiB)
    reader = csv.reader(line for _, line in text_lines(path, source))
    header, start = None, 1
    while True:
        try:
            record = next(reader, None)
        except csv.Error as e:
            raise DataError(f"{source}:{reader.line_num}: malformed CSV ({e})") from None
        if record is None:
            return
        where, start = f"{source}:{start}", reader.line_num + 1
        if not record:  # a blank line
            continue
        if header is None:
            duplicates = sorted({name for name in record if record.count(name) > 1})
            if duplicates:
                raise DataError(f"{where}: the header names column '{duplicates[0]}' more than once")
            header = record
        elif len(record) != len(header):
            if len(record) > len(header):
                problem = "a field holding a comma must be in double quotes"
            else:
                problem = f"missing {', '.join(repr(c) for c in header[len(record):])}"
            raise DataError(f"{where}: {len(record)} fields but the header has {len(header)} "
                            f"({', '.join(header)}): {problem}")
        else:
            yield TextRow(zip(header, record)), where


def _parquet_rows(path: Path, source: str) -> Iterator[tuple[dict, str]]:
    # pyarrow directly: datasets would copy the file into its cache first and wrap every failure in
    # DatasetGenerationError, hiding the cause.
    import pyarrow
    import pyarrow.parquet as pq

    n = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
            for row in batch.to_pylist():
                n += 1
                yield row, f"{source} row {n}"
    except (pyarrow.ArrowException, OSError) as e:
        where = f"{source} row {n + 1}" if n else source
        raise DataError(f"{where}: not a readable parquet file ({e})") from None


def _hub_rows(source: str, split: str) -> Iterator[tuple[dict, str]]:
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=split)
    except Exception as e:  # the library's failures (not found, offline, no such split, bad files) are the source's
        raise DataError(f"{source}: cannot load it as a local data file or a hub dataset "
                        f"({type(e).__name__}: {e})") from None
    for n, row in enumerate(dataset, 1):
        yield row, f"{source}[{split}] row {n}"


def text_lines(path: Path, source: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file with its line ends, the byte-order mark dropped; bytes that are not
    UTF-8 are an error naming the line."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            yield n, _decode(raw, source, n)


def read_text(path: Path, source: str) -> str:
    """A whole UTF-8 file, the byte-order mark dropped; bytes that are not UTF-8 are an error naming the line."""
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{source}:{line}: not UTF-8 text (byte {raw[e.start]:#04x} at byte {column} of the line); "
                        f"save the file as UTF-8") from None


def _decode(raw: bytes, source: str, n: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}:{n}: not UTF-8 text (byte {raw[e.start]:#04x} at byte {e.start + 1} of the line); "
                        f"save the file as UTF-8") from None


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()[:1]


# Columns


def describe(value) -> str:
    """A value's JSON type in words, with the value when short: ``a string ('1.5')``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r:.40})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r:.40})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def missing_column(row: dict, column: str, origin: str, expected: str = "") -> DataError:
    """The error for a row without ``column``: what it has, the closest name, and (optionally) what is expected."""
    close = difflib.get_close_matches(column, [str(k) for k in row], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    present = ", ".join(map(str, row)) or "none"
    return DataError(f"{origin}: missing column '{column}'{hint}; columns present: {present}"
                     + (f"; expected: {expected}" if expected else ""))


def text(row: dict, column: str, origin: str, empty: bool = False) -> str:
    """The string in ``column``, which must be there and (unless ``empty``) hold more than whitespace."""
    if column not in row:
        raise missing_column(row, column, origin)
    value = row[column]
    if not isinstance(value, str):
        raise DataError(f"{origin}: column '{column}' must be a string, got {describe(value)}")
    if not empty and not value.strip():
        raise DataError(f"{origin}: column '{column}' is empty")
    return value


def optional_text(row: dict, column: str, origin: str) -> str | None:
    """The string in an optional ``column``; None when it is absent, null or (CSV) empty."""
    value = row.get(column)
    if value is None or (isinstance(row, TextRow) and not value):
        return None
    if not isinstance(value, str):
        raise DataError(f"{origin}: column '{column}' must be a string, got {describe(value)}")
    return value


def number(row: dict, column: str, origin: str, limit: float = math.inf) -> float | None:
    """The finite number in ``column`` (at most ``limit`` in size), None when it is absent or null. JSON, parquet and
    hub datasets must hold a number (not a boolean, not a string); CSV text is parsed, and an empty field is absent."""
    value = row.get(column)
    if isinstance(row, TextRow) and isinstance(value, str):
        if not value.strip():
            return None
        try:
            parsed = float(value)
        except ValueError:
            parsed = math.nan
    elif value is None:
        return None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            parsed = float(value)
        except OverflowError:
            parsed = math.inf
    else:
        quotes = "; JSON numbers are written without quotes" if isinstance(value, str) else ""
        raise DataError(f"{origin}: column '{column}' must be a finite number, got {describe(value)}{quotes}")
    if not (math.isfinite(parsed) and abs(parsed) <= limit):
        within = f" within ±{limit:.3g}" if limit < math.inf else ""
        raise DataError(f"{origin}: column '{column}' must be a finite number{within}, got {value!r:.40}")
    return parsed


def messages(value, column: str, origin: str) -> bool:
    """Whether ``value`` is a conversation: a list of ``{"role": str, "content": str}`` messages. Any other list is
    an error saying which message is wrong; anything that is not a list is not a conversation (False)."""
    if not isinstance(value, list):
        return False
    for i, message in enumerate(value, 1):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            got = (f"role {describe(message.get('role'))}, content {describe(message.get('content'))}"
                   if isinstance(message, dict) else describe(message))
            raise DataError(f"{origin}: column '{column}', message {i}: a message is "
                            f'{{"role": a string, "content": a string}}; got {got}')
    return True
