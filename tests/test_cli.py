import json
import os
import subprocess
import sys

import pytest
from helpers import REPO, write_jsonl

from rewardlab.cli import main
from rewardlab.cli import train as train_command


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


@pytest.mark.slow
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


# Failures that are not recipe or data errors: one line, a non-zero exit, the traceback only when asked for


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_bug_is_one_line_naming_where_and_how_to_get_the_traceback(monkeypatch, capsys):
    def broken(args):
        {}["missing"]

    monkeypatch.setattr(train_command, "run", broken)
    monkeypatch.delenv("REWARDLAB_DEBUG", raising=False)
    assert main(["train"]) == 1
    line = error_line(capsys)
    assert "internal error: KeyError: 'missing' (at " in line and "test_cli.py:" in line and "in broken" in line
    assert "This is a bug in rewardlab: please report it with the traceback that REWARDLAB_DEBUG=1 prints" in line
    monkeypatch.setenv("REWARDLAB_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["train"])


def test_an_interrupt_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run", interrupted)
    assert main(["train"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_missing_optional_package_gives_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi fails as when it is not installed
    monkeypatch.delitem(sys.modules, "rewardlab.inference.server", raising=False)
    assert main(["serve", "tiny-llama"]) == 2
    assert error_line(capsys) == ("error: this needs the 'fastapi' package, which is not installed: "
                                  "pip install 'rewardlab[serve]'")


def test_rewardlab_install_hints_are_kept(monkeypatch, capsys):
    def needs_gguf(args):
        raise ModuleNotFoundError("Reading model.gguf needs the 'gguf' package: pip install gguf")

    monkeypatch.setattr(train_command, "run", needs_gguf)
    assert main(["train"]) == 2
    assert error_line(capsys) == "error: Reading model.gguf needs the 'gguf' package: pip install gguf"


def test_a_missing_model_folder_is_named_at_once(tmp_path, capsys):
    rows = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "r"}])
    for command in (["score", str(tmp_path / "typo"), "--input", str(rows), "--output", str(tmp_path / "o.jsonl")],
                    ["eval", str(tmp_path / "typo"), "--data", str(rows)]):
        assert main(command) == 2
        assert error_line(capsys) == f"error: no such model folder: {tmp_path / 'typo'}"


@pytest.mark.parametrize("flag, value", [("--max-length", "0"), ("--token-budget", "-5"), ("--port", "70000")])
def test_bad_numbers_on_the_command_line_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "tiny-llama", flag, value])
    assert exit_.value.code == 2 and "expected a" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_process_prints_one_line_for_an_unwritable_output(tmp_path):
    """The console script as a user runs it: no traceback, exit 2."""
    rows = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "r"}])
    out = tmp_path / "no" / "such" / "folder" / "o.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("REWARDLAB_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "rewardlab.cli", "score", "tiny-llama", "--input", str(rows),
                           "--output", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: cannot write {out} (No such file or directory)"
