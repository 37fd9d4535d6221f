import json

import pytest

from conftest import synthetic_rows, write_jsonl
from rewardlab.cli import main
from rewardlab.scoring import RewardModel


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score-cli")
    data = write_jsonl(tmp / "train.jsonl", synthetic_rows(8))
    out = tmp / "model"
    assert main(["train", "model.name=tiny-llama", f"train_data={data}", f"eval_data={data}", "max_steps=2",
                 "batch_size=2", f"output_dir={out}"]) == 0
    return out


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


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
