"""Train a reward model with TRL's RewardTrainer, then score it with rewardlab's evaluator.

The baseline for rewardlab's benchmarks: the same backbone, data and budget, trained by TRL (1.16 API) on raw
chosen/rejected rows (HH-RLHF implicit prompts are fine: TRL scores the whole transcripts). The trained model is
saved as a plain sequence-classification folder (LoRA merged) and evaluated twice: by TRL itself
(``trainer.evaluate``: accuracy averaged over eval batches, on the pairs TRL kept after dropping those longer
than ``max_length``) and by ``rewardlab eval`` on every pair of the file (over-long prompts cut from the left).

    python -m benchmarks.trl_reward --model minilm-l6 \\
        --train ../shared/data/hh-harmless-train.jsonl --eval ../shared/data/hh-harmless-dev.jsonl \\
        --max-length 512 --batch-size 8 --lr 3e-5 --epochs 1 --output-dir runs/trl-hh-minilm
    python -m benchmarks.trl_reward --model smollm2-135m --lora-r 16 --lr 2e-4 --max-length 384 \\
        --max-steps 50 ... --output-dir runs/trl-hh-smollm2

Settings match rewardlab's defaults: fp32, AdamW, linear decay without warmup, no weight decay, gradient
clipping at 1.0, backbone dropout off (LoRA dropout kept on, as rewardlab does), no gradient checkpointing.
Encoders have no EOS token; ``[SEP]`` is used (TRL appends it as text, so TRL's inputs end ``[SEP][SEP]``).
Writes ``OUTPUT_DIR/bench.json`` with both accuracies, steps, wall time and the pairs TRL dropped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import RewardConfig, RewardTrainer

from rewardlab.cli import main as cli
from rewardlab.models.loading import disable_dropout, is_encoder
from rewardlab.models.offline import resolve_offline


def read_rows(path: str) -> Dataset:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return Dataset.from_list([{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="minilm-l6, smollm2-135m, a hub id or a local folder")
    p.add_argument("--train", required=True)
    p.add_argument("--eval", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--lora-r", type=int, default=0, help="0 = full fine-tuning")
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    source = str(resolve_offline(args.model) or args.model)
    set_seed(args.seed)  # before loading: the reward head's initial weights
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    encoder = is_encoder(model.config)
    disable_dropout(model)  # the backbone's; LoRA's own dropout (added by TRL below) stays on, as in rewardlab
    peft_config = None
    if args.lora_r > 0:
        from peft import LoraConfig, TaskType

        peft_config = LoraConfig(task_type=TaskType.SEQ_CLS, r=args.lora_r, lora_alpha=args.lora_alpha,
                                 lora_dropout=args.lora_dropout, target_modules="all-linear")
    config = RewardConfig(
        output_dir=args.output_dir, seed=args.seed, learning_rate=args.lr, num_train_epochs=args.epochs,
        max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, max_length=args.max_length,
        eos_token="[SEP]" if encoder and tokenizer.eos_token is None else None,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        bf16=False, gradient_checkpointing=False, disable_dropout=False, report_to=[],
        save_strategy="no", eval_strategy="no", logging_steps=10, use_cpu=not torch.cuda.is_available(),
    )
    train_rows, eval_rows = read_rows(args.train), read_rows(args.eval)
    trainer = RewardTrainer(model=model, args=config, train_dataset=train_rows, eval_dataset=eval_rows,
                            processing_class=tokenizer, peft_config=peft_config)
    dropped = {"train": len(train_rows) - len(trainer.train_dataset),
               "eval": len(eval_rows) - len(trainer.eval_dataset)}
    print(f"TRL kept {len(trainer.train_dataset)}/{len(train_rows)} train and {len(trainer.eval_dataset)}/"
          f"{len(eval_rows)} eval pairs (dropped over max_length {args.max_length}: {dropped})", flush=True)

    start = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - start
    steps = trainer.state.global_step
    trl_eval = trainer.evaluate()
    print(f"TRL: {steps} steps in {train_seconds:.1f}s ({train_seconds / max(steps, 1):.2f} s/step); "
          f"TRL eval accuracy {trl_eval['eval_accuracy']:.4f} on {len(trainer.eval_dataset)} pairs", flush=True)

    final = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    final.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    metrics_path = Path(args.output_dir, "rewardlab-eval.json")
    cli.main([
        "eval", args.output_dir, "--data", args.eval, "--json", str(metrics_path),
        "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
    ])
    rewardlab_eval = json.loads(metrics_path.read_text())[args.eval]

    result = {
        "model": args.model, "lora_r": args.lora_r, "steps": steps, "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(steps, 1), 2), "train_loss": train_output.training_loss,
        "trl_eval_accuracy": trl_eval["eval_accuracy"], "trl_eval_pairs": len(trainer.eval_dataset),
        "rewardlab_eval_accuracy": rewardlab_eval["accuracy"], "rewardlab_eval_pairs": len(eval_rows),
        "dropped_by_trl": dropped, "eos_token": tokenizer.eos_token,
    }
    Path(args.output_dir, "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
