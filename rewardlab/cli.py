"""Command line: ``rewardlab train | eval | score | serve``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rewardlab.config import RecipeError
from rewardlab.data.formats import DataError


def cmd_train(args) -> None:
    from rewardlab.config import load_recipe
    from rewardlab.train import train

    recipe = load_recipe(args.recipe, args.overrides)
    train(recipe, resume=args.resume)


def _eval_sts(args) -> None:
    """STS Spearman of a sentence encoder (a SimCSE output, or any model pooled as ``--pooling`` says)."""
    import torch

    from rewardlab.evaluate_sts import cosine_similarities, format_sts, read_sts, sts_metrics
    from rewardlab.tasks.simcse import load_sentence_encoder

    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder, tokenizer, info = load_sentence_encoder(args.model, args.pooling)
    encoder.to(device)
    max_length = args.max_length or info.get("max_length", 512)
    print(f"{args.model}: {encoder.pooling} pooling, max_length {max_length}", file=sys.stderr)
    results = {}
    for path in args.data:
        pairs = read_sts(path, args.split)
        similarities = cosine_similarities(encoder, tokenizer, pairs, max_length, args.batch_size, device)
        results[path] = sts_metrics(similarities, pairs)
        print(format_sts(path, results[path]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def cmd_eval(args) -> None:
    import torch

    from rewardlab.evaluate_sts import has_sts_columns
    from rewardlab.offline import resolve_offline
    from rewardlab.save import load_info

    # The metric follows from the model and the data: a SimCSE model, or sentence1,sentence2,score files → STS.
    if load_info(resolve_offline(args.model) or args.model).get("objective") == "simcse" or any(
        map(has_sts_columns, args.data)
    ):
        return _eval_sts(args)

    from rewardlab.backbones import Backbone
    from rewardlab.data.encode import PairEncoder
    from rewardlab.data.formats import read_pairs
    from rewardlab.evaluate import format_metrics, plot_rewards, preference_metrics, score_pairs
    from rewardlab.heads import RewardScorer
    from rewardlab.scoring import load_reward_model
    from rewardlab.tasks.reward import chat_renderer, make_collator, resolve_layout

    model, tokenizer, encoder, info = load_reward_model(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    pair_encoder = PairEncoder(tokenizer, encoder, args.max_length or info.get("max_length", 512), "truncate")
    collator = make_collator(resolve_layout("auto", encoder), Backbone(model, tokenizer, encoder))
    results = {}
    for path in args.data:
        pairs, read_report = read_pairs(path, args.split, chat_renderer(tokenizer))
        encoded, encode_report = pair_encoder.encode_pairs(pairs, path)
        print(f"{path}: {read_report.summary()}; {encode_report.summary()}", file=sys.stderr)
        chosen, rejected = score_pairs(RewardScorer(model), encoded, collator, args.batch_size, device)
        results[path] = preference_metrics(chosen, rejected, encoded)
        print(format_metrics(path, results[path]))
        if args.plot:
            Path(args.plot).mkdir(parents=True, exist_ok=True)
            plot_rewards(chosen, rejected, encoded, Path(args.plot) / f"{Path(path).stem}.png")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


SCORE_CHUNK = 1024  # rows read, scored and written at a time


def cmd_score(args) -> None:
    from tqdm.auto import tqdm

    from rewardlab.data.formats import iter_rows
    from rewardlab.scoring import RewardModel

    model = RewardModel.load(args.model, args.max_length, args.token_budget)
    if args.normalize:
        model.normalize([])  # fail before reading anything when the model has no statistics
    total = _count_lines(args.input) if args.input.endswith(".jsonl") else None
    with open(args.output, "w", encoding="utf-8") as out, tqdm(total=total, unit="row", file=sys.stderr) as bar:
        chunk = []
        for row, origin in iter_rows(args.input):
            chunk.append((row, origin))
            if len(chunk) == SCORE_CHUNK:
                _score_chunk(model, chunk, args, out)
                bar.update(len(chunk))
                chunk = []
        if chunk:
            _score_chunk(model, chunk, args, out)
            bar.update(len(chunk))
    if model.report.truncated_prompt or model.report.truncated_response:
        print(f"over max_length={model.max_length}: {model.report.truncated_prompt} prompts and "
              f"{model.report.truncated_response} responses cut from the left", file=sys.stderr)


def _count_lines(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None  # iter_rows names the missing file


def _score_chunk(model, chunk: list[tuple[dict, str]], args, out) -> None:
    """Score every row of ``chunk`` in one token-budget run and write the rows with their rewards."""
    sequences = [_row_sequences(model, row, origin, args.best_of_n) for row, origin in chunk]
    flat = model.score_ids([s for seqs in sequences for s in seqs])
    if args.normalize:
        flat = model.normalize(flat)
    start = 0
    for (row, _), seqs in zip(chunk, sequences):
        rewards, start = flat[start : start + len(seqs)], start + len(seqs)
        if args.best_of_n:
            best = max(range(len(rewards)), key=rewards.__getitem__)
            responses = row["responses"]
            row = {k: v for k, v in row.items() if k != "responses"}
            row.update(response=responses[best], reward=rewards[best], rewards=rewards)
        else:
            row["reward"] = rewards[0]
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _row_sequences(model, row: dict, origin: str, best_of_n: bool) -> list[list[int]]:
    """Token ids of a row's response(s): ``prompt`` + ``response``, ``messages`` (the last one is the response),
    one whole ``text``, or with ``--best-of-n`` ``prompt`` + ``responses`` (a list)."""
    from rewardlab.scoring import ScoringError, is_messages

    try:
        if best_of_n:
            responses = row.get("responses")
            if "prompt" not in row or not isinstance(responses, list) or not responses:
                raise ScoringError(f"--best-of-n rows need 'prompt' and 'responses' (a non-empty list); "
                                   f"columns present: {', '.join(map(str, row)) or 'none'}")
            prompt = _text(row["prompt"], "prompt")
            return [model.encode(prompt, _text(r, "responses")) for r in responses]
        if "text" in row:
            return [model.encode_text(_text(row["text"], "text", messages=False))]
        if "messages" in row:
            messages = row["messages"]
            if not is_messages(messages) or not messages:
                raise ScoringError("column 'messages' must be a non-empty list of {role, content} messages")
            return [model.encode(messages[:-1], messages[-1:])]
        if "prompt" in row and "response" in row:
            return [model.encode(_text(row["prompt"], "prompt"), _text(row["response"], "response"))]
        hint = " (rows with several responses need --best-of-n)" if "responses" in row else ""
        raise ScoringError(f"expected columns prompt + response, messages, or text{hint}; "
                           f"columns present: {', '.join(map(str, row)) or 'none'}")
    except ScoringError as e:
        raise DataError(f"{origin}: {e}") from None


def _text(value, column: str, messages: bool = True):
    from rewardlab.scoring import ScoringError, is_messages

    if isinstance(value, str) or (messages and is_messages(value)):
        return value
    kinds = "a string or a list of {role, content} messages" if messages else "a string"
    raise ScoringError(f"column '{column}' must be {kinds}, got {type(value).__name__}")


def cmd_serve(args) -> None:
    from rewardlab.scoring import RewardModel
    from rewardlab.serve import serve

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it", file=sys.stderr)
    model = RewardModel.load(args.model, args.max_length, args.token_budget, trust_remote_code=args.trust_remote_code)
    serve(model, args.host, args.port, api_key=args.api_key, max_items=args.max_items, merge=not args.no_merge,
          normalize=args.normalize)


def cmd_compare(args) -> None:
    import yaml

    from rewardlab.compare import compare
    from rewardlab.config import Comparison, load_comparison, load_recipe

    first = Path(args.recipes[0])
    if len(args.recipes) == 1 and first.is_file() and "runs" in (yaml.safe_load(first.read_text()) or {}):
        comparison = load_comparison(first)
    else:
        comparison = Comparison(runs=args.recipes, overrides=args.set, output_dir=args.output)
        for run in comparison.runs:
            load_recipe(run, comparison.overrides)
    compare(comparison)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a reward model from a YAML recipe")
    p.add_argument("recipe", nargs="?", help="recipe file (default: recipes/quickstart.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. max_steps=10 model.lora.r=8")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a reward model on preference files, or a sentence encoder on STS files")
    p.add_argument("model", help="a saved model folder, offline name or hub id")
    p.add_argument("--data", action="append", required=True,
                   help="preference file or hub dataset, or an STS file (sentence1,sentence2,score) (repeatable)")
    p.add_argument("--split", default="test", help="split for hub datasets (default: test)")
    p.add_argument("--json", help="write the metrics per file to this JSON file")
    p.add_argument("--plot", help="write a PNG per file into this folder")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, help="default: the length the model was trained with, else 512")
    p.add_argument("--pooling", choices=("cls", "mean", "last"),
                   help="STS: sentence embedding pooling (default: the saved model's, else mean for encoders and "
                        "last for causal LMs)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="add a reward to every row of a file")
    p.add_argument("model", help="a saved model folder or hub id")
    p.add_argument("--input", required=True, help="rows with prompt + response, messages, or text (.jsonl, ...)")
    p.add_argument("--output", required=True, help="JSON lines: each input row with a 'reward' field")
    p.add_argument("--best-of-n", action="store_true",
                   help="rows hold 'prompt' + 'responses' (a list); keep the best as 'response' with its 'reward' "
                        "(all rewards under 'rewards')")
    p.add_argument("--normalize", action="store_true", help="(reward - mean) / std with the saved statistics")
    _scoring_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("serve", help="serve a reward model over HTTP (POST /score, POST /get_reward, GET /health)")
    p.add_argument("model", help="a saved model folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("REWARDLAB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $REWARDLAB_API_KEY, else no key)")
    p.add_argument("--normalize", action="store_true", help="(reward - mean) / std with the saved statistics")
    p.add_argument("--max-items", type=int, default=4096, help="most items in one request")
    p.add_argument("--no-merge", action="store_true", help="one forward pass per request (for comparison)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code a model folder or hub repo ships (auto_map); off by default")
    _scoring_options(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("compare", help="train several recipes and compare their results")
    p.add_argument("recipes", nargs="+", help="recipe files, or one comparison file (runs:, overrides:, output_dir:)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--output", default="runs/compare", help="output folder (default: runs/compare)")
    p.set_defaults(func=cmd_compare)
    return parser


def _scoring_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-length", type=int, help="default: the length the model was trained with, else 512")
    p.add_argument("--token-budget", type=int,
                   help="most padded tokens (rows x longest row) in one forward pass (default: 16384 on a GPU, "
                        "2048 on CPU)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `rewardlab train key=value` without a recipe: the first positional is an override, not a file.
    if args.command == "train" and args.recipe and "=" in args.recipe and not Path(args.recipe).exists():
        args.overrides, args.recipe = [args.recipe, *args.overrides], None
    try:
        args.func(args)
    except (RecipeError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
