"""Contrastive training against the batch size: peak memory and step time with and without cached-gradient batches
(``contrastive.mini_batch_size``), quality at equal examples seen, and the peak memory of the bundled recipes.

    python -m benchmarks.contrastive_memory memory recipes/simcse-unsup-minilm.yaml \\
        --batch-sizes 32 64 128 256 512 --mini-batch-size 32 --uncached-up-to 256 --output runs/bench-memory-simcse
    python -m benchmarks.contrastive_memory quality recipes/simcse-unsup-minilm.yaml \\
        --batch-sizes 32 128 512 --examples 4096 --mini-batch-size 32 --output runs/bench-quality-simcse
    python -m benchmarks.contrastive_memory recipes --output runs/bench-recipes [RECIPE ...]
    python -m benchmarks.contrastive_memory steptime recipes/simcse-unsup-smollm2-lora.yaml \
        --mini-batch-sizes 4 8 16 --output runs/bench-steptime
    python -m benchmarks.contrastive_memory plot runs/bench-memory-simcse runs/bench-memory-clip \\
        --output docs/contrastive-memory.png

Every run is ``rewardlab train`` in a child process (:func:`rewardlab.training.compare.run_one`); its peak memory is the
child's maximum resident set size as the kernel counts it (``wait4``'s ``ru_maxrss``, the number ``/usr/bin/time -v``
prints). Step time is the median of the logged ``train/step_seconds`` after the first step. The machine's load
average is recorded around each run: on a shared machine step times are only comparable within one load.
Each subcommand writes ``OUTPUT/results.json`` (and prints a markdown table).

``steptime`` (SimCSE recipes) compares, in one process and one thread, alternating on the same batches, the processor
time of a cached-gradient step at several chunk sizes with that of the one-pass step. Where the one-pass step does
not fit in memory (SmolLM2's recipe: 18 GB), it stands in with the same work in less memory: the one-pass batch's
padded rows, at the batch's width, forward and backward in ``--slices`` slices (compute is linear in the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from rewardlab.config import RECIPES_DIR
from rewardlab.training.compare import run_one


def measure(recipe: str, overrides: list[str], output_dir: Path) -> dict:
    """Train ``recipe`` with ``overrides`` in a child process: peak GB, median step seconds, CPU seconds, metric."""
    load_before = os.getloadavg()[0]
    result = run_one(recipe, [*overrides, "logging_steps=1", "tracker=jsonl"], output_dir)
    lines = [json.loads(x) for x in (output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["train/step_seconds"] for r in lines if "train/step_seconds" in r]
    info = result["info"]
    return {
        "recipe": recipe, "overrides": overrides, "peak_gb": round(result["peak_rss_gb"], 3),
        "step_seconds": round(statistics.median(steps[1:] or steps), 2), "steps": info["steps"],
        "wall_seconds": round(result["wall_seconds"], 1), "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "metric": info["main_metric"], "value": info["metrics"].get(info["main_metric"]),
    }


def memory(args) -> list[dict]:
    results = []
    for batch in args.batch_sizes:
        modes = [("cached", args.mini_batch_size)] + ([("plain", None)] if batch <= args.uncached_up_to else [])
        for mode, size in modes:
            overrides = [f"batch_size={batch}", f"max_steps={args.steps}", "eval_data=null", "eval_steps=null",
                         "save_steps=null", f"contrastive.mini_batch_size={size if size else 'null'}", *args.set]
            row = measure(args.recipe, overrides, args.output / f"{mode}-{batch}")
            results.append({"mode": mode, "batch_size": batch, "mini_batch_size": size, **row})
            print(json.dumps(results[-1]), flush=True)
    return results


def quality(args) -> list[dict]:
    results = []
    for batch in args.batch_sizes:
        overrides = [f"batch_size={batch}", f"max_steps={args.examples // batch}", "eval_steps=null",
                     "save_steps=null", f"contrastive.mini_batch_size={args.mini_batch_size}", *args.set]
        row = measure(args.recipe, overrides, args.output / f"batch-{batch}")
        results.append({"batch_size": batch, "examples": args.examples, **row})
        print(json.dumps(results[-1]), flush=True)
    return results


def recipes(args) -> list[dict]:
    results = []
    for recipe in args.recipes or sorted(str(p) for p in RECIPES_DIR.glob("*.yaml")):
        row = measure(recipe, [f"max_steps={args.steps}", "eval_steps=null", "save_steps=null", *args.set],
                      args.output / Path(recipe).stem)
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def steptime(args) -> list[dict]:
    import random
    import time

    import torch
    from accelerate import Accelerator

    from rewardlab.config import load_recipe
    from rewardlab.tasks import build_task

    torch.set_num_threads(1)
    recipe = load_recipe(args.recipe, ["eval_data=null", *args.set])
    task, accelerator = build_task(recipe, print), Accelerator(cpu=True)
    model = task.model.train()
    random.seed(0)
    batches = [task.collate(random.sample(task.train_data, recipe.batch_size)) for _ in range(args.batches)]

    def one_pass_in_slices(batch):
        for rows in torch.arange(batch.input_ids.shape[0]).split(-(-batch.input_ids.shape[0] // args.slices)):
            accelerator.backward(model(batch.input_ids[rows], batch.attention_mask[rows]).pow(2).mean())

    def cached(size):
        def step(batch):
            recipe.contrastive.mini_batch_size = size
            task.backward(accelerator, model, batch)
        return step

    modes = {f"one pass ({args.slices} slices)": one_pass_in_slices} | {
        f"cached, chunks of {size}": cached(size) for size in args.mini_batch_sizes}
    seconds = {name: [] for name in modes}
    for _ in range(args.reps):
        for name, step in modes.items():
            for batch in batches:
                started = time.process_time()
                step(batch)
                model.zero_grad()
                seconds[name].append(time.process_time() - started)
    load = round(os.getloadavg()[0], 2)
    return [{"mode": name, "cpu_seconds_per_step": round(statistics.mean(v), 2), "runs": v, "load": load}
            for name, v in seconds.items()]


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for folder in args.folders:
        rows = json.loads((Path(folder) / "results.json").read_text())
        name = Path(rows[0]["recipe"]).stem
        for mode, style in (("cached", "o-"), ("plain", "s--")):
            points = sorted((r["batch_size"], r["peak_gb"]) for r in rows if r["mode"] == mode)
            if points:
                label = f"{name}, " + (f"cached (chunks of {rows[0]['mini_batch_size']})" if mode == "cached"
                                       else "one pass")
                ax.plot(*zip(*points), style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (examples a step)")
    ax.set_ylabel("peak resident memory (GB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output}")


def markdown(results: list[dict]) -> str:
    keys = [k for k in ("mode", "batch_size", "recipe") if k in results[0]]
    lines = ["| " + " | ".join(keys) + " | peak GB | s/step | steps | metric | value | load |",
             "|" + "---|" * (len(keys) + 6)]
    for r in results:
        value = f"{r['value']:.4f}" if isinstance(r["value"], float) else r["value"]
        lines.append("| " + " | ".join(str(r[k]) for k in keys) + f" | {r['peak_gb']:.2f} | {r['step_seconds']} | "
                     f"{r['steps']} | {r['metric']} | {value} | {r['load'][0]}–{r['load'][1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("memory", "quality"):
        sub = commands.add_parser(name)
        sub.add_argument("recipe")
        sub.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
        sub.add_argument("--mini-batch-size", type=int, default=32)
    commands.choices["memory"].add_argument("--steps", type=int, default=3)
    commands.choices["memory"].add_argument("--uncached-up-to", type=int, default=128,
                                            help="also run without cached batches up to this batch size")
    commands.choices["quality"].add_argument("--examples", type=int, default=4096,
                                             help="examples seen by every run (steps = examples / batch size)")
    sub = commands.add_parser("steptime")
    sub.add_argument("recipe")
    sub.add_argument("--mini-batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    sub.add_argument("--slices", type=int, default=4)
    sub.add_argument("--batches", type=int, default=3)
    sub.add_argument("--reps", type=int, default=2)
    sub = commands.add_parser("recipes")
    sub.add_argument("recipes", nargs="*", help="default: every recipes/*.yaml")
    sub.add_argument("--steps", type=int, default=3)
    for sub in commands.choices.values():
        sub.add_argument("--output", type=Path, required=True)
        sub.add_argument("--set", nargs="*", default=[], help="more recipe overrides, key=value")
    sub = commands.add_parser("plot")
    sub.add_argument("folders", nargs="+")
    sub.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "plot":
        return plot(args)
    args.output.mkdir(parents=True, exist_ok=True)
    results = {"memory": memory, "quality": quality, "recipes": recipes, "steptime": steptime}[args.command](args)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results) if args.command != "steptime" else json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
