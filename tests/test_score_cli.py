import datetime
import math
import shutil

import pytest
import torch
from helpers import read_jsonl, write_jsonl
from transformers import AutoTokenizer

from rewardlab.cli import main
from rewardlab.inference.scorer import RewardModel


def test_score_adds_a_reward_to_every_row_in_order(trained, tmp_path):
    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    rows = [
        {"prompt": "Request 1:", "response": " thanks", "id": 1},
        {"messages": chat, "id": 2},
        {"text": "Request 3: go away", "id": 3},
        {"prompt": [chat[0]], "response": "Hello.", "id": 4},
    ]
    src, dst = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["score", str(trained), "--input", str(src), "--output", str(dst)]) == 0
    out = read_jsonl(dst)
    assert [r["id"] for r in out] == [1, 2, 3, 4] and all(isinstance(r["reward"], float) for r in out)

    rm = RewardModel.load(str(trained))
    expected = rm.score(["Request 1:", [chat[0]]], [" thanks", [chat[1]]]) + rm.score_texts(["Request 3: go away"])
    assert [out[0]["reward"], out[1]["reward"], out[2]["reward"]] == pytest.approx(expected, abs=1e-6)
    assert out[3]["reward"] == pytest.approx(out[1]["reward"], abs=1e-6)

    assert main(["score", str(trained), "--input", str(src), "--output", str(dst), "--normalize"]) == 0
    mean, std = rm.reward_mean, rm.reward_std
    assert [r["reward"] for r in read_jsonl(dst)] == pytest.approx([(r["reward"] - mean) / std for r in out], abs=1e-5)


def test_best_of_n_keeps_the_top_candidate(trained, tmp_path):
    rows = [{"prompt": "Request 7:", "responses": [" go away", " thanks", " whatever"], "id": "a"},
            {"prompt": "Request 8:", "responses": [" sure"], "id": "b"}]
    src, dst = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["score", str(trained), "--input", str(src), "--output", str(dst), "--best-of-n"]) == 0
    out = read_jsonl(dst)
    rm = RewardModel.load(str(trained))
    best, reward = rm.rank("Request 7:", rows[0]["responses"])[0]
    assert out[0]["id"] == "a" and "responses" not in out[0]
    assert out[0]["response"] == rows[0]["responses"][best] and out[0]["reward"] == pytest.approx(reward, abs=1e-6)
    assert out[0]["rewards"] == pytest.approx(rm.score(["Request 7:"] * 3, rows[0]["responses"]), abs=1e-6)
    assert out[1]["response"] == " sure" and len(out[1]["rewards"]) == 1


@pytest.mark.parametrize("row, flags, message", [
    ({"prompt": "p", "answer": "r"}, [], "expected columns prompt + response, messages, or text"),
    ({"prompt": "p", "responses": ["a", "b"]}, [], "need --best-of-n"),
    ({"prompt": "p", "response": 3}, [], "column 'response' must be a string"),
    ({"messages": "hi"}, [], "column 'messages' must be a non-empty list"),
    ({"prompt": "p", "response": "r"}, ["--best-of-n"], "need 'prompt' and 'responses'"),
])
def test_bad_rows_exit_2_naming_file_and_line(trained, tmp_path, capsys, row, flags, message):
    good = {"prompt": "p", "responses": ["r"]} if flags else {"prompt": "p", "response": "r"}
    src = write_jsonl(tmp_path / "in.jsonl", [good, row])
    assert main(["score", str(trained), "--input", str(src), "--output", str(tmp_path / "o.jsonl"), *flags]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2: " in err and message in err


# The output file: written in full or not at all


def test_the_input_file_can_be_the_output_file(trained, tmp_path):
    rows = [{"prompt": "Request 1:", "response": " thanks", "id": 1}, {"text": "Request 2: never", "id": 2}]
    src, other = write_jsonl(tmp_path / "rows.jsonl", rows), tmp_path / "other.jsonl"
    assert main(["score", str(trained), "--input", str(src), "--output", str(other)]) == 0
    assert main(["score", str(trained), "--input", str(src), "--output", str(src)]) == 0
    assert read_jsonl(src) == read_jsonl(other) and [r["id"] for r in read_jsonl(src)] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl", "rows.jsonl"]  # no temporary file left


@pytest.mark.parametrize("problem", ["missing input", "bad row", "empty input", "same file, bad row"])
def test_a_failed_score_leaves_the_output_as_it_was(trained, tmp_path, capsys, problem):
    out = tmp_path / "out.jsonl"
    out.write_text('{"kept": true}\n')
    src = tmp_path / "in.jsonl"
    if problem == "missing input":
        src, message = tmp_path / "missing.jsonl", "missing.jsonl: no such file"
    elif problem == "empty input":
        src.write_text("\n\n")
        message = "in.jsonl: no rows to score"
    else:
        write_jsonl(src, [{"prompt": "p", "response": "r"}] * 3 + [{"prompt": "p", "response": None}])
        message = "in.jsonl:4: column 'response' must be a string"
    if problem.startswith("same file"):
        out = src
    before = out.read_bytes()
    assert main(["score", str(trained), "--input", str(src), "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert out.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_model_that_gives_nan_rewards_is_an_error_not_a_nan_in_the_file(trained, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    weights = load_file(broken / "model.safetensors")
    head = next(k for k in weights if k.startswith("score."))
    weights[head] = torch.full_like(weights[head], math.nan)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    src, out = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "r"}]), tmp_path / "out.jsonl"
    assert main(["score", str(broken), "--input", str(src), "--output", str(out)]) == 2
    assert f"{src}:1: the model gave a non-finite reward ([nan]); its weights are broken" in capsys.readouterr().err
    assert not out.exists()


def test_parquet_values_json_cannot_hold_are_an_error_timestamps_are_iso_text(trained, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, out = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    when = datetime.datetime(2024, 5, 1, 12, 30)
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "response": "r", "at": when, "x": 1.0}]), src)
    assert main(["score", str(trained), "--input", str(src), "--output", str(out)]) == 0
    assert read_jsonl(out)[0]["at"] == "2024-05-01T12:30:00"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "response": "r", "x": math.nan}]), src)
    assert main(["score", str(trained), "--input", str(src), "--output", str(out)]) == 2
    assert f"{src} row 1: the row cannot be written back as JSON (Out of range float values are not JSON " \
           in capsys.readouterr().err


def test_a_chat_template_that_raises_is_an_error_at_the_row(trained, tmp_path, capsys):
    strict = tmp_path / "strict"
    shutil.copytree(trained, strict)
    tokenizer = AutoTokenizer.from_pretrained(strict)
    tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                               "{{ raise_exception('System role not supported') }}{% endif %}"
                               "{{ m['content'] }}{% endfor %}")
    tokenizer.save_pretrained(strict)
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            {"messages": [{"role": "system", "content": "Be brief"}, {"role": "assistant", "content": "Ok"}]}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["score", str(strict), "--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert (f"error: {src}:2: the chat template refused these messages: TemplateError: System role not supported"
            in capsys.readouterr().err)
