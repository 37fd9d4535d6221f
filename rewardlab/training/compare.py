"""``rewardlab compare``: train recipes one after another and write a Markdown table of their final metrics, wall
time and peak memory, and a PNG of their loss and metric curves.

Each run is its own process (``rewardlab train RECIPE overrides… output_dir=OUT/NAME``), so its peak resident memory
is its own (read from the operating system's accounting of that child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rewardlab.config import Comparison
from rewardlab.errors import RunFailed
from rewardlab.models.saved import load_info


def run_one(recipe: str, overrides: list[str], output_dir: Path) -> dict:
    """Train one recipe in a child process; (wall seconds, peak RSS in GB, the saved info)."""
    command = [sys.executable, "-m", "rewardlab.cli", "train", recipe, *overrides, f"output_dir={output_dir}"]
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RunFailed(f"{recipe} failed (exit {child.returncode}); see its output above")
    return {"wall_seconds": time.perf_counter() - started, "peak_rss_gb": usage.ru_maxrss / 2**20,
            "info": load_info(output_dir)}


def curves(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series from a run's metrics.jsonl: the training loss and every evaluation metric."""
    series: dict[str, list[tuple[int, float]]] = {}
    path = output_dir / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        record = json.loads(line)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and (key == "train/loss" or key.startswith("eval/")):
                series.setdefault(key, []).append((record["step"], value))
    return series


def markdown(results: dict[str, dict]) -> str:
    lines = ["| run | objective | model | metric | value | steps | wall time (s) | peak memory (GB) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        info = r["info"]
        recipe = r["recipe"]
        metric = info.get("main_metric", "")
        value = info.get("metrics", {}).get(metric, float("nan"))
        lines.append(f"| {name} | {recipe.objective} | {recipe.model.name} | {metric} | {value:.4f} | "
                     f"{info.get('steps', '')} | {r['wall_seconds']:.1f} | {r['peak_rss_gb']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        series = r["curves"]
        if "train/loss" in series:
            loss_ax.plot(*zip(*series["train/loss"]), label=name)
        metric = "eval/" + r["info"].get("main_metric", "")
        if metric in series:
            metric_ax.plot(*zip(*series[metric]), marker="o", label=f"{name} ({metric[5:]})")
    loss_ax.set(xlabel="step", ylabel="training loss", title="loss")
    metric_ax.set(xlabel="step", ylabel="metric", title="evaluation")
    for ax in (loss_ax, metric_ax):
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(comparison: Comparison) -> dict[str, dict]:
    """Run every recipe of ``comparison``; write ``results.md``, ``results.json`` and ``curves.png``."""
    from rewardlab.config import load_recipe

    out = Path(comparison.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for recipe_path in comparison.runs:
        name = Path(recipe_path).stem
        run_dir = out / name
        result = run_one(recipe_path, comparison.overrides, run_dir)
        result["recipe"] = load_recipe(recipe_path, comparison.overrides)
        result["curves"] = curves(run_dir)
        results[name] = result
    (out / "results.md").write_text(markdown(results))
    (out / "results.json").write_text(json.dumps(
        {name: {k: v for k, v in r.items() if k not in ("recipe", "curves")} for name, r in results.items()},
        indent=2, default=str) + "\n")
    plot(results, out / "curves.png")
    print((out / "results.md").read_text() + f"written to {out}/results.md, results.json, curves.png")
    return results
