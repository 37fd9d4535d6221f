"""Command line: ``rewardlab train | eval | score | serve | compare | bench | average``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import sys
import traceback
from pathlib import Path

from rewardlab.config import RecipeError
from rewardlab.data.rows import DataError, describe
from rewardlab.data.rows import messages as is_conversation


def cmd_train(args) -> None:
    from rewardlab.launcher import die_with_launcher

    die_with_launcher()  # now, not after the seconds that importing the training stack takes
    from rewardlab.config import load_recipe
    from rewardlab.train import train

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.ensemble.size > 1:
        from rewardlab.ensemble_training import train_ensemble

        train_ensemble(recipe, resume=args.resume or args.resume_changed, resume_changed=args.resume_changed)
        return
    train(recipe, resume=args.resume or args.resume_changed, resume_changed=args.resume_changed)


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
    from rewardlab.evaluate_sts import has_sts_columns
    from rewardlab.offline import resolve_offline
    from rewardlab.save import load_info

    # The metric follows from the model and the data: a SimCSE model, or sentence1,sentence2,score files → STS.
    if load_info(resolve_offline(args.model) or args.model).get("objective") == "simcse" or any(
        map(has_sts_columns, args.data)
    ):
        return _eval_sts(args)

    from rewardlab.evaluate import comparisons, evaluation, format_metrics, plot_rewards, score_examples
    from rewardlab.scoring import RewardModel
    from rewardlab.tasks.reward import load_pairs, make_collator, resolve_attention, resolve_layout

    def log(message):
        print(message, file=sys.stderr)

    from rewardlab.ensemble import is_ensemble

    if is_ensemble(args.model):
        return _eval_ensemble(args, log)
    reward_model = RewardModel.load(args.model, args.max_length, attention=args.attention)
    layout, note = resolve_layout(args.layout, reward_model.module, key="--layout")
    attention = resolve_attention(reward_model.module, key="--attention") if layout != "padded" else "padded rows"
    log(f"{args.model}: layout {layout}" + (f" ({note})" if note else "") + f", attention: {attention}"
        + f", max_length {reward_model.max_length}")
    collate = make_collator(layout, reward_model.module)
    results = {}
    for path in args.data:
        encoded = load_pairs(path, args.split, reward_model.policy, log)
        outputs = score_examples(reward_model.module, encoded, collate, args.batch_size, reward_model.module.device)
        results[path] = evaluation(encoded, outputs, reward_model.weighted)
        print(format_metrics(path, results[path]))
        if args.plot:
            chosen, rejected = comparisons(encoded, [[reward_model.weighted(o) for o in e] for e in outputs])
            Path(args.plot).mkdir(parents=True, exist_ok=True)
            plot_rewards(chosen, rejected, encoded, Path(args.plot) / f"{Path(path).stem}.png")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def _eval_ensemble(args, log) -> None:
    """``rewardlab eval ENSEMBLE``: the combined reward's metrics and the members' (accuracy of each, disagreement,
    uncertainty against errors, calibration); ``--plot`` adds a reliability plot per file."""
    from rewardlab.evaluate import ensemble_evaluation, format_metrics
    from rewardlab.scoring import load_scorer
    from rewardlab.tasks.reward import load_pairs
    from rewardlab.uncertainty import plot_reliability

    if args.layout not in ("auto", "padded") or args.attention != "auto":
        raise RecipeError("--layout and --attention: an ensemble's members score padded rows (token-budget batches, "
                          "as `rewardlab score` does); leave them out")
    scorer = load_scorer(args.model, args.max_length)
    log(f"{args.model}: {scorer.size} members combined by {scorer.reward}, max_length {scorer.max_length}")
    results = {}
    for path in args.data:
        encoded = load_pairs(path, args.split, scorer.policy, log)
        members = scorer.member_ids([e.prompt_ids + r for e in encoded for r in e.responses])
        results[path] = metrics = ensemble_evaluation(encoded, members, scorer.combine)
        print(format_metrics(path, metrics))
        if "ensemble" in metrics:
            print(format_ensemble(metrics["ensemble"]))
            if args.plot:
                Path(args.plot).mkdir(parents=True, exist_ok=True)
                plot_reliability(metrics["ensemble"]["calibration"], Path(args.plot) / f"{Path(path).stem}-reliability.png",
                                 title=f"{Path(args.model).name} on {Path(path).name}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def format_ensemble(m: dict) -> str:
    """The members' lines of an ensemble's evaluation."""
    lines = [f"  mean of {m['members']} members: accuracy {m['accuracy']:.4f}; members "
             + " ".join(f"{a:.4f}" for a in m["member_accuracy"]),
             f"  disagreement            margin std {m['disagreement']['margin_std']:.4f}, members split on "
             f"{m['disagreement']['winner_disagreement']:.1%} of pairs",
             f"  calibration             ECE {m['calibration']['ece']:.4f} (mean confidence "
             f"{m['calibration']['mean_confidence']:.4f})"]
    u = m["uncertainty_vs_error"]
    if not u["defined"]:
        return "\n".join(lines + [f"  uncertainty             {u['reason']}"])
    for name in ("half", "quarter"):
        if u[name]:
            lines.append(f"  error, most / least uncertain {name}: {u[name]['most_uncertain']['error_rate']:.4f} / "
                         f"{u[name]['least_uncertain']['error_rate']:.4f} ({u[name]['pairs']} pairs each)")
    return "\n".join(lines)


SCORE_CHUNK = 1024  # rows read, scored and written at a time


def cmd_score(args) -> None:
    from tqdm.auto import tqdm

    from rewardlab.data.rows import iter_rows
    from rewardlab.scoring import ScoringError, load_scorer

    rows = iter_rows(args.input)
    first = next(rows, None)  # a missing or malformed input fails here, before the model loads
    if first is None:
        raise DataError(f"{args.input}: no rows to score")
    with replaced_on_success(Path(args.output)) as out:
        model = load_scorer(args.model, args.max_length, args.token_budget, trust_remote_code=args.trust_remote_code,
                            reward=args.ensemble_reward, std_weight=args.std_weight)
        if args.members and not hasattr(model, "score_members"):
            raise ScoringError(f"--members: {args.model} is one model, not an ensemble (no ensemble.json)")
        set_reward_weights(model, args.reward_weights)
        if args.normalize:
            model.normalize([])  # fail before scoring anything when the model has no statistics
        total = _count_lines(args.input) if args.input.endswith(".jsonl") else None
        with tqdm(total=total, unit="row", file=sys.stderr) as bar:
            chunk = [first]
            for row in rows:
                if len(chunk) == SCORE_CHUNK:
                    _score_chunk(model, chunk, args, out)
                    bar.update(len(chunk))
                    chunk = []
                chunk.append(row)
            _score_chunk(model, chunk, args, out)
            bar.update(len(chunk))
    if model.report.truncated_prompt or model.report.truncated_response:
        print(f"over max_length={model.max_length}: {model.report.truncated_prompt} prompts and "
              f"{model.report.truncated_response} responses cut from the left", file=sys.stderr)


@contextlib.contextmanager
def replaced_on_success(path: Path):
    """A text file to write that becomes ``path`` only once everything is written: an error, an interruption or an
    output that is also the input leaves ``path`` as it was until the end. Nothing in the standard library or the
    dependencies does this (a temporary file beside ``path``, then an atomic rename)."""
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out = temporary.open("x", encoding="utf-8")
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path} ({e.strerror})") from None
    try:
        with out:
            yield out
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _count_lines(path: str) -> int:
    """Rows of a JSON-lines file, for the progress bar."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _score_chunk(model, chunk: list[tuple[dict, str]], args, out) -> None:
    """Score every row of ``chunk`` in one token-budget run and write the rows with their rewards."""
    from rewardlab.scoring import ScoringError

    sequences = [_row_sequences(model, row, origin, args.best_of_n) for row, origin in chunk]
    if hasattr(model, "score_members"):
        return _score_ensemble_chunk(model, chunk, sequences, args, out)
    outputs = model.score_ids([s for seqs in sequences for s in seqs], attributes=True)
    flat = [model.weighted(o) for o in outputs]
    if args.normalize:
        flat = model.normalize(flat)
    start = 0
    for (row, origin), seqs in zip(chunk, sequences):
        rewards, start = flat[start : start + len(seqs)], start + len(seqs)
        if not all(math.isfinite(r) for r in rewards):
            raise ScoringError(f"{origin}: the model gave a non-finite reward ({rewards}); its weights are broken "
                               f"(a training run that diverged?); {args.output} was left as it was")
        if args.best_of_n:
            best = max(range(len(rewards)), key=rewards.__getitem__)
            responses = row["responses"]
            row = {k: v for k, v in row.items() if k != "responses"}
            row.update(response=responses[best], reward=rewards[best], rewards=rewards)
        else:
            row["reward"] = rewards[0]
            if model.attributes:  # a multi-attribute model: every attribute, beside the weighted reward
                row["attributes"] = dict(zip(model.attributes, outputs[start - 1]))
        out.write(_json_line(row, origin))


def _score_ensemble_chunk(model, chunk, sequences: list[list[list[int]]], args, out) -> None:
    """An ensemble's rows: ``reward`` (the combination), ``reward_mean`` and ``reward_std`` across members, and with
    ``--members`` every member's reward (``member_rewards``); ``--best-of-n`` keeps the best by the combination."""
    from rewardlab.scoring import ScoringError

    members = model.member_ids([s for seqs in sequences for s in seqs], normalize=args.normalize)
    summary = model.summary(members)
    start = 0
    for (row, origin), seqs in zip(chunk, sequences):
        span = range(start, start + len(seqs))
        start += len(seqs)
        rewards = [summary["rewards"][i] for i in span]
        if not all(math.isfinite(members[k][i]) for k in range(len(members)) for i in span):
            raise ScoringError(f"{origin}: a member gave a non-finite reward; its weights are broken; {args.output} "
                               "was left as it was")
        pick = max(span, key=summary["rewards"].__getitem__) if args.best_of_n else span[0]
        if args.best_of_n:
            responses = row["responses"]
            row = {k: v for k, v in row.items() if k != "responses"}
            row.update(response=responses[pick - span[0]], rewards=rewards)
        row.update(reward=summary["rewards"][pick], reward_mean=summary["mean"][pick], reward_std=summary["std"][pick])
        if args.members:
            row["member_rewards"] = [m[pick] for m in members]
        out.write(_json_line(row, origin))


def _json_line(row: dict, origin: str) -> str:
    """``row`` as one line of JSON; timestamps (parquet) are written as ISO text, and what JSON cannot hold (NaN,
    bytes) is an error naming the row."""

    def plain(value):
        if hasattr(value, "isoformat"):
            return value.isoformat()
        raise TypeError(f"a {type(value).__name__} value is not JSON")

    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False, default=plain) + "\n"
    except (TypeError, ValueError) as e:
        raise DataError(f"{origin}: the row cannot be written back as JSON ({e})") from None


def _row_sequences(model, row: dict, origin: str, best_of_n: bool) -> list[list[int]]:
    """Token ids of a row's response(s): ``prompt`` + ``response``, ``messages`` (the last one is the response),
    one whole ``text``, or with ``--best-of-n`` ``prompt`` + ``responses`` (a list)."""
    from rewardlab.scoring import ScoringError

    try:
        if best_of_n:
            responses = row.get("responses")
            if "prompt" not in row or not isinstance(responses, list) or not responses:
                raise ScoringError(f"--best-of-n rows need 'prompt' and 'responses' (a non-empty list); "
                                   f"columns present: {', '.join(map(str, row)) or 'none'}")
            prompt = _text(row["prompt"], "prompt", origin)
            return [model.encode(prompt, _text(r, "responses", origin)) for r in responses]
        if "text" in row:
            return [model.encode_text(_text(row["text"], "text", origin, conversation=False))]
        if "messages" in row:
            messages = row["messages"]
            if not is_conversation(messages, "messages", origin) or not messages:
                raise ScoringError(f"column 'messages' must be a non-empty list of {{role, content}} messages, "
                                   f"got {describe(messages)}")
            return [model.encode(messages[:-1], messages[-1:])]
        if "prompt" in row and "response" in row:
            return [model.encode(_text(row["prompt"], "prompt", origin), _text(row["response"], "response", origin))]
        hint = " (rows with several responses need --best-of-n)" if "responses" in row else ""
        raise ScoringError(f"expected columns prompt + response, messages, or text{hint}; "
                           f"columns present: {', '.join(map(str, row)) or 'none'}")
    except ScoringError as e:
        raise DataError(f"{origin}: {e}") from None


def _text(value, column: str, origin: str, conversation: bool = True):
    """A prompt or response: a string or (unless ``conversation`` is False) a list of messages."""
    from rewardlab.scoring import ScoringError

    if isinstance(value, str) or (conversation and is_conversation(value, column, origin)):
        return value
    kinds = "a string or a list of {role, content} messages" if conversation else "a string"
    raise ScoringError(f"column '{column}' must be {kinds}, got {describe(value)}")


def cmd_serve(args) -> None:
    from rewardlab.scoring import load_scorer
    from rewardlab.serve import serve

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it", file=sys.stderr)
    model = load_scorer(args.model, args.max_length, args.token_budget, trust_remote_code=args.trust_remote_code,
                        reward=args.ensemble_reward, std_weight=args.std_weight)
    set_reward_weights(model, args.reward_weights)
    serve(model, args.host, args.port, api_key=args.api_key, max_items=args.max_items, merge=not args.no_merge,
          normalize=args.normalize)


def cmd_compare(args) -> None:
    from rewardlab.compare import compare
    from rewardlab.config import Comparison, load_comparison, load_recipe, read_yaml

    first = Path(args.recipes[0])
    contents = read_yaml(first) if len(args.recipes) == 1 else {}
    if isinstance(contents, dict) and "runs" in contents:
        comparison = load_comparison(first)
    else:
        comparison = Comparison(runs=args.recipes, overrides=args.set, output_dir=args.output)
        for run in comparison.runs:
            load_recipe(run, comparison.overrides)
    compare(comparison)


def cmd_bench(args) -> None:
    import importlib

    from rewardlab.rewardbench import DEFAULT_SECTIONS, build_report, load_sections, read_bench, score_rows, write_report
    from rewardlab.scoring import load_scorer

    for package in ("matplotlib", "scipy"):  # the plots and the calibration: missing, it fails before scoring
        importlib.import_module(package)
    sections = load_sections(args.sections)
    rows = read_bench(args.data, args.subset_column, args.split)  # bad data fails here, before the model loads
    model = load_scorer(args.model, args.max_length, args.token_budget, trust_remote_code=args.trust_remote_code,
                        reward=args.ensemble_reward, std_weight=args.std_weight)
    set_reward_weights(model, args.reward_weights)
    results, members = score_rows(model, rows)
    report = build_report(rows, results, sections, members, args.bins)
    report |= {"model": args.model, "data": args.data, "sections_file": str(args.sections or DEFAULT_SECTIONS)}
    output = Path(args.output or Path("runs") / "bench" / Path(args.model.rstrip("/")).name)
    print(write_report(report, rows, results, output, args.model), end="")
    cut = getattr(model, "report", None)
    if cut is not None and (cut.truncated_prompt or cut.truncated_response):
        print(f"over max_length={model.max_length}: {cut.truncated_prompt} prompts and {cut.truncated_response} "
              f"responses cut from the left", file=sys.stderr)
    print(f"wrote {output}/report.json, report.md, rows.jsonl and the plots", file=sys.stderr)
def cmd_average(args) -> None:
    from rewardlab.averaging import average, member_folders

    folders = member_folders(args.members, args.member)
    out = average(folders, args.output)
    print(f"averaged {len(folders)} members ({', '.join(map(str, folders))}) into {out}", file=sys.stderr)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0-65535), got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a reward model from a YAML recipe")
    p.add_argument("recipe", nargs="?", help="recipe file (default: recipes/quickstart.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. max_steps=10 model.lora.r=8")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in output_dir")
    p.add_argument("--resume-changed", action="store_true",
                   help="--resume, and continue although the recipe differs from the checkpoint's in keys that matter")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a reward model on preference files, or a sentence encoder on STS files")
    p.add_argument("model", help="a saved model folder, offline name or hub id")
    p.add_argument("--data", action="append", required=True,
                   help="preference file or hub dataset, or an STS file (sentence1,sentence2,score) (repeatable)")
    p.add_argument("--split", default="test", help="split for hub datasets (default: test)")
    p.add_argument("--json", help="write the metrics per file to this JSON file")
    p.add_argument("--plot", help="write a PNG per file into this folder")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--max-length", type=positive_int, help="default: the length the model was trained with, else 512")
    p.add_argument("--layout", default="auto", choices=("auto", "padded", "packed", "prefix_shared"),
                   help="how pairs become rows (as in training; default: auto, the fastest exact one)")
    p.add_argument("--attention", default="auto", choices=("auto", "dense", "blocks"),
                   help="how packed rows attend (as in training; default: auto, blocks where exact)")
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
    p.add_argument("--members", action="store_true",
                   help="an ensemble: every member's reward too ('member_rewards'; 'reward_mean' and 'reward_std' "
                        "are always written)")
    _scoring_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("serve", help="serve a reward model over HTTP (POST /score, POST /get_reward, GET /health)")
    p.add_argument("model", help="a saved model folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    p.add_argument("--port", type=port, default=8000)
    p.add_argument("--api-key", default=os.environ.get("REWARDLAB_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $REWARDLAB_API_KEY, else no key)")
    p.add_argument("--normalize", action="store_true", help="(reward - mean) / std with the saved statistics")
    p.add_argument("--max-items", type=positive_int, default=4096, help="most items in one request")
    p.add_argument("--no-merge", action="store_true", help="one forward pass per request (for comparison)")
    _scoring_options(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("compare", help="train several recipes and compare their results")
    p.add_argument("recipes", nargs="+", help="recipe files, or one comparison file (runs:, overrides:, output_dir:)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--output", default="runs/compare", help="output folder (default: runs/compare)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="a RewardBench-style report: accuracy per subset and section, calibration")
    p.add_argument("model", help="a saved model folder, offline name or hub id")
    p.add_argument("--data", nargs="+", action="extend", required=True, metavar="FILE_OR_DIR",
                   help="RewardBench v1 rows (prompt, chosen, rejected, subset) or RewardBench 2 rows (rejected: a "
                        "list); a folder stands for its data files")
    p.add_argument("--sections", help="YAML file: section -> {subset: weight} (default: RewardBench's sections, "
                                      "rewardlab/rewardbench_sections.yaml)")
    p.add_argument("--output", help="folder for report.json, report.md, rows.jsonl and the plots "
                                    "(default: runs/bench/MODEL_NAME)")
    p.add_argument("--subset-column", default="subset",
                   help="column naming each row's subset (default: subset); rows without it take the file's name")
    p.add_argument("--split", default="test", help="split for hub datasets (default: test)")
    p.add_argument("--bins", type=positive_int, default=10, help="equal-width confidence bins of the calibration "
                                                                 "error (default: 10)")
    _scoring_options(p)
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("average", help="average reward models fine-tuned from one initialisation into one (WARM)")
    p.add_argument("members", nargs="+", help="model folders, or one ensemble folder")
    p.add_argument("--member", type=int, action="append", metavar="I",
                   help="of an ensemble folder, only member I (repeatable; one member alone: that member as a plain "
                        "model folder, LoRA merged)")
    p.add_argument("--output", required=True, help="the averaged model's folder (new or empty)")
    p.set_defaults(func=cmd_average)
    return parser


def set_reward_weights(model, weights: list[float] | None) -> None:
    """``--reward-weights``: one weight per attribute of a multi-attribute model."""
    if weights is None:
        return
    from rewardlab.scoring import ScoringError

    if len(weights) != len(model.attributes):
        raise ScoringError(f"--reward-weights needs one weight per attribute of {model.name} "
                           f"({', '.join(model.attributes) or 'it rates none'}), got {len(weights)}")
    model.reward_weights = weights


def _scoring_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code a model folder or hub repo ships (auto_map); off by default")
    p.add_argument("--max-length", type=positive_int, help="default: the length the model was trained with, else 512")
    p.add_argument("--reward-weights", type=float, nargs="+", metavar="W",
                   help="a multi-attribute model: the weight of each attribute in the reward (default: the saved ones)")
    p.add_argument("--token-budget", type=positive_int,
                   help="most padded tokens (rows x longest row) in one forward pass (default: 16384 on a GPU, "
                        "2048 on CPU)")
    p.add_argument("--ensemble-reward", choices=("mean", "min", "mean_minus_std"),
                   help="an ensemble: how its members combine (default: its manifest's)")
    p.add_argument("--std-weight", type=float, metavar="LAMBDA",
                   help="an ensemble: lambda in mean - lambda * std (default: its manifest's)")


# Packages behind optional features: the extra that installs each.
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "pydantic": "serve", "tensorboard": "tensorboard",
          "matplotlib": "plot", "scipy": "plot", "PIL": "clip", "gguf": "smollm2"}
DEBUG = "REWARDLAB_DEBUG"  # set to 1 for the full traceback of any failure


def main(argv: list[str] | None = None) -> int:
    """Run one command. Mistakes in what was given (recipes, data and chat templates, paths, missing packages) are a
    one-line ``error: ...`` and exit status 2; anything else is a bug in rewardlab: one line naming where it
    happened, exit status 1, and the traceback with ``REWARDLAB_DEBUG=1``."""
    args = build_parser().parse_args(argv)
    # `rewardlab train key=value` without a recipe: the first positional is an override, not a file.
    if args.command == "train" and args.recipe and "=" in args.recipe and not Path(args.recipe).exists():
        args.overrides, args.recipe = [args.recipe, *args.overrides], None
    try:
        if getattr(args, "model", None):
            _check_model_path(args.model)
        args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG, "") not in ("", "0"):
            raise
        message, status = describe_failure(e)
        print("error: " + " ".join(line.strip() for line in message.splitlines() if line.strip()), file=sys.stderr)
        return status
    return 0


def _check_model_path(name: str) -> None:
    """A name like ``runs/typo`` whose folder ``runs`` is here is a local path that does not exist, not a hub id to
    look up (which would only fail after minutes of retries offline)."""
    path = Path(name)
    if not path.exists() and str(path.parent) not in ("", ".") and path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such model folder", name)


def describe_failure(e: Exception) -> tuple[str, int]:
    """(one-line message, exit status) for an exception that ended a command."""
    from rewardlab.compare import RunFailed

    if isinstance(e, (RecipeError, DataError, RunFailed)):
        return str(e), 2
    if isinstance(e, ModuleNotFoundError) and not (e.name or "").startswith("rewardlab"):
        if "pip install" in str(e):  # rewardlab's own message, with the command
            return str(e), 2
        top = (e.name or "").split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'rewardlab[{extra}]'" if extra else f"pip install {top}"
        return f"this needs the '{top}' package, which is not installed: {hint}", 2
    if isinstance(e, OSError):
        if e.strerror and e.filename:
            return f"{e.strerror}: {e.filename}", 2
        return e.strerror or str(e), 2
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return (f"internal error: {type(e).__name__}: {e} (at {frame.filename}:{frame.lineno} in {frame.name}). This is "
            f"a bug in rewardlab: please report it with the traceback that {DEBUG}=1 prints"), 1


if __name__ == "__main__":
    sys.exit(main())
