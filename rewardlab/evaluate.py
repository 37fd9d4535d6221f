"""Evaluation of a reward model on preference pairs: accuracy, margins, reward statistics and length bias."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from rewardlab.data.collate import sequence_order


@torch.no_grad()
def score_examples(model: torch.nn.Module, examples: list, collator, batch_size: int, device) -> list[list[float]]:
    """The rewards of every example's responses, in input order, from a :class:`~rewardlab.model.RewardModule`
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


def preference_metrics(chosen: list[float], rejected: list[float], pairs: list) -> dict:
    """Pairwise metrics over every comparison (for pairs: every pair; for rankings and preference graphs: every
    edge, as :func:`comparisons` orders them). A tie (equal rewards) counts as wrong and is reported in ``ties``.

    - ``accuracy``: share of pairs with r_chosen > r_rejected
    - ``mean_margin``: mean of r_chosen − r_rejected
    - ``reward_mean``/``reward_std``: over all 2n rewards (the statistics saved for normalisation)
    - ``length_correlation``: Pearson correlation of reward with response length in tokens, over all 2n responses
    - ``shorter_chosen_accuracy``: accuracy on the pairs whose chosen response is the shorter one (a reward model
      that just prefers long answers fails these); ``shorter_chosen_pairs`` counts them
    - ``accuracy_by_source``: accuracy per ``source`` value, when the data has sources
    """
    n = len(chosen)
    wins = [c > r for c, r in zip(chosen, rejected)]
    rewards = chosen + rejected
    mean = sum(rewards) / len(rewards)
    edges = _edges(pairs)
    lengths = [b for b, _, _ in edges] + [w for _, w, _ in edges]
    shorter = [win for win, (b, w, _) in zip(wins, edges) if b < w]
    metrics = {
        "pairs": n,
        "accuracy": sum(wins) / n,
        "ties": sum(c == r for c, r in zip(chosen, rejected)),
        "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / n,
        "reward_mean": mean,
        "reward_std": math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)),
        "length_correlation": _pearson(rewards, [float(x) for x in lengths]),
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


def format_metrics(name: str, m: dict) -> str:
    """A small text table of one evaluation."""
    lines = [
        f"{name}: {m['pairs']} pairs",
        f"  accuracy                {m['accuracy']:.4f}  (ties: {m['ties']})",
        f"  mean margin             {m['mean_margin']:.4f}",
        f"  reward mean / std       {m['reward_mean']:.4f} / {m['reward_std']:.4f}",
        f"  reward~length corr.     {m['length_correlation']:.4f}",
        f"  acc. when chosen shorter {m['shorter_chosen_accuracy']:.4f}  ({m['shorter_chosen_pairs']} pairs)",
    ]
    for source, acc in m.get("accuracy_by_source", {}).items():
        lines.append(f"  accuracy [{source}]".ljust(26) + f"{acc:.4f}")
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
