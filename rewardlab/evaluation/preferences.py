"""Evaluation of a reward model on preference pairs: accuracy, margins, reward statistics and length bias."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from rewardlab.data.collate import sequence_order


@torch.no_grad()
def score_examples(model: torch.nn.Module, examples: list, collator, batch_size: int, device) -> list[list[float]]:
    """The rewards of every example's responses, in input order, from a :class:`~rewardlab.models.reward.RewardNetwork`
    (possibly wrapped by Accelerate); batches are formed from length-sorted examples so little is spent on padding."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: examples[i].length)
    rewards: list[list[float]] = [[] for _ in examples]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collator([examples[i] for i in idx])
        values = model(batch.to(device)).float().tolist()
        for (g, _), value in zip(sequence_order([examples[i] for i in idx]), values):
            rewards[idx[g]].append(value)
    model.train(was_training)
    return rewards


def comparisons(examples: list, rewards: list[list[float]]) -> tuple[list[float], list[float]]:
    """(better, worse) rewards of every comparison (edge), example by example: for pairs, (chosen, rejected)."""
    better = [r[i] for e, r in zip(examples, rewards) for i, _ in e.edges]
    worse = [r[j] for e, r in zip(examples, rewards) for _, j in e.edges]
    return better, worse


def score_pairs(model: torch.nn.Module, examples: list, collator, batch_size: int, device):
    """(chosen, rejected) rewards of every comparison of ``examples`` (for pairs: of every pair), in input order."""
    return comparisons(examples, score_examples(model, examples, collator, batch_size, device))


def _edges(examples: list) -> list[tuple[int, int, str]]:
    """(better response's length, worse response's length, source) of every comparison, as :func:`comparisons`."""
    return [(len(e.responses[i]), len(e.responses[j]), e.source) for e in examples for i, j in e.edges]


def _pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def evaluation(examples: list, outputs: list[list], reward=None, attributes: list[str] = ()) -> dict:
    """Every metric of a reward model's ``outputs`` (per example, per response: a reward, or one output per
    attribute) on ``examples``: :func:`response_metrics`, :func:`preference_metrics` where there are comparisons,
    :func:`attribute_metrics` for rated attributes. ``reward`` maps a response's outputs to its reward."""
    reward = reward or (lambda output: output)
    rewards = [[float(reward(o)) for o in example] for example in outputs]
    metrics = response_metrics([r for rs in rewards for r in rs],
                               [len(response) for e in examples for response in e.responses])
    better, worse = comparisons(examples, rewards)
    if better:
        metrics |= preference_metrics(better, worse, examples)
    if attributes:
        metrics |= attribute_metrics(outputs, examples, attributes)
    return metrics


def ensemble_evaluation(examples: list, members: list[list[float]], combine, bins: int = 10) -> dict:
    """:func:`evaluation` of an ensemble's combined reward, plus, under ``ensemble``, the statistics of
    :func:`rewardlab.evaluation.uncertainty.uncertainty_report` over its members' comparisons: accuracy of the mean and
    of each member, disagreement, error rates on the most and least uncertain pairs, calibration.

    ``members``: [members][responses], every example's responses in order; ``combine`` maps it to one reward each."""
    from rewardlab.evaluation.uncertainty import uncertainty_report

    def per_example(rewards: list[float]) -> list[list[float]]:
        out, start = [], 0
        for example in examples:
            out.append(rewards[start : start + len(example.responses)])
            start += len(example.responses)
        return out

    metrics = evaluation(examples, per_example(combine(members)))
    if "pairs" in metrics:
        sides = [comparisons(examples, per_example(rewards)) for rewards in members]
        metrics["ensemble"] = uncertainty_report([c for c, _ in sides], [r for _, r in sides], bins)
    return metrics


def response_metrics(rewards: list[float], lengths: list[int]) -> dict:
    """Over every response: ``reward_mean`` / ``reward_std`` (the statistics saved for normalisation) and
    ``length_correlation``, the Pearson correlation of reward with response length in tokens."""
    mean = sum(rewards) / len(rewards)
    return {"responses": len(rewards), "reward_mean": mean,
            "reward_std": math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)),
            "length_correlation": _pearson(rewards, [float(x) for x in lengths])}


def preference_metrics(chosen: list[float], rejected: list[float], pairs: list) -> dict:
    """Pairwise metrics over every comparison (for pairs: every pair; for rankings and preference graphs: every
    edge, as :func:`comparisons` orders them). A tie (equal rewards) counts as wrong and is reported in ``ties``.

    - ``accuracy``: share of comparisons with r_chosen > r_rejected
    - ``mean_margin``: mean of r_chosen − r_rejected
    - ``shorter_chosen_accuracy``: accuracy on the comparisons whose chosen response is the shorter one (a reward
      model that just prefers long answers fails these); ``shorter_chosen_pairs`` counts them
    - ``accuracy_by_source``: accuracy per ``source`` value, when the data has sources
    """
    n = len(chosen)
    wins = [c > r for c, r in zip(chosen, rejected)]
    edges = _edges(pairs)
    shorter = [win for win, (b, w, _) in zip(wins, edges) if b < w]
    metrics = {
        "pairs": n,
        "accuracy": sum(wins) / n,
        "ties": sum(c == r for c, r in zip(chosen, rejected)),
        "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "shorter_chosen_accuracy": sum(shorter) / len(shorter) if shorter else float("nan"),
        "shorter_chosen_pairs": len(shorter),
    }
    by_source = defaultdict(list)
    for win, (_, _, source) in zip(wins, edges):
        if source:
            by_source[source].append(win)
    if by_source:
        metrics["accuracy_by_source"] = {s: sum(v) / len(v) for s, v in sorted(by_source.items())}
    return metrics


def attribute_metrics(outputs: list[list], examples: list, attributes: list[str]) -> dict:
    """Per rated attribute: root mean squared error and Pearson correlation of the outputs with the ratings;
    ``rmse`` is the mean RMSE over attributes."""
    predicted = [o for example in outputs for o in example]
    truth = [t for e in examples for t in e.targets]
    rmse = {a: math.sqrt(sum((p[k] - t[k]) ** 2 for p, t in zip(predicted, truth)) / len(truth))
            for k, a in enumerate(attributes)}
    correlation = {a: _pearson([p[k] for p in predicted], [t[k] for t in truth]) for k, a in enumerate(attributes)}
    return {"rmse": sum(rmse.values()) / len(rmse), "rmse_by_attribute": rmse, "correlation_by_attribute": correlation}


def format_metrics(name: str, m: dict) -> str:
    """A small text table of one evaluation."""
    lines = [f"{name}: {m['responses']} responses" + (f", {m['pairs']} comparisons" if "pairs" in m else "")]
    if "accuracy" in m:
        lines += [f"  accuracy                {m['accuracy']:.4f}  (ties: {m['ties']})",
                  f"  mean margin             {m['mean_margin']:.4f}"]
    lines += [f"  reward mean / std       {m['reward_mean']:.4f} / {m['reward_std']:.4f}",
              f"  reward~length corr.     {m['length_correlation']:.4f}"]
    if "accuracy" in m:
        lines.append(f"  acc. when chosen shorter {m['shorter_chosen_accuracy']:.4f}  "
                     f"({m['shorter_chosen_pairs']} pairs)")
    for source, acc in m.get("accuracy_by_source", {}).items():
        lines.append(f"  accuracy [{source}]".ljust(26) + f"{acc:.4f}")
    for attribute, rmse in m.get("rmse_by_attribute", {}).items():
        lines.append(f"  {attribute}: RMSE {rmse:.4f}, corr. {m['correlation_by_attribute'][attribute]:.4f}")
    return "\n".join(lines)


def plot_rewards(chosen: list[float], rejected: list[float], pairs: list, path) -> None:
    """A PNG: chosen vs rejected reward histograms, and reward against response length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    bins = 40
    left.hist(chosen, bins=bins, alpha=0.6, label="chosen")
    left.hist(rejected, bins=bins, alpha=0.6, label="rejected")
    left.set(xlabel="reward", ylabel="pairs", title="reward distributions")
    left.legend()
    edges = _edges(pairs)
    right.scatter([b for b, _, _ in edges], chosen, s=6, alpha=0.5, label="chosen")
    right.scatter([w for _, w, _ in edges], rejected, s=6, alpha=0.5, label="rejected")
    right.set(xlabel="response length (tokens)", ylabel="reward", title="reward vs length")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
