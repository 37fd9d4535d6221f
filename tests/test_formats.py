import csv
import json

import pytest
from helpers import write_jsonl
from jinja2 import TemplateError

from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.pairs import implicit_prompt, read_pairs
from rewardlab.errors import DataError
from rewardlab.models.loading import tiny_tokenizer

HH_PROMPT = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: Locked out.\n\nAssistant:"
HH_CHOSEN, HH_REJECTED = HH_PROMPT + " Call a locksmith.", HH_PROMPT + " Use a pin."


def render_with(tokenizer):
    return lambda messages, prompt_only: tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt_only)


def test_explicit_prompt_with_margin_and_source(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": " yes", "rejected": " no", "margin": 2,
                                               "source": "a"}])
    (pair,), report = read_pairs(str(path))
    assert (pair.prompt, pair.chosen, pair.rejected, pair.margin, pair.source) == ("Q?", " yes", " no", 2.0, "a")
    assert pair.origin == f"{path}:1" and report.kept == 1


def test_hh_implicit_prompt_is_everything_up_to_the_last_assistant_turn(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    (pair,), _ = read_pairs(str(path))
    assert pair.prompt.endswith("Locked out.\n\nAssistant:")
    assert (pair.chosen, pair.rejected) == (" Call a locksmith.", " Use a pin.")


def test_implicit_prompt_without_marker_cuts_at_whitespace():
    assert implicit_prompt("The answer is forty", "The answer is four") == "The answer is "


def test_conversational_explicit_and_implicit_render_with_the_chat_template(tmp_path):
    tok = tiny_tokenizer(encoder=False)
    user = [{"role": "user", "content": "Hi?"}]
    rows = [
        {"prompt": user, "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        {"chosen": user + [{"role": "assistant", "content": "Hello!"}],
         "rejected": user + [{"role": "assistant", "content": "Go away."}]},
    ]
    pairs, _ = read_pairs(str(write_jsonl(tmp_path / "c.jsonl", rows)), render_chat=render_with(tok))
    for pair in pairs:
        assert pair.chat
        assert pair.prompt == "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        assert pair.chosen == "Hello!<|im_end|>\n" and pair.rejected == "Go away.<|im_end|>\n"


def test_csv_json_and_parquet(tmp_path):
    rows = [{"prompt": "P", "chosen": " a", "rejected": " b"}, {"prompt": "Q", "chosen": " c", "rejected": " d"}]
    with open(tmp_path / "p.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "p.json").write_text(json.dumps(rows))
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    for name in ("p.csv", "p.json", "p.parquet"):
        pairs, _ = read_pairs(str(tmp_path / name))
        assert [(p.prompt, p.chosen) for p in pairs] == [("P", " a"), ("Q", " c")], name
    assert read_pairs(str(tmp_path / "p.csv"))[0][1].origin == f"{tmp_path / 'p.csv'}:3"


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "P", "chosen": "a", ', r":2: malformed JSON"),
    ('{"prompt": "P", "chosen": "a", "rejectd": "b"}', r":2: missing column 'rejected' \(did you mean 'rejectd'\?\)"),
    ('{"prompt": "P", "chosen": 3, "rejected": "b"}', r":2: column 'chosen' must be a string"),
    ('{"prompt": "P", "chosen": "  ", "rejected": "b"}', r":2: column 'chosen' is empty"),
    ('{"prompt": "P", "chosen": "a", "rejected": "b", "margin": "big"}',
     r":2: column 'margin' must be a finite number"),
    ('[1, 2]', r":2: expected a JSON object"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "P", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(DataError, match=str(path).replace(".", r"\.") + message):
        read_pairs(str(path))


def test_identical_pairs_are_skipped_and_counted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "P", "chosen": " a", "rejected": " a"},
                                              {"prompt": "P", "chosen": " a", "rejected": " b"}])
    pairs, report = read_pairs(str(path))
    assert len(pairs) == 1 and report.rows == 2 and report.skipped_identical == [f"{path}:1"]
    assert "skipped 1 with chosen == rejected" in report.summary()


def test_zero_usable_rows_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "z.jsonl", [{"prompt": "P", "chosen": " a", "rejected": " a"}])
    with pytest.raises(DataError, match="no usable preference pairs"):
        read_pairs(str(path))
    with pytest.raises(DataError, match="no such file"):
        read_pairs(str(tmp_path / "missing.jsonl"))


# The malformed files of issue 10's probe, one by one (tests/test_bad_input.py tries them at random).


def read_error(path, data: bytes, **kwargs) -> str:
    path.write_bytes(data)
    with pytest.raises(DataError) as error:
        read_pairs(str(path), **kwargs)
    return str(error.value)


ROW = b'{"prompt": "P", "chosen": "a", "rejected": "b"}\n'


@pytest.mark.parametrize("name, data, message", [
    ("null.jsonl", ROW + b'{"prompt": "P", "chosen": null, "rejected": "b"}\n', ":2: column 'chosen' must be a string"),
    ("short.csv", b"prompt,chosen,rejected\nP,a,b\nP,a\n",
     ":3: 2 fields but the header has 3 (prompt, chosen, rejected): missing 'rejected'"),
    ("comma.csv", b"prompt,chosen,rejected\nP,a,b\nP,yes, I can,b\n",
     ":3: 4 fields but the header has 3 (prompt, chosen, rejected): a field holding a comma must be in double quotes"),
    ("latin1.jsonl", ROW + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
     ":2: not UTF-8 text (byte 0xe9 at byte 16 of the line)"),
    ("latin1.json", b'[{"prompt": "P",\n  "chosen": "caf\xe9", "rejected": "b"}]', ":2: not UTF-8 text (byte 0xe9"),
    ("surrogate.jsonl", ROW + b'{"prompt": "P", "chosen": "a\\ud83d", "rejected": "b"}\n',
     ":2: a lone surrogate ('\\ud83d') in column 'chosen' is not text"),
    ("empty.jsonl", b"", ": empty file"),
    ("empty.parquet", b"", ": empty file"),
    ("text.parquet", b"prompt,chosen,rejected\nP,a,b\n", ": not a readable parquet file"),
    ("true.jsonl", b'{"prompt": "P", "chosen": "a", "rejected": "b", "margin": true}\n',
     ":1: column 'margin' must be a finite number, got a boolean (true)"),
    ("string.jsonl", b'{"prompt": "P", "chosen": "a", "rejected": "b", "margin": "1.5"}\n',
     ":1: column 'margin' must be a finite number, got a string ('1.5'); JSON numbers are written without quotes"),
    ("huge.jsonl", b'{"prompt": "P", "chosen": "a", "rejected": "b", "margin": -1e39}\n',
     ":1: column 'margin' must be a finite number within ±3.4e+38, got -1e+39"),
    ("nan.jsonl", b'{"prompt": "P", "chosen": "a", "rejected": "b", "margin": NaN}\n',
     ":1: NaN is not a JSON value (write null, or leave the value out) (column 'margin')"),
    ("digits.jsonl", b'{"prompt": "P", "chosen": "a", "rejected": "b", "margin": ' + b"9" * 5000 + b"}\n",
     ":1: a number of 5000 digits is too long to be a value (column 'margin')"),
    ("null-prompt.jsonl", b'{"prompt": null, "chosen": "a", "rejected": "b"}\n',
     ":1: column 'prompt' is null; write \"\" for no prompt, or leave the column out"),
    ("deep.jsonl", b'{"chosen": "a", "rejected": "b", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
     ":1: nested deeper than 100 levels"),
    ("deep.json", b'[{"chosen": "a", "rejected": "b", "x": ' + b"[" * 200 + b"]" * 200 + b"}]",
     " row 1: nested deeper than 100 levels"),
    ("mixed.jsonl", ROW + b"prompt,chosen,rejected\n", ":2: malformed JSON"),
    ("mixed.json", b"[" + ROW + b"]\n" + ROW,
     ":3: malformed JSON (Extra data at column 1) (a .json file holds one list"),
    ("mixed.csv", b'prompt,chosen,rejected\n{"chosen": "a", "rejected": "b"}\n', ":2: 2 fields but the header has 3"),
    ("dup.csv", b"prompt,chosen,chosen\nP,a,b\n", ":1: the header names column 'chosen' more than once"),
    ("messages.jsonl", b'{"chosen": [{"role": "user", "content": 3}], "rejected": [{"role": "user", "content": "x"}]}',
     ":1: column 'chosen', message 1: a message is {\"role\": a string, \"content\": a string}; got role a string "
     "('user'), content a number (3)"),
    ("pairs.tsv", b"prompt\tchosen\trejected\n", ": a data file is .jsonl, .json, .csv, .parquet; got a '.tsv' file"),
])
def test_malformed_files_are_an_error_naming_file_and_line(tmp_path, name, data, message):
    path = tmp_path / name
    assert read_error(path, data).startswith(f"{path}{message}")


def test_parquet_nulls_are_errors_in_required_columns_and_absent_in_optional_ones(tmp_path):
    import datasets

    path = str(tmp_path / "p.parquet")
    rows = [{"prompt": "P", "chosen": " a", "rejected": " b", "margin": None, "source": None}]
    datasets.Dataset.from_list(rows).to_parquet(path)
    (pair,), _ = read_pairs(path)
    assert (pair.margin, pair.source, pair.origin) == (0.0, "", f"{path} row 1")
    for column in ("chosen", "rejected", "prompt"):
        datasets.Dataset.from_list(rows + [{**rows[0], column: None}]).to_parquet(path)
        with pytest.raises(DataError, match=rf"{path} row 2: column '{column}'"):
            read_pairs(path)


def test_a_bom_and_crlf_change_nothing(tmp_path):
    """A UTF-8 BOM (Excel's CSV) used to turn the header into '\\ufeffprompt' and every prompt into ''."""
    body = 'prompt,chosen,rejected,margin\r\nQ?,"yes,\r\nreally",no,1.5\r\nR?,a,b,\r\n'
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    (tmp_path / "p.jsonl").write_bytes(b"\xef\xbb\xbf" + ROW.replace(b"\n", b"\r\n") * 2)
    (tmp_path / "p.json").write_bytes(b"\xef\xbb\xbf[\r\n" + ROW.strip() + b"\r\n]\r\n")
    pairs, _ = read_pairs(str(tmp_path / "p.csv"))
    assert [(p.prompt, p.chosen, p.rejected, p.margin, p.origin[-2:]) for p in pairs] == [
        ("Q?", "yes,\r\nreally", "no", 1.5, ":2"), ("R?", "a", "b", 0.0, ":4")]  # a CSV margin is text, parsed
    for name in ("p.jsonl", "p.json"):
        pairs, _ = read_pairs(str(tmp_path / name))
        assert {(p.prompt, p.chosen, p.rejected) for p in pairs} == {("P", "a", "b")}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_huge_strings_are_read_whole(tmp_path, fmt):
    """5 MB responses, past the csv module's 128 KiB field limit."""
    rows = [{"prompt": "P", "chosen": "a" * 5_000_000, "rejected": "b" * 5_000_000}]
    path = tmp_path / f"p.{fmt}"
    if fmt == "parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif fmt == "csv":
        path.write_text("prompt,chosen,rejected\n" + ",".join(rows[0].values()) + "\n")
    else:
        write_jsonl(path, rows) if fmt == "jsonl" else path.write_text(json.dumps(rows))
    (pair,), _ = read_pairs(str(path))
    assert len(pair.chosen) == len(pair.rejected) == 5_000_000


def test_a_chat_template_that_raises_is_an_error_on_the_row(tmp_path):
    def refuse(messages, prompt_only):
        raise TemplateError("Conversation roles must alternate user/assistant/user/assistant/...")

    rows = [{"chosen": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "a"}],
             "rejected": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "b"}]}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(DataError, match=rf"{path}:1: the chat template refused this conversation: Conversation roles"):
        read_pairs(str(path), render_chat=refuse)
    tok = tiny_tokenizer(encoder=False)
    tok.chat_template = "{{ raise_exception('Conversation roles must alternate') }}"
    policy = EncodingPolicy(tok, encoder=False, max_length=64)  # training's renderer, with its own message
    with pytest.raises(DataError, match=rf"{path}:1: the chat template refused these messages: TemplateError: Conv"):
        read_pairs(str(path), render_chat=policy.chat_renderer)


def test_a_hub_dataset_that_cannot_load_is_an_error_naming_it(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"owner/prefs: cannot load it as a local data file or a hub dataset "
                                        r"\(ConnectionError: Couldn't reach"):
        read_pairs("owner/prefs")
