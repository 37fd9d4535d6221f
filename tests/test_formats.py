import csv
import json

import pytest

from conftest import write_jsonl
from rewardlab.backbones import tiny_tokenizer
from rewardlab.data.formats import DataError, implicit_prompt, read_pairs

HH_CHOSEN = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: Locked out.\n\nAssistant: Call a locksmith."
HH_REJECTED = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: Locked out.\n\nAssistant: Use a pin."


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
    ('{"prompt": "P", "chosen": "a", "rejected": "b", "margin": "big"}', r":2: column 'margin' must be a number"),
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
