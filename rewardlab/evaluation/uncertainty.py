"""How sure a reward model (or an ensemble of them) is on preference pairs, and whether that sureness means anything:
pure functions over member rewards, no model code.

Shape notation: m = members (1 for a single model), n = pairs. ``chosen`` and ``rejected`` are rewards ``[m, n]``
(a 1-D ``[n]`` is one member). ``margin = chosen − rejected``, ``[m, n]``. A pair is right when its margin is
above 0; a tie (margin 0) counts as wrong, as in ``rewardlab eval``. The ensemble's margin is the members' mean.

- :func:`accuracy`: accuracy of the mean margin and of each member.
- :func:`disagreement`: the mean over pairs of the std (ddof 0) of the margin across members, and the share of
  pairs on whose winner the members do not all agree (a member with margin 0 votes for neither).
- :func:`uncertainty_vs_error`: the uncertainty of a pair is that std; accuracy and error rate on the most and the
  least uncertain half and quarter of the pairs, and the AUROC of uncertainty as a predictor of an error.
- :func:`calibration`: ``p = σ(mean margin)`` read as the probability that the chosen response is the better one.
  The model predicts the side it gives ``p > 0.5`` to, with confidence ``max(p, 1 − p)`` in [0.5, 1]; the expected
  calibration error is ``Σ_b (n_b / n) · |accuracy_b − confidence_b|`` over equal-width confidence bins.
- :func:`plot_reliability`: accuracy against confidence per bin (PNG), with the count of pairs in each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIBRATION_BINS = 10


def member_rewards(chosen, rejected) -> tuple[np.ndarray, np.ndarray]:
    """``chosen`` and ``rejected`` as float64 arrays ``[m, n]`` (a 1-D input is one member); they must have the
    same shape, at least one pair, and finite values."""
    c, r = (np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in (chosen, rejected))
    if c.ndim != 2 or c.shape != r.shape:
        raise ValueError(f"chosen and rejected must both be [members, pairs]; got shapes {c.shape} and {r.shape}")
    if c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"need at least one member and one pair; got shape {c.shape}")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise ValueError("rewards must be finite")
    return c, r


def accuracy(chosen, rejected) -> dict:
    """``accuracy`` of the mean margin (``ties``: pairs whose mean margin is 0, counted wrong) and
    ``member_accuracy``, one per member."""
    c, r = member_rewards(chosen, rejected)
    margin = c - r
    mean = margin.mean(axis=0)
    return {"members": c.shape[0], "pairs": c.shape[1], "accuracy": float((mean > 0).mean()),
            "ties": int((mean == 0).sum()), "member_accuracy": [float(a) for a in (margin > 0).mean(axis=1)]}


def disagreement(chosen, rejected) -> dict:
    """``margin_std``: the mean over pairs of the std (ddof 0) of the margin across members; ``winner_disagreement``:
    the share of pairs where the members' signs of the margin (+, −, or 0 for a tie) are not all the same."""
    c, r = member_rewards(chosen, rejected)
    margin = c - r
    signs = np.sign(margin)
    return {"margin_std": float(margin.std(axis=0).mean()),
            "winner_disagreement": float((signs != signs[0]).any(axis=0).mean())}


def uncertainty_vs_error(chosen, rejected) -> dict:
    """Whether the uncertain pairs are the ones the mean gets wrong. Uncertainty = std (ddof 0) across members of
    the margin. Pairs are ranked most uncertain first (equal uncertainties in pair order); the most uncertain
    ``n // 2`` (``n // 4``) pairs are compared with the least uncertain ``n // 2`` (``n // 4``) (for an odd n the
    middle pair is in neither half). ``auroc``: the chance that a wrong pair is more uncertain than a right one
    (equal: one half), None when every pair is right or every pair is wrong.

    With one member, or members whose margins differ by the same amount on every pair, every uncertainty is the
    same and nothing can be ranked: ``{"defined": False, "reason": ...}``.
    """
    c, r = member_rewards(chosen, rejected)
    margin = c - r
    uncertainty = margin.std(axis=0)
    wrong = margin.mean(axis=0) <= 0
    if np.all(uncertainty == uncertainty[0]):
        reason = ("one member: its std across members is 0 on every pair" if c.shape[0] == 1 else
                  "the uncertainty is the same on every pair")
        return {"defined": False, "reason": f"uncertainty cannot rank the pairs ({reason})"}
    order = np.argsort(-uncertainty, kind="stable")
    result = {"defined": True, "auroc": _auroc(uncertainty[wrong], uncertainty[~wrong])}
    n = len(order)
    for name, k in (("half", n // 2), ("quarter", n // 4)):
        if k == 0:
            result[name] = None
            continue
        result[name] = {"pairs": k, "most_uncertain": _group(order[:k], wrong, uncertainty),
                        "least_uncertain": _group(order[n - k:], wrong, uncertainty)}
    return result


def _group(index: np.ndarray, wrong: np.ndarray, uncertainty: np.ndarray) -> dict:
    error = float(wrong[index].mean())
    return {"accuracy": 1 - error, "error_rate": error, "mean_uncertainty": float(uncertainty[index].mean())}


def _auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    if len(positive) == 0 or len(negative) == 0:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def calibration(chosen, rejected, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error of ``p = σ(mean margin)`` and its reliability table.

    Each pair: confidence ``max(p, 1 − p)``, right when the mean margin is above 0 (a tie, p = 0.5, is wrong). The
    bins split [0.5, 1] into ``bins`` equal widths, each closed on the left and open on the right except the last,
    which holds 1.0. ``ece = Σ_b (n_b / n) · |accuracy_b − confidence_b|`` (confidence_b: the mean confidence in
    bin b); an empty bin has ``accuracy`` and ``confidence`` None and adds nothing.
    """
    from scipy.special import expit

    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    c, r = member_rewards(chosen, rejected)
    margin = (c - r).mean(axis=0)
    p = expit(margin)
    confidence = np.maximum(p, 1 - p)
    right = margin > 0
    edges = np.linspace(0.5, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        row = {"low": float(edges[b]), "high": float(edges[b + 1]), "pairs": count, "accuracy": None,
               "confidence": None}
        if count:
            row["accuracy"], row["confidence"] = float(right[members].mean()), float(confidence[members].mean())
            ece += count / len(margin) * abs(row["accuracy"] - row["confidence"])
        table.append(row)
    return {"pairs": len(margin), "bins": bins, "ece": float(ece), "accuracy": float(right.mean()),
            "mean_confidence": float(confidence.mean()), "table": table}


def uncertainty_report(chosen, rejected, bins: int = CALIBRATION_BINS) -> dict:
    """Every statistic of this module for one set of member rewards."""
    return accuracy(chosen, rejected) | {"disagreement": disagreement(chosen, rejected),
                                         "uncertainty_vs_error": uncertainty_vs_error(chosen, rejected),
                                         "calibration": calibration(chosen, rejected, bins)}


def plot_reliability(calibrated: dict, path: str | Path, title: str = "") -> None:
    """A PNG of :func:`calibration`'s table: accuracy per confidence bin (bars, each labelled with its count of
    pairs) against the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = calibrated["table"]
    width = table[0]["high"] - table[0]["low"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    filled = [row for row in table if row["pairs"]]
    centres = [(row["low"] + row["high"]) / 2 for row in filled]
    ax.bar(centres, [row["accuracy"] for row in filled], width=width * 0.9, alpha=0.7, label="accuracy")
    ax.plot([0.5, 1.0], [0.5, 1.0], "k--", linewidth=1, label="perfect calibration")
    ax.scatter(centres, [row["confidence"] for row in filled], marker="_", s=200, color="tab:red",
               label="mean confidence")
    for x, row in zip(centres, filled):
        ax.annotate(str(row["pairs"]), (x, row["accuracy"]), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize=8)
    ax.set(xlim=(0.5, 1.0), ylim=(0, 1.08), xlabel="confidence max(p, 1 − p), p = σ(r_chosen − r_rejected)",
           ylabel="accuracy", title=f"{title + ': ' if title else ''}ECE {calibrated['ece']:.3f} "
                                    f"({calibrated['pairs']} pairs, {calibrated['bins']} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_uncertainty(m: dict) -> str:
    """The lines of :func:`uncertainty_report` in an evaluation's table."""
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
