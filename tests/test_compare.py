import json

import pytest
from helpers import REPO, synthetic_rows, write_jsonl

from rewardlab.cli import main
from rewardlab.config import load_comparison
from rewardlab.errors import RecipeError

COMPARISONS = sorted((REPO / "recipes" / "compare").glob("*.yaml"))


@pytest.mark.parametrize("path", COMPARISONS, ids=lambda p: p.name)
def test_every_comparison_file_loads_with_all_its_recipes(path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_comparison(path).runs


def test_comparison_errors_name_the_key(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("runs: []\n")
    with pytest.raises(RecipeError, match="recipe key 'runs' must list at least 1 item, got \\[\\]"):
        load_comparison(bad)
    bad.write_text("run: [a.yaml]\n")
    with pytest.raises(RecipeError, match="unknown recipe key 'run'.*output_dir, overrides, runs"):
        load_comparison(bad)


@pytest.mark.slow
def test_compare_writes_a_table_and_curves(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(32))
    recipes = []
    for name in ("tiny-llama", "tiny-gpt2"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model: {{name: {name}}}\ntrain_data: {data}\neval_data: {data}\nmax_length: 64\n"
                        "batch_size: 8\nlearning_rate: 3.0e-3\nmax_steps: 3\neval_steps: 2\nlogging_steps: 1\n")
        recipes.append(str(path))
    out = tmp_path / "cmp"
    assert main(["compare", *recipes, "--set", "seed=1", "--output", str(out)]) == 0
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| tiny-llama | bradley_terry | tiny-llama | accuracy |")
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"tiny-llama", "tiny-gpt2"}
    assert all(r["peak_rss_gb"] > 0.1 and r["info"]["steps"] == 3 for r in results.values())
    assert (out / "curves.png").stat().st_size > 5000
