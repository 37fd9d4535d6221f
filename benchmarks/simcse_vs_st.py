"""Unsupervised SimCSE: rewardlab against sentence-transformers' MultipleNegativesRankingLoss, same everything.

Both runs take their settings from one rewardlab recipe: the backbone, the sentences (the recipe's training data,
the same distinct sentences in both), batch size, steps, learning rate (linear decay, no warmup, AdamW without
weight decay, gradient clipping at 1), temperature (sentence-transformers' ``scale`` = 1 / τ), pooling and maximum
length. sentence-transformers gets each sentence as anchor and positive (identical texts, dropout on: its standard
unsupervised SimCSE set-up). Both trained models — and the backbone before training — are scored by the same
evaluator (STS Spearman of cosine similarity on the recipe's ``eval_data``).

    python -m benchmarks.simcse_vs_st recipes/simcse-unsup-minilm.yaml max_steps=50 \\
        --output-dir runs/bench-simcse-minilm
    python -m benchmarks.simcse_vs_st recipes/simcse-unsup-smollm2-lora.yaml max_steps=50 --rewardlab-only \\
        --output-dir runs/bench-simcse-smollm2

sentence-transformers has no MLP head; rewardlab trains through one unless ``contrastive.mlp_head=false``.
sentence-transformers runs only without LoRA, on a sentence-transformers folder with the recipe's pooling.
Steps/s is optimizer steps over the training loop's wall time (no evaluation inside); on a machine shared with
other jobs the processor seconds a step (the process's CPU time over the same loop) are the steadier measure.
Writes ``OUTPUT_DIR/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from rewardlab.config import load_recipe
from rewardlab.data.sentences import read_sentences
from rewardlab.evaluation.sts import cosine_similarities, read_sts, sts_metrics
from rewardlab.models.offline import resolve_offline
from rewardlab.tasks.simcse import load_sentence_encoder, sentence_transformers_pooling
from rewardlab.training import loop as train_module


def sts_spearman(model_name: str, recipe) -> float:
    """STS Spearman of a model folder or name, with the recipe's pooling and maximum length."""
    encoder, tokenizer, _ = load_sentence_encoder(model_name, recipe.contrastive.pooling)
    pairs = read_sts(recipe.eval_data, recipe.eval_split)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    similarities = cosine_similarities(encoder.to(device), tokenizer, pairs, recipe.max_length, 64, device)
    return sts_metrics(similarities, pairs)["spearman"]


def sentence_transformers_source(recipe) -> str:
    """The backbone folder for sentence-transformers, which must train it in full with the recipe's pooling."""
    source = str(resolve_offline(recipe.model.name) or recipe.model.name)
    if recipe.model.lora.r or sentence_transformers_pooling(source) != recipe.contrastive.pooling:
        raise SystemExit(f"the sentence-transformers run needs full fine-tuning and the pooling of {source} "
                         f"({sentence_transformers_pooling(source)}); or use --rewardlab-only")
    return source


def train_sentence_transformers(recipe, steps: int, output_dir: Path) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    columns = recipe.contrastive.sentence_column
    sentences = [s for (s,) in read_sentences(recipe.train_data, [columns] if isinstance(columns, str) else columns,
                                              recipe.train_split)[0]]
    model = SentenceTransformer(sentence_transformers_source(recipe))
    model.max_seq_length = recipe.max_length
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "st-trainer"), per_device_train_batch_size=recipe.batch_size, max_steps=steps,
        learning_rate=recipe.learning_rate, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=recipe.max_grad_norm, seed=recipe.seed, report_to="none", save_strategy="no",
        logging_steps=10, use_cpu=not torch.cuda.is_available(), dataloader_drop_last=True,
    )
    loss = MultipleNegativesRankingLoss(model, scale=1 / recipe.contrastive.temperature)
    data = Dataset.from_dict({"anchor": sentences, "positive": sentences})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    model.save(str(output_dir / "sentence-transformers"))
    return {"steps": steps, "train_seconds": round(seconds, 1), "steps_per_second": round(steps / seconds, 3),
            "cpu_seconds_per_step": round(cpu_seconds / steps, 3),
            "spearman": sts_spearman(str(output_dir / "sentence-transformers"), recipe)}


def train_rewardlab(recipe) -> dict:
    """rewardlab's own loop; the processor time is read when the loop hands over to the final evaluation (so it
    includes loading the backbone, a few processor seconds)."""
    loop_end = {}
    real_finish = train_module.finish

    def finish(*args):
        loop_end["cpu"] = time.process_time()
        return real_finish(*args)

    cpu_started = time.process_time()
    train_module.finish = finish
    try:
        info = train_module.train(recipe)
    finally:
        train_module.finish = real_finish
    return {"steps": info["steps"], "train_seconds": info["train_seconds"],
            "steps_per_second": round(info["steps"] / info["train_seconds"], 3),
            "cpu_seconds_per_step": round((loop_end["cpu"] - cpu_started) / info["steps"], 3),
            "spearman": info["metrics"]["spearman"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", help="an unsupervised SimCSE recipe, e.g. recipes/simcse-unsup-minilm.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides for both runs (max_steps=150, ...)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--rewardlab-only", action="store_true", help="skip the sentence-transformers run")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    recipe = load_recipe(args.recipe, [*args.overrides, f"output_dir={out / 'rewardlab'}", "eval_steps=null",
                                       "save_steps=null"])
    if not args.rewardlab_only:
        sentence_transformers_source(recipe)  # fail now rather than after rewardlab's run
    torch.manual_seed(recipe.seed)
    results = {"recipe": args.recipe, "overrides": args.overrides, "threads": torch.get_num_threads(),
               "before": {"spearman": sts_spearman(recipe.model.name, recipe)}}
    print(f"before: STS Spearman {results['before']['spearman']:.4f}")

    results["rewardlab"] = train_rewardlab(recipe)
    if not args.rewardlab_only:
        results["sentence_transformers"] = train_sentence_transformers(recipe, results["rewardlab"]["steps"], out)
    results["load_average"] = os.getloadavg()

    print(f"{'':24}{'STS Spearman':>14}{'steps/s':>10}{'CPU s/step':>12}")
    print(f"{'before training':24}{results['before']['spearman']:>14.4f}")
    for name in ("rewardlab", "sentence_transformers"):
        if name in results:
            r = results[name]
            print(f"{name:24}{r['spearman']:>14.4f}{r['steps_per_second']:>10.3f}{r['cpu_seconds_per_step']:>12.2f}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
