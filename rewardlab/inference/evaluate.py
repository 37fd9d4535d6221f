"""``rewardlab eval``: a saved model on data files, the metrics chosen by the model and the data.

- A reward model (or an ensemble) on preference files: :func:`rewardlab.evaluation.preferences.evaluation`'s
  metrics per file; a single model runs the batch layouts of training (packed, prefix-shared) for speed, an
  ensemble's members score padded rows and add their accuracy, disagreement, uncertainty against errors and
  calibration (:mod:`rewardlab.evaluation.uncertainty`).
- A sentence encoder (a SimCSE output, or any model with ``sentence1,sentence2,score`` files): STS Spearman
  (:mod:`rewardlab.evaluation.sts`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from rewardlab.data.examples import load_pairs
from rewardlab.data.sts import has_sts_columns, read_sts
from rewardlab.errors import RecipeError
from rewardlab.evaluation.preferences import (
    comparisons,
    ensemble_evaluation,
    evaluation,
    format_metrics,
    plot_rewards,
    score_examples,
)
from rewardlab.evaluation.sts import cosine_similarities, format_sts, sts_metrics
from rewardlab.evaluation.uncertainty import format_uncertainty, plot_reliability
from rewardlab.inference.scorer import RewardModel
from rewardlab.models.layouts import make_collator, resolve_attention, resolve_layout
from rewardlab.models.manifest import is_ensemble
from rewardlab.models.offline import resolve_offline
from rewardlab.models.saved import load_info
from rewardlab.models.sentence import load_sentence_encoder

Log = Callable[[str], None]


def is_sts(model: str, data: list[str]) -> bool:
    """Whether ``rewardlab eval`` measures STS: a SimCSE model, or ``sentence1,sentence2,score`` files."""
    return load_info(resolve_offline(model) or model).get("objective") == "simcse" or any(map(has_sts_columns, data))


def evaluate_files(model: str, data: list[str], split: str = "test", batch_size: int = 16,
                   max_length: int | None = None, layout: str = "auto", attention: str = "auto",
                   pooling: str | None = None, plot: str | None = None, log: Log = print,
                   show: Log = print) -> dict[str, dict]:
    """The metrics of ``model`` on every file of ``data`` (file → metrics); ``show`` gets each file's table and
    ``log`` what was read; ``plot`` is a folder for a PNG per file."""
    if is_sts(model, data):
        return evaluate_sts(model, data, split, batch_size, max_length, pooling, log, show)
    if is_ensemble(model) and (layout not in ("auto", "padded") or attention != "auto"):
        raise RecipeError("--layout and --attention: an ensemble's members score padded rows (token-budget batches, "
                          "as `rewardlab score` does); leave them out")
    scorer = RewardModel.load(model, max_length, attention=attention)
    if plot:
        Path(plot).mkdir(parents=True, exist_ok=True)
    if scorer.size > 1:
        log(f"{model}: {scorer.size} members combined by {scorer.combination.reward}, max_length {scorer.max_length}")
        return {path: evaluate_members(scorer, path, split, plot, log, show) for path in data}
    network = scorer.network
    chosen, note = resolve_layout(layout, network, key="--layout")
    attends = resolve_attention(network, key="--attention") if chosen != "padded" else "padded rows"
    log(f"{model}: layout {chosen}" + (f" ({note})" if note else "") + f", attention: {attends}"
        + f", max_length {scorer.max_length}")
    collate, member = make_collator(chosen, network), scorer.members[0]
    results = {}
    for path in data:
        encoded = load_pairs(path, split, scorer.policy, log)
        outputs = score_examples(network, encoded, collate, batch_size, network.device)
        results[path] = evaluation(encoded, outputs, member.reward)
        show(format_metrics(path, results[path]))
        if plot:
            chosen_rewards, rejected = comparisons(encoded, [[member.reward(o) for o in e] for e in outputs])
            plot_rewards(chosen_rewards, rejected, encoded, Path(plot) / f"{Path(path).stem}.png")
    return results


def evaluate_members(scorer: RewardModel, path: str, split: str, plot: str | None, log: Log, show: Log) -> dict:
    """An ensemble on one file: the combined reward's metrics and the members' (accuracy of each, disagreement,
    uncertainty against errors, calibration); ``plot`` adds a reliability plot."""
    encoded = load_pairs(path, split, scorer.policy, log)
    members = scorer.score_ids([e.prompt_ids + r for e in encoded for r in e.responses]).members
    metrics = ensemble_evaluation(encoded, members, scorer.combination)
    show(format_metrics(path, metrics))
    if "ensemble" in metrics:
        show(format_uncertainty(metrics["ensemble"]))
        if plot:
            plot_reliability(metrics["ensemble"]["calibration"], Path(plot) / f"{Path(path).stem}-reliability.png",
                             title=f"{Path(scorer.name).name} on {Path(path).name}")
    return metrics


def evaluate_sts(model: str, data: list[str], split: str = "test", batch_size: int = 16,
                 max_length: int | None = None, pooling: str | None = None, log: Log = print,
                 show: Log = print) -> dict[str, dict]:
    """STS Spearman of a sentence encoder (a SimCSE output, or any model pooled as ``pooling`` says)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder, tokenizer, info = load_sentence_encoder(model, pooling)
    encoder.to(device)
    max_length = max_length or info.get("max_length", 512)
    log(f"{model}: {encoder.pooling} pooling, max_length {max_length}")
    results = {}
    for path in data:
        pairs = read_sts(path, split)
        similarities = cosine_similarities(encoder, tokenizer, pairs, max_length, batch_size, device)
        results[path] = sts_metrics(similarities, pairs)
        show(format_sts(path, results[path]))
    return results
