"""The shape of the package, checked: layers and no cycles (import-linter's contracts in pyproject.toml), module
sizes, no scorer-kind sniffing outside the inference package, no repeated blocks, every module imports, and lint."""

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import tomllib
from helpers import REPO

import rewardlab

PACKAGE = REPO / "rewardlab"
MODULES = sorted(PACKAGE.rglob("*.py"))


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """import-linter's contracts of pyproject.toml, checked on the package under ``root``."""
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
               "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": ""})


def test_the_import_contracts_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("data/rows.py", "    from rewardlab.cli import main  # noqa", "Layers"),  # upward, inside a function
    ("models/heads.py", "    from rewardlab.models.reward import RewardNetwork  # noqa", "cycles"),  # a cycle
])
def test_a_planted_upward_import_or_cycle_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(PACKAGE, tmp_path / "rewardlab", ignore=shutil.ignore_patterns("__pycache__"))
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[tool.importlinter]", f'root_package = "{config["root_package"]}"']
    for contract in config["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{key} = {value!r}".replace("'", '"') for key, value in contract.items()]
    (tmp_path / "pyproject.toml").write_text("\n".join(lines) + "\n")
    assert lint_imports(tmp_path).returncode == 0
    path = tmp_path / "rewardlab" / module
    path.write_text(path.read_text() + f"\n\ndef planted():\n{line}\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1 and "BROKEN" in done.stdout
    report = " ".join(done.stdout.split())  # import-linter wraps long contract names at 80 columns
    names = [contract["name"] for contract in config["contracts"] if broken in contract["name"]]
    assert any(f"{name} BROKEN" in report for name in names), done.stdout


def test_modules_are_small_and_commands_thin():
    sizes = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines()) for path in MODULES}
    assert {name: n for name, n in sizes.items() if n > 400} == {}
    assert {name: n for name, n in sizes.items() if name.startswith("cli/") and n >= 150} == {}


SCORER_PROBES = {"score_members", "forward_members", "member_ids", "summary", "parts", "combine", "members", "size"}
SCORER_TYPES = {"RewardModel", "EnsembleRewardModel", "Scorer", "NetworkPart"}


def test_no_caller_outside_inference_asks_what_kind_of_scorer_it_holds():
    """hasattr/getattr probes of a scorer's capabilities and isinstance checks against scorer types belong to the
    inference package, if anywhere."""
    found = []
    for path in MODULES:
        if path.is_relative_to(PACKAGE / "inference"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in ("hasattr", "getattr") and len(node.args) > 1 and \
                    isinstance(node.args[1], ast.Constant) and node.args[1].value in SCORER_PROBES:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
            if node.func.id == "isinstance" and {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} \
                    & SCORER_TYPES:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == []


def test_no_block_of_six_lines_is_repeated_inside_the_package():
    """Six consecutive lines of code (stripped, blank lines, imports and docstring quotes left out: they are no
    logic) that stand again elsewhere in rewardlab/ would be one piece of logic written twice."""
    windows = defaultdict(list)
    for path in MODULES:
        lines = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)
                 if line.strip() and not line.strip().startswith(("import ", "from ", '"""'))]
        for k in range(len(lines) - 5):
            window = tuple(text for _, text in lines[k : k + 6])
            if sum(len(text) > 3 for text in window) >= 4:  # not a run of brackets and keywords
                windows[window].append(f"{path.relative_to(REPO)}:{lines[k][0]}")
    repeated = [places for places in windows.values() if len(places) > 1]
    assert repeated == []


def test_every_module_imports():
    for module in pkgutil.walk_packages(rewardlab.__path__, "rewardlab."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def test_the_public_api_is_importable_from_the_package_itself():
    for name in rewardlab.__all__:
        assert getattr(rewardlab, name) is not None
    assert rewardlab.RewardModel.__module__ == "rewardlab.inference.scorer"
    with pytest.raises(AttributeError):
        rewardlab.no_such_name  # noqa: B018


def test_importing_the_package_and_the_command_line_loads_no_torch():
    """So that a mistake on the command line is answered before the training stack loads."""
    code = "import sys, rewardlab, rewardlab.cli, rewardlab.config; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert done.stdout.strip() == "False", done.stderr


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "rewardlab", "tests", "benchmarks", "data"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
