"""Evaluation of a reward model on preference pairs: accuracy, margins, reward statistics and length bias."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from rewardlab.data.encode import EncodedPair


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module, pairs: list[EncodedPair], collator, batch_size: int, device
) -> tuple[list[float], list[float]]:
    """(chosen, rejected) rewards of every pair from a :class:`~rewardlab.model.RewardModule` (possibly wrapped by
    Accelerate), in input order; batches are formed from length-sorted pairs so little is spent on padding."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    chosen, rejected = [0.0] * len(pairs), [0.0] * len(pairs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        c, r = model(collator([pairs[i] for i in idx]).to(device)).chunk(2)
        for i, cv, rv in zip(idx, c.float().tolist(), r.float().tolist()):
            chosen[i], rejected[i] = cv, rv
    model.train(was_training)
    return chosen, rejected


def _pearson(x: list[float], y: list[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def preference_metrics(chosen: list[float], rejected: list[float], pairs: list[EncodedPair]) -> dict:
    """Pairwise metrics. A tie (equal rewards) counts as wrong and is reported in ``ties``.

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
    lengths = [len(p.chosen_ids) for p in pairs] + [len(p.rejected_ids) for p in pairs]
    shorter = [w for w, p in zip(wins, pairs) if len(p.chosen_ids) < len(p.rejected_ids)]
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
    for w, p in zip(wins, pairs):
        if p.source:
            by_source[p.source].append(w)
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


def plot_rewards(chosen: list[float], rejected: list[float], pairs: list[EncodedPair], path) -> None:
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
    right.scatter([len(p.chosen_ids) for p in pairs], chosen, s=6, alpha=0.5, label="chosen")
    right.scatter([len(p.rejected_ids) for p in pairs], rejected, s=6, alpha=0.5, label="rejected")
    right.set(xlabel="response length (tokens)", ylabel="reward", title="reward vs length")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
