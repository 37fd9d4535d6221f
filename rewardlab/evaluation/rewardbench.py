"""A RewardBench-style report on local files: accuracy per subset, weighted section scores, calibration.

Rows (any file format of :mod:`rewardlab.data.rows`; the format is told apart row by row):

- RewardBench v1: ``{"prompt", "chosen", "rejected", "subset", "id"?}`` with ``rejected`` a string. Right when
  ``r_chosen > r_rejected``; a tie (``r_chosen == r_rejected``) is wrong, and counted in ``ties``.
- RewardBench 2: ``chosen`` a string (or a list of one) and ``rejected`` a list of 3 or more. Best-of-k: the chosen
  response must score highest; tied at the top with j rejected ones it earns 1/(j+1) (and counts in ``ties``).

Without ``prompt`` a v1 row's prompt is the text its two responses share (HH-RLHF transcripts, as in training).
``prompt`` may be a list of messages; the responses are then strings or messages, as :mod:`rewardlab.inference.scorer`
takes them. The subset is the row's ``subset`` column (another with ``subset_column``), else the file's name
without its suffix (``llmbar-natural.jsonl`` → ``llmbar-natural``). One subset holds rows of one format.

A subset's accuracy is the mean of its rows' scores. A section's score is the weighted mean of the accuracies of
its subsets that are in the data (weights from a YAML file, RewardBench's by default:
``rewardlab/evaluation/rewardbench_sections.yaml``); the subsets it names that are not in the data are listed as
``missing``, and a section with none of its subsets has no score. The overall score is the mean of the section
scores (as RewardBench's), beside the accuracy over every row. Subsets in no section are reported on their own.

This module computes the report from rewards (:func:`build_report`); :mod:`rewardlab.inference.bench` scores the rows
with a model. With an ensemble's member rewards the report adds the statistics of
:mod:`rewardlab.evaluation.uncertainty` on the v1 pairs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from rewardlab.data.pairs import implicit_prompt
from rewardlab.data.rows import FILE_SUFFIXES, describe, iter_rows, messages, missing_column, optional_text
from rewardlab.errors import DataError
from rewardlab.evaluation.uncertainty import CALIBRATION_BINS, calibration, plot_reliability, uncertainty_report

DEFAULT_SECTIONS = Path(__file__).with_name("rewardbench_sections.yaml")
COLUMNS = "prompt, chosen, rejected (a string, or a list of 3+ for RewardBench 2), subset (optional), id (optional)"


@dataclass
class BenchRow:
    """One comparison: ``chosen`` against every response in ``rejected`` (one for v1, three or more for v2)."""

    prompt: object  # a string or a list of messages
    chosen: object
    rejected: list
    subset: str
    version: int  # 1: RewardBench v1 (a pair), 2: RewardBench 2 (best-of-k)
    origin: str
    id: object = None


# Reading


def parse_bench_row(row: dict, origin: str, subset: str) -> BenchRow:
    """One row as a :class:`BenchRow`, or a :class:`DataError` naming ``origin``."""
    for column in ("chosen", "rejected"):
        if column not in row:
            raise missing_column(row, column, origin, COLUMNS)
    prompt = row.get("prompt")
    if "prompt" in row and prompt is None:
        raise DataError(f"{origin}: column 'prompt' is null; write \"\" for no prompt")
    conversation = prompt is not None and messages(prompt, "prompt", origin)
    if prompt is not None and not conversation and not isinstance(prompt, str):
        raise DataError(f"{origin}: column 'prompt' must be a string or a list of messages, got {describe(prompt)}")
    chosen, several = _responses(row["chosen"], "chosen", origin, conversation)
    if several:
        if len(chosen) != 1:
            raise DataError(f"{origin}: column 'chosen' holds {len(chosen)} responses; the bench takes one chosen "
                            f"response (RewardBench 2's Ties subset, with several, is not supported)")
        chosen = chosen[0]
    rejected, several = _responses(row["rejected"], "rejected", origin, conversation)
    if several:
        if len(rejected) < 3:
            raise DataError(f"{origin}: column 'rejected' is a list of {len(rejected)}; a RewardBench 2 row has 3 or "
                            f"more rejected responses (for a pair, write rejected as a string)")
        version = 2
    else:
        rejected, version = [rejected], 1
    if prompt is None:
        if version == 2 or not all(isinstance(t, str) for t in (chosen, rejected[0])):
            raise missing_column(row, "prompt", origin, COLUMNS)
        prompt = implicit_prompt(chosen, rejected[0]) if chosen != rejected[0] else ""
        chosen, rejected = chosen[len(prompt):], [rejected[0][len(prompt):]]
    return BenchRow(prompt, chosen, rejected, subset, version, origin, row.get("id"))


def _responses(value, column: str, origin: str, conversation: bool) -> tuple[object, bool]:
    """(response, False), or (responses, True) for a list of them: a list whose items are not messages."""
    if isinstance(value, list) and value and not any(isinstance(item, dict) for item in value):
        return [_response(item, f"{column}[{i}]", origin, conversation) for i, item in enumerate(value)], True
    return _response(value, column, origin, conversation), False


def _response(value, column: str, origin: str, conversation: bool):
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{origin}: column '{column}' is empty")
        return value
    if conversation and messages(value, column, origin) and value:
        return value
    kinds = "a string or a list of messages" if conversation else "a string"
    raise DataError(f"{origin}: column '{column}' must be {kinds}, got {describe(value)}")


def data_files(sources: list[str]) -> list[str]:
    """Every data file named, a folder standing for the data files in it (sorted; not its sub-folders)."""
    files = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            inside = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
            if not inside:
                raise DataError(f"{source}: a folder without data files ({', '.join(FILE_SUFFIXES)})")
            files += inside
        else:
            files.append(source)
    return files


def read_bench(sources: list[str], subset_column: str = "subset", split: str = "test") -> list[BenchRow]:
    """The rows of every file (and folder) in ``sources``; see the module's docstring."""
    rows, first_of = [], {}
    for source in data_files(sources):
        default = Path(source).stem if Path(source).is_file() else source
        before = len(rows)
        for row, origin in iter_rows(source, split):
            subset = optional_text(row, subset_column, origin) or default
            rows.append(parse_bench_row(row, origin, subset))
            other = first_of.setdefault(subset, rows[-1])
            if other.version != rows[-1].version:
                raise DataError(f"{origin}: subset '{subset}' mixes RewardBench v1 rows (rejected: a string) and "
                                f"RewardBench 2 rows (rejected: a list), the first of the other kind at "
                                f"{other.origin}; give them different subsets")
        if len(rows) == before:
            raise DataError(f"{source}: no rows")
    return rows


def load_sections(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Section → {subset: weight} from a YAML file (:data:`DEFAULT_SECTIONS` when None): each section a mapping of
    subsets to positive weights, or a list of subsets (weight 1 each)."""
    path = Path(path) if path else DEFAULT_SECTIONS
    if not path.is_file():
        raise DataError(f"{path}: no such sections file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    shape = "section: {subset: weight, ...} or section: [subset, ...]"
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: a sections file maps section names to their subsets ({shape}); got "
                        f"{describe(data) if data is not None else 'nothing'}")
    sections = {}
    for name, subsets in data.items():
        if isinstance(subsets, list) and all(isinstance(s, str) for s in subsets):
            subsets = dict.fromkeys(subsets, 1)
        if not isinstance(subsets, dict) or not subsets:
            raise DataError(f"{path}: section '{name}' must list its subsets ({shape}), got {describe(subsets)}")
        for subset, weight in subsets.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
                raise DataError(f"{path}: section '{name}', subset '{subset}': a weight is a positive number (e.g. "
                                f"the subset's example count), got {describe(weight)}")
        sections[str(name)] = {str(s): float(w) for s, w in subsets.items()}
    return sections


# Scoring


def row_score(row: BenchRow, chosen: float, rejected: list[float]) -> tuple[float, bool]:
    """(score, tie) of one row: v1 1 or 0 (a tie is 0); v2 0 below the best rejected, else 1/(j+1) for j rejected
    responses tied with the chosen one."""
    if row.version == 1:
        return float(chosen > rejected[0]), chosen == rejected[0]
    if chosen < max(rejected):
        return 0.0, False
    tied = sum(r == chosen for r in rejected)
    return 1 / (tied + 1), tied > 0


# The report


def subset_metrics(rows: list[BenchRow], results) -> dict[str, dict]:
    """Per subset (in the order they first appear): format, rows ``n``, ``accuracy``, ``ties``."""
    metrics = {}
    for row, (chosen, rejected) in zip(rows, results):
        score, tie = row_score(row, chosen, rejected)
        m = metrics.setdefault(row.subset, {"format": f"v{row.version}", "n": 0, "accuracy": 0.0, "ties": 0})
        m["n"] += 1
        m["accuracy"] += score
        m["ties"] += tie
    for m in metrics.values():
        m["accuracy"] /= m["n"]
    return metrics


def section_scores(metrics: dict[str, dict], sections: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per section: ``score`` (weighted mean accuracy of its subsets in the data, None without any), rows ``n``,
    ``weights``, ``present`` and ``missing`` subsets."""
    report = {}
    for name, weights in sections.items():
        present = [s for s in weights if s in metrics]
        total = sum(weights[s] for s in present)
        score = sum(weights[s] * metrics[s]["accuracy"] for s in present) / total if present else None
        report[name] = {"score": score, "n": sum(metrics[s]["n"] for s in present), "weights": weights,
                        "present": present, "missing": [s for s in weights if s not in metrics]}
    return report


def build_report(rows: list[BenchRow], results, sections: dict, member_rewards=None,
                 bins: int = CALIBRATION_BINS) -> dict:
    """Everything ``rewardlab bench`` writes to ``report.json``: subsets, sections, overall, calibration (on the v1
    pairs), and with member rewards the uncertainty statistics."""
    metrics = subset_metrics(rows, results)
    scored = section_scores(metrics, sections)
    named = {s for weights in sections.values() for s in weights}
    section_values = [s["score"] for s in scored.values() if s["score"] is not None]
    total = sum(row_score(row, *result)[0] for row, result in zip(rows, results))
    report = {
        "subsets": metrics,
        "sections": scored,
        "unsectioned": [s for s in metrics if s not in named],
        "overall": {"score": sum(section_values) / len(section_values) if section_values else None,
                    "sections_scored": len(section_values), "sections": len(scored),
                    "accuracy": total / len(rows), "n": len(rows)},
        "calibration": None,
    }
    pairs = [i for i, row in enumerate(rows) if row.version == 1]
    if pairs:
        chosen, rejected = [results[i][0] for i in pairs], [results[i][1][0] for i in pairs]
        report["calibration"] = calibration(chosen, rejected, bins)
        if member_rewards is not None:
            starts = np.cumsum([0] + [1 + len(row.rejected) for row in rows])
            index = starts[pairs]
            report["uncertainty"] = uncertainty_report(member_rewards[:, index], member_rewards[:, index + 1], bins)
    return report


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(report: dict, title: str) -> str:
    """The report as Markdown tables: sections, overall, subsets, calibration."""
    lines = [f"## RewardBench-style report: {title}", "", "| section | score | rows | subsets in the data | missing |",
             "|---|---|---|---|---|"]
    for name, s in report["sections"].items():
        present = ", ".join(f"{p} ({s['weights'][p]:g})" for p in s["present"]) or "none"
        missing = f"{len(s['missing'])} of {len(s['weights'])}: {', '.join(s['missing'])}" if s["missing"] else ""
        lines.append(f"| {name} | {_number(s['score'])} | {s['n']} | {present} | {missing} |")
    o = report["overall"]
    lines += ["", f"**Overall** (mean of the {o['sections_scored']} of {o['sections']} sections with data): "
                  f"{_number(o['score'])}; accuracy over all {o['n']} rows: {o['accuracy']:.3f}", "",
              "| subset | section | format | rows | accuracy | ties |", "|---|---|---|---|---|---|"]
    section_of = {}
    for name, s in report["sections"].items():
        for subset in s["present"]:
            section_of.setdefault(subset, []).append(name)
    for subset, m in report["subsets"].items():
        where = ", ".join(section_of.get(subset, [])) or "(none)"
        lines.append(f"| {subset} | {where} | {m['format']} | {m['n']} | {m['accuracy']:.3f} | {m['ties']} |")
    c = report["calibration"]
    if c:
        lines += ["", f"Calibration of σ(r_chosen − r_rejected) on the {c['pairs']} v1 pairs: ECE {c['ece']:.3f} "
                      f"({c['bins']} equal-width confidence bins over [0.5, 1]; mean confidence "
                      f"{c['mean_confidence']:.3f}, accuracy {c['accuracy']:.3f})"]
    u = report.get("uncertainty")
    if u:
        d, e = u["disagreement"], u["uncertainty_vs_error"]
        lines += ["", f"Ensemble of {u['members']}: accuracy of the mean {u['accuracy']:.3f}, members "
                      f"{', '.join(f'{a:.3f}' for a in u['member_accuracy'])}; margin std {d['margin_std']:.3f}, "
                      f"members disagree on {d['winner_disagreement']:.1%} of pairs"]
        if e["defined"] and e["half"]:
            half = e["half"]
            lines.append(f"Error rate on the most / least uncertain half: {half['most_uncertain']['error_rate']:.3f} "
                         f"/ {half['least_uncertain']['error_rate']:.3f}; AUROC {_number(e['auroc'])}")
        elif not e["defined"]:
            lines.append(e["reason"])
    return "\n".join(lines) + "\n"


def plot_sections(report: dict, folder: Path) -> list[Path]:
    """One bar plot (PNG) per section with data, accuracy per subset with the section score as a line (missing
    subsets named on the axis without a bar), and one of the subsets in no section."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(name, s["weights"], s["score"]) for name, s in report["sections"].items() if s["present"]]
    if report["unsectioned"]:
        groups.append(("subsets in no section", dict.fromkeys(report["unsectioned"], 1.0), None))
    paths = []
    for name, weights, score in groups:
        subsets = list(weights)
        accuracy = [report["subsets"][s]["accuracy"] if s in report["subsets"] else 0.0 for s in subsets]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(subsets) + 1.5), 4))
        bars = ax.bar(range(len(subsets)), accuracy, color="tab:blue")
        for bar, subset in zip(bars, subsets):
            m = report["subsets"].get(subset)
            label = f"{m['accuracy']:.2f}\n(n={m['n']})" if m else "missing"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), textcoords="offset points",
                        xytext=(0, 2), ha="center", fontsize=7)
        if score is not None:
            ax.axhline(score, color="tab:red", linestyle="--", linewidth=1, label=f"section score {score:.3f}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xticks(range(len(subsets)), subsets, rotation=30, ha="right", fontsize=8)
        ax.set(ylim=(0, 1.15), ylabel="accuracy", title=name)
        fig.tight_layout()
        path = folder / f"section-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(report: dict, rows: list[BenchRow], results, folder: Path, title: str) -> str:
    """``report.json``, ``report.md``, ``rows.jsonl`` (every row's rewards and score), the section plots and
    ``reliability.png`` in ``folder``; returns the Markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, title)
    (folder / "report.md").write_text(text)
    with (folder / "rows.jsonl").open("w", encoding="utf-8") as out:
        for row, (chosen, rejected) in zip(rows, results):
            record = {"origin": row.origin, "id": row.id, "subset": row.subset, "format": f"v{row.version}",
                      "chosen_reward": chosen, "rejected_rewards": rejected,
                      "score": row_score(row, chosen, rejected)[0]}
            out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    plot_sections(report, folder)
    if report["calibration"]:
        plot_reliability(report["calibration"], folder / "reliability.png", title)
    return text
