"""Every reader in every format under random and malformed input (hypothesis): a read returns exactly the rows that
were written, or stops with a DataError naming the file and the line (``file row N`` for a .json list and parquet);
never another exception, never fewer rows than were written without saying so.

Readers: preference pairs, rankings, STS pairs, SimCSE sentences and sentence pairs, image captions, and `rewardlab
score`'s input rows. Formats: .jsonl, .json, .csv, .parquet, each also with a byte-order mark and CRLF line ends.
"""

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardlab.data.groups import read_groups
from rewardlab.data.images import read_image_captions
from rewardlab.data.pairs import FLOAT32_MAX, read_pairs
from rewardlab.data.rows import iter_rows
from rewardlab.data.sentences import read_sentence_pairs, read_sentences
from rewardlab.data.sts import read_sts
from rewardlab.errors import DataError
from rewardlab.inference.files import row_sequences as _row_sequences

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# One test per (format, bad value), so every value is tried; hypothesis draws the rows around it.
CATALOG = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = ("jsonl", "json", "csv", "parquet")
BAD_BYTES = "\x01not-utf8\x01"  # a placeholder written as text, then replaced by a byte that is not UTF-8

# Any text: empty, whitespace, newlines, NUL, astral characters (hypothesis leaves out lone surrogates).
text = st.text(max_size=12)
words = text.filter(lambda s: s.strip())
margins = st.floats(-FLOAT32_MAX, FLOAT32_MAX, allow_nan=False)


def csv_safe(value):
    """A CSV written with LF line ends leaves a lone CR unquoted (Python's csv writer does), which no reader can
    tell from a line end: keep CR out of the values of LF files."""
    return value.replace("\r", "") if isinstance(value, str) else value


def write(folder: Path, fmt: str, rows: list, bom: bool = False, crlf: bool = False) -> tuple[str, list[str]]:
    """Write ``rows`` (dicts; in CSV also ("short"|"long", dict) for a record missing or gaining a field) as ``fmt``;
    return the path and the origin the readers give each row. A value holding BAD_BYTES gets an invalid byte."""
    path = folder / f"data.{fmt}"
    end = "\r\n" if crlf else "\n"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return str(path), [f"{path} row {i}" for i in range(1, len(rows) + 1)]
    if fmt == "jsonl":
        body, origins = "".join(json.dumps(r) + end for r in rows), [f"{path}:{i}" for i in range(1, len(rows) + 1)]
    elif fmt == "json":
        body = json.dumps(rows, indent=1).replace("\n", end)
        origins = [f"{path} row {i}" for i in range(1, len(rows) + 1)]
    else:
        plain = [r[1] if isinstance(r, tuple) else r for r in rows]
        columns = list(dict.fromkeys(k for r in plain for k in r))
        buffer, origins = io.StringIO(), []
        writer = csv.writer(buffer, lineterminator=end)
        writer.writerow(columns)
        for row in rows:
            origins.append(f"{path}:{buffer.getvalue().count(chr(10)) + 1}")
            kind, row = row if isinstance(row, tuple) else ("", row)
            fields = [row.get(c, "") for c in columns]
            writer.writerow(fields[:-1] if kind == "short" else fields + ["extra"] if kind == "long" else fields)
        body = buffer.getvalue()
    data = ("\ufeff" if bom else "").encode() + body.encode("utf-8", "surrogatepass")
    path.write_bytes(data.replace(json.dumps(BAD_BYTES)[1:-1].encode(), b"\xff").replace(BAD_BYTES.encode(), b"\xff"))
    return str(path), origins


def raises_at(origin: str, read) -> DataError:
    """``read()`` fails with a DataError at ``origin`` (for a text file's invalid byte: at its line)."""
    with pytest.raises(DataError) as error:
        read()
    message = str(error.value)
    assert message.startswith(origin + ":"), (origin, message)
    return error.value


def never_crashes(path: str, read) -> object | None:
    """``read()`` returns, or fails with a DataError that names ``path``; nothing else escapes."""
    try:
        return read()
    except DataError as e:
        assert str(e).startswith(path), e
        return None


def origin_of(path: str, origin: str, value) -> str:
    """Where the readers put a bad value: its row's origin, or for an invalid byte in a text file its line."""
    if value != BAD_BYTES:
        return origin
    data = Path(path).read_bytes()
    line = data[: data.index(b"\xff")].count(b"\n") + 1
    return f"{path}:{line}"


def with_bad_row(data, fmt: str, rows_strategy, row_strategy, column, value) -> tuple[list, int]:
    """Rows drawn from ``rows_strategy`` with one bad row at a drawn position: a drawn row whose ``column`` holds
    ``value`` (``MISSING``: the column left out; "short" / "long": a CSV record missing or gaining a field)."""
    rows = data.draw(rows_strategy)
    if fmt == "csv":
        rows = [{k: csv_safe(v) for k, v in r.items()} for r in rows]
    bad = dict(data.draw(row_strategy))
    if column in ("short", "long"):
        bad = (column, bad)
    elif value is MISSING:
        del bad[column]
    else:
        bad[column] = value
    k = data.draw(st.integers(0, len(rows)))
    rows.insert(k, bad)
    return rows, k


def nested(depth: int) -> list:
    value = []
    for _ in range(depth):
        value = [value]
    return value


MISSING = object()


def layout(data, fmt: str) -> tuple[bool, bool]:
    """(byte-order mark?, CRLF?) for a text format."""
    return fmt != "parquet" and data.draw(st.booleans()), fmt != "parquet" and data.draw(st.booleans())


# Preference pairs


@st.composite
def pair_rows(draw, fmt: str):
    row = {"prompt": draw(text), "chosen": draw(words), "rejected": draw(words)}
    if draw(st.booleans()):
        row["margin"] = draw(margins)
    if draw(st.booleans()):
        row["source"] = draw(words)
    if fmt == "parquet":  # one type a column: every row has every column
        row.setdefault("margin", None)
        row.setdefault("source", None)
    return row


@SETTINGS
@given(st.data(), st.sampled_from(FORMATS))
def test_pairs_read_back_exactly_in_every_format(data, fmt):
    bom, crlf = layout(data, fmt)
    rows = data.draw(st.lists(pair_rows(fmt), min_size=1, max_size=6))
    if fmt == "csv" and not crlf:
        rows = [{k: csv_safe(v) for k, v in r.items()} for r in rows]
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        distinct = [(r, o) for r, o in zip(rows, origins) if r["chosen"] != r["rejected"]]
        if not distinct:
            raises_at(path, lambda: read_pairs(path))
            return
        pairs, report = read_pairs(path)
    assert report.rows == len(rows) and len(pairs) + len(report.skipped_identical) == len(rows)
    expected = [(r["prompt"], r["chosen"], r["rejected"], float(r.get("margin") or 0.0), r.get("source") or "", o)
                for r, o in distinct]
    assert [(p.prompt, p.chosen, p.rejected, p.margin, p.source, p.origin) for p in pairs] == expected


EMPTY = ["", "  \t"]
BAD_PAIR_VALUES = {
    "jsonl": [(c, v) for c in ("chosen", "rejected")
              for v in [None, 3, 1.5, True, [], {}, ["x"], [{"role": "user"}], [{"role": "user", "content": None}],
                        "a\ud800", BAD_BYTES, MISSING, *EMPTY]]
             + [("margin", v) for v in (True, "1.5", [1], {}, 1e39, -1e39, math.nan, math.inf)]
             + [("prompt", v) for v in (None, 3, True, {}, [], "\udfff")]
             + [("source", v) for v in (3, True, [], {})]
             + [("extra", nested(150)), ("extra\ud800", 1)],
    "csv": [(c, v) for c in ("chosen", "rejected") for v in [*EMPTY, BAD_BYTES, MISSING]]
           + [("margin", v) for v in ("abc", "nan", "inf", "-1e39", "1,5", "true")]
           + [("short", None), ("long", None)],
    "parquet": [(c, v) for c in ("chosen", "rejected") for v in [None, *EMPTY]] + [("prompt", None)]
               + [("margin", v) for v in (math.nan, math.inf, -1e39)],
}
BAD_PAIR_VALUES["json"] = BAD_PAIR_VALUES["jsonl"]


@pytest.mark.parametrize("fmt, column, value", [(f, c, v) for f, bad in BAD_PAIR_VALUES.items() for c, v in bad],
                         ids=lambda x: repr(x)[:20])
@CATALOG
@given(data=st.data())
def test_a_bad_pair_row_is_an_error_at_its_line(fmt, column, value, data):
    bom, crlf = layout(data, fmt)
    rows, k = with_bad_row(data, fmt, st.lists(pair_rows(fmt), max_size=4), pair_rows(fmt), column, value)
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        raises_at(origin_of(path, origins[k], value), lambda: read_pairs(path))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text | st.sampled_from(["\ud800", "a\udfffb"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
pair_columns = st.sampled_from(["prompt", "chosen", "rejected", "margin", "source"]) | text


@SETTINGS
@given(st.lists(st.dictionaries(pair_columns, json_values, max_size=6) | json_values, min_size=1, max_size=5),
       st.sampled_from(["jsonl", "json"]))
def test_random_json_rows_are_pairs_or_an_error(rows, fmt):
    with tempfile.TemporaryDirectory() as folder:
        path, _ = write(Path(folder), fmt, rows)
        result = never_crashes(path, lambda: read_pairs(path))
    if result is not None:
        pairs, report = result
        assert report.rows == len(rows) == len(pairs) + len(report.skipped_identical)
        assert all(isinstance(p.chosen, str) and math.isfinite(p.margin) for p in pairs)


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(FORMATS),
       st.sampled_from([b"", b"\xef\xbb\xbf", b"prompt,chosen,rejected\n", b'{"chosen": "a", "rejected": "b"}\n',
                        b'[{"chosen": "a", "rejected": "b"}', b"PAR1"]))
def test_random_bytes_are_pairs_or_an_error(data, fmt, start):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"data.{fmt}")
        path.write_bytes(start + data)
        result = never_crashes(str(path), lambda: read_pairs(str(path)))
    if result is not None:
        pairs, report = result
        assert report.rows == len(pairs) + len(report.skipped_identical)


@SETTINGS
@given(st.lists(st.lists(text.map(csv_safe), max_size=5), min_size=1, max_size=6))
def test_random_csv_records_are_pairs_or_an_error(records):
    """Any records under a pair header: the pairs are the records, field for field, or it is an error."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "data.csv")
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([["prompt", "chosen", "rejected"], *records])
        path.write_text(buffer.getvalue(), encoding="utf-8")
        result = never_crashes(str(path), lambda: read_pairs(str(path)))
    if result is not None:
        pairs, report = result
        written = [r for r in records if r]  # an empty record is a blank line
        assert report.rows == len(written) and all(len(r) == 3 for r in written)
        assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [tuple(r) for r in written if r[1] != r[2]]


# Rankings (lists: JSON and parquet)


@st.composite
def ranking_rows(draw, fmt: str):
    k = draw(st.integers(2, 4))
    ranks = draw(st.lists(st.integers(1, k), min_size=k, max_size=k).filter(lambda r: len(set(r)) > 1))
    return {"prompt": draw(text), "responses": draw(st.lists(words, min_size=k, max_size=k)), "ranks": ranks}


@SETTINGS
@given(st.data(), st.sampled_from(["jsonl", "json", "parquet"]))
def test_rankings_read_back_exactly(data, fmt):
    bom, crlf = layout(data, fmt)
    rows = data.draw(st.lists(ranking_rows(fmt), min_size=1, max_size=4))
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        groups, _ = read_groups(path)
    assert [(g.prompt, g.responses, g.origin) for g in groups] == [
        (r["prompt"], r["responses"], o) for r, o in zip(rows, origins)]
    for group, row in zip(groups, rows):
        assert all(row["ranks"][i] < row["ranks"][j] for i, j in group.edges)
        assert len(group.edges) == sum(a < b for a in row["ranks"] for b in row["ranks"])


BAD_RANKING_VALUES = {
    "jsonl": [("responses", v) for v in (None, "a b", ["a"], ["a", None], ["a", 3], ["a", ""], ["a", "\ud800"])]
             + [("ranks", v) for v in (None, [1], [1, True], [1, "2"], [1, math.nan], [2, 2], 3)]
             + [("prompt", v) for v in (None, 3)] + [("source", v) for v in (3, [])],
    "parquet": [("ranks", [1, None]), ("ranks", [1, math.nan]), ("ranks", [2, 2]), ("ranks", None),
                ("responses", ["a", None]), ("responses", ["a", "  "]), ("prompt", None)],
}
BAD_RANKING_VALUES["json"] = BAD_RANKING_VALUES["jsonl"]


@pytest.mark.parametrize("fmt, column, value", [(f, c, v) for f, bad in BAD_RANKING_VALUES.items() for c, v in bad],
                         ids=lambda x: repr(x)[:20])
@CATALOG
@given(data=st.data())
def test_a_bad_ranking_row_is_an_error_at_its_line(fmt, column, value, data):
    bom, crlf = layout(data, fmt)
    k = 2  # two responses in every row, so that one parquet column type holds them all
    rows_strategy = st.lists(ranking_rows(fmt).filter(lambda r: len(r["responses"]) == k), max_size=3)
    rows, position = with_bad_row(data, fmt, rows_strategy,
                                  ranking_rows(fmt).filter(lambda r: len(r["responses"]) == k), column, value)
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        raises_at(origins[position], lambda: read_groups(path))


# STS pairs and SimCSE sentences


@st.composite
def sts_rows(draw, fmt: str):
    return {"sentence1": draw(words), "sentence2": draw(words), "score": draw(st.floats(0, 5))}


@SETTINGS
@given(st.data(), st.sampled_from(FORMATS))
def test_sts_pairs_and_sentences_read_back_exactly(data, fmt):
    bom, crlf = layout(data, fmt)
    rows = data.draw(st.lists(sts_rows(fmt), min_size=1, max_size=5))
    if fmt == "csv" and not crlf:
        rows = [{k: csv_safe(v) for k, v in r.items()} for r in rows]
    threshold = data.draw(st.floats(0, 5))
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        pairs = read_sts(path)
        sentences, _ = read_sentences(path, ["sentence1", "sentence2"])
        kept = [(r["sentence1"], r["sentence2"]) for r in rows if r["score"] >= threshold]
        if kept:
            assert read_sentence_pairs(path, ["sentence1", "sentence2"], None, threshold)[0] == kept
        else:
            raises_at(path, lambda: read_sentence_pairs(path, ["sentence1", "sentence2"], None, threshold))
    assert [(p.sentence1, p.sentence2, p.score, p.origin) for p in pairs] == [
        (r["sentence1"], r["sentence2"], r["score"], o) for r, o in zip(rows, origins)]
    assert sentences == [(s,) for s in dict.fromkeys(s for r in rows for s in (r["sentence1"], r["sentence2"]))]


BAD_STS_VALUES = {
    "jsonl": [(c, v) for c in ("sentence1", "sentence2") for v in (None, 3, [], "\ud800", BAD_BYTES, MISSING, *EMPTY)]
             + [("score", v) for v in (None, True, "4.2", [], {}, math.nan, math.inf, MISSING)],
    "csv": [(c, v) for c in ("sentence1", "sentence2") for v in (BAD_BYTES, *EMPTY)]
           + [("score", v) for v in ("", " ", "high", "nan", "inf")] + [("short", None), ("long", None)],
    "parquet": [(c, v) for c in ("sentence1", "sentence2") for v in (None, *EMPTY)]
               + [("score", v) for v in (None, math.nan, -math.inf)],
}
BAD_STS_VALUES["json"] = BAD_STS_VALUES["jsonl"]


@pytest.mark.parametrize("fmt, column, value", [(f, c, v) for f, bad in BAD_STS_VALUES.items() for c, v in bad],
                         ids=lambda x: repr(x)[:20])
@CATALOG
@given(data=st.data())
def test_a_bad_sts_or_sentence_row_is_an_error_at_its_line(fmt, column, value, data):
    bom, crlf = layout(data, fmt)
    rows, k = with_bad_row(data, fmt, st.lists(sts_rows(fmt), max_size=4), sts_rows(fmt), column, value)
    columns = ["sentence1", "sentence2"]
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        origin = origin_of(path, origins[k], value)
        raises_at(origin, lambda: read_sts(path))
        raises_at(origin, lambda: read_sentence_pairs(path, columns, None, 0.0))
        if column != "score":
            raises_at(origin, lambda: read_sentences(path, columns))
            raises_at(origin, lambda: read_sentence_pairs(path, columns, None, None))


# Image captions


@st.composite
def caption_rows(draw, fmt: str):
    row = {"image": "a.png", "caption": draw(words)}
    if fmt == "parquet" or draw(st.booleans()):
        row["label"] = draw(st.none() | words)
    return row


@SETTINGS
@given(st.data(), st.sampled_from(FORMATS))
def test_image_captions_read_back_exactly(data, fmt):
    bom, crlf = layout(data, fmt)
    rows = data.draw(st.lists(caption_rows(fmt), min_size=1, max_size=5))
    if fmt == "csv" and not crlf:
        rows = [{k: csv_safe(v) for k, v in r.items()} for r in rows]
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "a.png").write_bytes(b"")  # read when batched; here only its existence counts
        path, _ = write(Path(folder), fmt, rows, bom, crlf)
        pairs = read_image_captions(path, 8)
    assert [(p.image.name, p.caption, p.label) for p in pairs] == [
        ("a.png", r["caption"].strip(), r.get("label") or None) for r in rows]


BAD_CAPTION_VALUES = {
    "jsonl": [("image", v) for v in (None, 3, "", "missing.png", MISSING)]
             + [("caption", v) for v in (None, 3, ["x"], "\ud800", BAD_BYTES, MISSING, *EMPTY)]
             + [("label", v) for v in (3, True, [])],
    "csv": [("image", v) for v in ("", "missing.png")] + [("caption", v) for v in (BAD_BYTES, *EMPTY)]
           + [("short", None), ("long", None)],
    "parquet": [("image", v) for v in (None, "", "missing.png")] + [("caption", v) for v in (None, *EMPTY)],
}
BAD_CAPTION_VALUES["json"] = BAD_CAPTION_VALUES["jsonl"]


@pytest.mark.parametrize("fmt, column, value", [(f, c, v) for f, bad in BAD_CAPTION_VALUES.items() for c, v in bad],
                         ids=lambda x: repr(x)[:20])
@CATALOG
@given(data=st.data())
def test_a_bad_caption_row_is_an_error_at_its_line(fmt, column, value, data):
    bom, crlf = layout(data, fmt)
    rows, k = with_bad_row(data, fmt, st.lists(caption_rows(fmt), max_size=4), caption_rows(fmt), column, value)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "a.png").write_bytes(b"")
        path, origins = write(Path(folder), fmt, rows, bom, crlf)
        raises_at(origin_of(path, origins[k], value), lambda: read_image_captions(path, 8))


# `rewardlab score` input rows


@pytest.fixture(scope="module")
def scorer():
    from rewardlab.config import ModelSettings
    from rewardlab.inference.scorer import RewardModel
    from rewardlab.models.loading import load_backbone

    b = load_backbone(ModelSettings(name="tiny-llama"))
    return RewardModel.of(b.model, b.tokenizer, b.encoder, max_length=64)


chat = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": text}),
                min_size=1, max_size=3)
score_columns = st.sampled_from(["prompt", "response", "responses", "messages", "text"]) | text


@SETTINGS
@given(rows=st.lists(st.dictionaries(score_columns, json_values | chat, max_size=4), min_size=1, max_size=4),
       fmt=st.sampled_from(["jsonl", "json"]), best_of_n=st.booleans())
def test_random_score_rows_encode_or_are_an_error_at_their_line(scorer, rows, fmt, best_of_n):
    with tempfile.TemporaryDirectory() as folder:
        path, origins = write(Path(folder), fmt, rows)
        try:
            for (row, origin), expected in zip(iter_rows(path), origins):
                assert origin == expected
                try:
                    sequences = _row_sequences(scorer, row, origin, best_of_n)
                except DataError as e:
                    assert str(e).startswith(origin + ":"), e
                    continue
                assert sequences and all(s and all(isinstance(t, int) for t in s) for s in sequences)
        except DataError as e:  # a row that is not a row (a lone surrogate, too deep)
            assert str(e).startswith(path), e


GOOD_SCORE_ROWS = [{"prompt": "Q", "response": "A"}, {"messages": [{"role": "user", "content": "Hi"}]},
                   {"text": "Q A"}, {"prompt": [{"role": "user", "content": "Hi"}], "response": "A"}]
BAD_SCORE_ROWS = [
    {"prompt": None, "response": "A"}, {"prompt": "Q", "response": 3}, {"prompt": "Q", "response": None},
    {"prompt": "Q", "response": "a\ud800"}, {"prompt": "Q", "response": [{"role": "assistant"}]},
    {"messages": "hi"}, {"messages": []}, {"messages": [{"role": 1, "content": "x"}]},
    {"messages": [{"role": "user", "content": None}]}, {"text": None}, {"text": 3},
    {"text": [{"role": "user", "content": "x"}]}, {"answer": "A"}, {"prompt": "Q", "responses": ["a"]},
]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
@pytest.mark.parametrize("bad", BAD_SCORE_ROWS, ids=lambda r: repr(r)[:30])
def test_a_bad_score_row_is_an_error_at_its_line(scorer, tmp_path, fmt, bad):
    path, origins = write(tmp_path, fmt, [*GOOD_SCORE_ROWS, bad])

    def encode_all():
        for row, origin in iter_rows(path):
            _row_sequences(scorer, row, origin, best_of_n=False)

    raises_at(origins[-1], encode_all)


@pytest.mark.parametrize("bad", [{"prompt": "Q"}, {"prompt": "Q", "responses": []}, {"prompt": "Q", "responses": "a"},
                                 {"prompt": None, "responses": ["a"]}, {"prompt": "Q", "responses": ["a", None]},
                                 {"prompt": "Q", "responses": [["x"]]}], ids=repr)
def test_a_bad_best_of_n_row_is_an_error_at_its_line(scorer, tmp_path, bad):
    path, origins = write(tmp_path, "jsonl", [{"prompt": "Q", "responses": ["a", "b"]}, bad])
    rows = list(iter_rows(path))
    assert len(_row_sequences(scorer, *rows[0], best_of_n=True)) == 2
    raises_at(origins[1], lambda: _row_sequences(scorer, *rows[1], best_of_n=True))


# Files beside the rows: caption and sentence text files, image files


def test_text_files_that_are_not_utf8_are_an_error_at_their_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"\xef\xbb\xbfone sentence\r\ncaf\xe9\r\n")
    raises_at(f"{corpus}:2", lambda: read_sentences(str(corpus), []))
    corpus.write_bytes(b"\xef\xbb\xbfone sentence\r\n\r\ntwo\r\n")
    assert read_sentences(str(corpus), [])[0] == [("one sentence",), ("two",)]
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.txt").write_bytes(b"a caption\nd\xe9j\xe0 vu\n")
    raises_at(f"{tmp_path / 'a.txt'}:2", lambda: read_image_captions(str(tmp_path), 8))


def test_an_image_file_that_cannot_be_read_is_an_error_naming_it(tmp_path):
    from rewardlab.data.images import load_pixels

    broken = tmp_path / "a.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=rf"{broken}: not a readable image \(cannot identify image file"):
        load_pixels(broken, 8)
