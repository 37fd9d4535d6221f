import json

from conftest import write_jsonl
from rewardlab.cli import main

def test_bad_recipe_key_exits_2_and_lists_valid_keys(capsys):
    assert main(["train", "max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe key 'max_step'" in err and "max_steps" in err


def test_bad_data_exits_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    assert main(["train", "model.name=tiny-llama", f"train_data={bad}", "eval_data=null",
                 f"output_dir={tmp_path / 'o'}"]) == 2
    assert f"{bad}:2: missing column 'rejected'" in capsys.readouterr().err


def test_eval_writes_accuracy_per_file(tmp_path):
    rows = [{"prompt": "Q", "chosen": f" yes {i}", "rejected": " no"} for i in range(6)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "model"
    assert main(["train", "model.name=tiny-bert", f"train_data={data}", "eval_data=null", "max_steps=2",
                 "batch_size=2", f"output_dir={out}"]) == 0
    assert main(["eval", str(out), "--data", str(data), "--json", str(tmp_path / "m.json"),
                 "--plot", str(tmp_path / "plots")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())[str(data)]
    assert metrics["pairs"] == 6 and 0 <= metrics["accuracy"] <= 1
    assert (tmp_path / "plots" / "d.png").stat().st_size > 1000
