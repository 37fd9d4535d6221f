"""Recipes: YAML files → validated dataclasses, with ``key=value`` overrides.

A recipe is a tree of small dataclasses. Every key is checked: an unknown key, a wrong type, a number that is not
finite, an empty string, or a value outside the field's choices, bounds (:func:`bounded`) or list length is a
:class:`RecipeError` that names the key and says what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "quickstart.yaml"


class RecipeError(ValueError):
    """A recipe key is unknown, mistyped or out of range."""


def choice(default: Any, allowed: tuple, doc: str = "") -> Any:
    """A field that takes one of ``allowed``; ``doc`` is added to the error message."""
    return field(default=default, metadata={"choices": allowed, "doc": doc})


def bounded(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, at_least: float | None = None,
            above: float | None = None, at_most: float | None = None, below: float | None = None,
            items: tuple[int, int | None] | None = None, doc: str = "") -> Any:
    """A field whose numbers must lie within bounds (``at_least`` ≤ x, ``above`` < x, x ≤ ``at_most``, x <
    ``below``), and whose lists hold ``items`` = (at least, at most or None) entries; ``doc`` is added to errors."""
    bounds = {"at_least": at_least, "above": above, "at_most": at_most, "below": below}
    metadata = {"bounds": {k: v for k, v in bounds.items() if v is not None}, "items": items, "doc": doc}
    return field(default=default, default_factory=factory, metadata=metadata)


def _within(value: float, bounds: dict) -> bool:
    return (value >= bounds.get("at_least", -math.inf) and value > bounds.get("above", -math.inf)
            and value <= bounds.get("at_most", math.inf) and value < bounds.get("below", math.inf))


def _describe_bounds(bounds: dict) -> str:
    """``>= 0``, ``> 0``, or an interval such as ``in [0, 1)``."""
    low = ("[", bounds["at_least"]) if "at_least" in bounds else ("(", bounds["above"]) if "above" in bounds else None
    high = ("]", bounds["at_most"]) if "at_most" in bounds else (")", bounds["below"]) if "below" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"


@dataclass
class LoraSettings:
    """LoRA adapters (peft). ``r: 0`` means full fine-tuning; the reward head is always fully trained."""

    r: int = bounded(0, at_least=0, doc="0 = full fine-tuning")
    alpha: int = bounded(16, above=0, doc="the adapters' scale is alpha / r")
    dropout: float = bounded(0.05, at_least=0, below=1)
    target_modules: list[str] | str = bounded("all-linear", items=(1, None))
    # The frozen weights' dtype: `same` as model.dtype, or `checkpoint` (as saved: bfloat16 for most hub LLMs, half
    # the memory of fp32), fp32, bf16, fp16. Adapters and head are always in model.dtype.
    frozen_dtype: str = choice("same", ("same", "checkpoint", "fp32", "bf16", "fp16"))


@dataclass
class ModelSettings:
    """The backbone: an offline name (``minilm-l6``, ``smollm2-135m``), a tiny random one (``tiny-llama``,
    ``tiny-gpt2``, ``tiny-bert``), a Hugging Face hub id or a local folder."""

    name: str = "tiny-llama"
    lora: LoraSettings = field(default_factory=LoraSettings)
    # The dtype of the trained weights, whatever the checkpoint's (fp32: master weights; `precision: bf16` is mixed
    # precision over them); `auto` keeps the checkpoint's.
    dtype: str = choice("fp32", ("fp32", "bf16", "fp16", "auto"))
    # Dropout in the backbone while training. Off for Bradley–Terry: the two rewards of a pair should differ
    # because the responses differ, not because two dropout masks did.
    dropout: bool = False
    # Activation checkpointing: true (every layer), false, or the fraction of layers to checkpoint (0.25: the first
    # quarter). Each checkpointed layer stores only its input and recomputes its forward in the backward pass.
    gradient_checkpointing: bool | float = bounded(False, at_least=0, at_most=1,
                                                   doc="true, false, or the fraction of the layers to checkpoint")
    # The seed of a tiny random backbone's weights (tiny-llama, ...; pretrained weights are what they are); null:
    # `seed`. The members of an ensemble share it, so that they start from one backbone.
    init_seed: int | None = bounded(None, at_least=0, at_most=2**32 - 1)
    # The seed of the new reward head's initial weights and of LoRA's; null: `seed`. An ensemble with
    # `shared_init: true` gives every member the same, so that they differ by data order only (what WARM averages).
    head_seed: int | None = bounded(None, at_least=0, at_most=2**32 - 1)
    # How packed and prefix-shared rows attend: blocks (each block of a row on its own, masked blocks never
    # computed; rewardlab/attention.py), dense (the whole mask to the model's attention), auto (blocks where the
    # model computes them exactly, else dense, said in the log).
    attention: str = choice("auto", ("auto", "dense", "blocks"))


@dataclass
class LossSettings:
    """Bradley–Terry: ``-log σ(r_chosen − r_rejected − margin)`` + ``center_coefficient · mean((r_chosen + r_rejected)²)``."""

    # Probability mass moved to "rejected is better" (conservative / noisy-label BT, as in cDPO).
    label_smoothing: float = bounded(0.0, at_least=0, below=0.5, doc="0.5 would make chosen and rejected equal")
    center_coefficient: float = bounded(0.0, at_least=0)
    # Subtract the rows' `margin` column (when present) inside the sigmoid.
    use_margin: bool = True
    # regression: weight of Bradley–Terry on the weighted reward of a prompt's responses, next to the MSE.
    pairwise_coefficient: float = bounded(0.0, at_least=0)
    # odin: weights of |corr(quality, length)| − corr(length head, length) and of the heads' orthogonality. (At 1.0
    # the length term kept tiny models from learning at all in tests/test_attributes.py; 0.3 learned on every seed.)
    length_coefficient: float = bounded(0.3, at_least=0)
    orthogonal_coefficient: float = bounded(1.0, at_least=0)


@dataclass
class ContrastiveSettings:
    """InfoNCE objectives (SimCSE, CLIP, SigLIP): how embeddings are pooled, projected and compared."""

    # SimCSE: similarity / temperature. CLIP/SigLIP learn their scale, starting at 1 / temperature.
    temperature: float = bounded(0.05, above=0)
    pooling: str = choice("mean", ("cls", "mean", "last"), "cls for BERT-style encoders, mean or last for causal LMs")
    # SimCSE trains through an MLP over the pooled embedding and drops it afterwards (Gao et al., 2021).
    mlp_head: bool = True
    # Gather embeddings from all processes so each one sees every other process's negatives.
    gather_across_processes: bool = True
    # SimCSE: false reads single sentences, each seen twice under two dropout masks; true reads pairs.
    supervised: bool = False
    # Data columns: unsupervised SimCSE reads a sentence column (a list of columns: every one of them, e.g.
    # [sentence1, sentence2] of an STS file; .txt files: one sentence a line); supervised reads pairs
    # (+ optional hard negative).
    sentence_column: str | list[str] = bounded("sentence", items=(1, None))
    pair_columns: list[str] = bounded(factory=lambda: ["sentence1", "sentence2"], items=(2, 2),
                                      doc="anchor and positive")
    hard_negative_column: str | None = None
    # Supervised: keep only the pairs whose `score` column is at least this (STS-B: 4 ≈ paraphrase); None keeps all.
    min_pair_score: float | None = None
    # Cached-gradient batches (GradCache): each forward pass's examples are embedded in chunks of this many, first
    # without a graph, then chunk by chunk with one. Memory of one chunk, the gradients of the whole batch, one more
    # forward pass. None: one pass over the micro-batch.
    mini_batch_size: int | None = bounded(None, at_least=1)


@dataclass
class ClipSettings:
    """Two towers: an image encoder and a text backbone (``model.name``), each with a linear projection."""

    image_tower: str = choice("efficientnet-lite0", ("efficientnet-lite0", "tiny-conv"))  # vision.IMAGE_TOWERS
    freeze_image_tower: bool = False
    freeze_text_tower: bool = False
    embed_dim: int = bounded(256, above=0)
    image_size: int = bounded(224, above=0, doc="pixels a side")
    # SigLIP's learnable bias starts here (the paper's −10).
    init_bias: float = -10.0


ENSEMBLE_REWARDS = ("mean", "min", "mean_minus_std")


@dataclass
class EnsembleSettings:
    """``rewardlab train RECIPE ensemble.members=N``: N members that differ by seed (head and LoRA initialisation, data
    order), saved as one ensemble folder (:mod:`rewardlab.ensemble_training`); with ``backbones``, ``members`` per
    backbone. Scoring reads the combined reward and the members' spread (:class:`rewardlab.ensemble.EnsembleRewardModel`)."""

    members: int = bounded(1, at_least=1, at_most=64, doc="1 with no backbones: one model, no ensemble")
    # Backbones (as model.name takes them) that replace model.name: `members` members on each. They must share one
    # tokenizer, since an ensemble encodes a text once for all its members.
    backbones: list[str] = field(default_factory=list)
    # The reward scoring gives: the members' mean, their minimum, or mean − std_weight · std (a conservative reward
    # for RLHF; std is the sample standard deviation across members). Scoring can take others.
    reward: str = choice("mean", ENSEMBLE_REWARDS)
    std_weight: float = bounded(1.0, at_least=0, doc="λ in mean − λ·std")
    # Subtract each member's reward mean (on its evaluation set) before combining: a Bradley–Terry reward is defined
    # up to a constant, so without it the spread across members measures their offsets, not their disagreement.
    center_members: bool = True
    # Every member starts from the same head and LoRA initialisation (seed `seed`) and differs by data order only:
    # members for weight averaging (WARM shares the initialisation; heads from different random starts partly cancel
    # when averaged). False: each member's own seed initialises them too (more diverse members for the ensemble).
    shared_init: bool = False

    @property
    def size(self) -> int:
        return self.members * max(1, len(self.backbones))


@dataclass
class Recipe:
    """One training run. Paths are relative to the working directory."""

    # bradley_terry: every comparison (pairs, rankings, graphs); plackett_luce: the likelihood of each ranking;
    # regression: per-response attribute ratings (`attributes`); odin: Bradley–Terry with a separate length head.
    objective: str = choice("bradley_terry",
                            ("bradley_terry", "plackett_luce", "regression", "odin", "simcse", "clip", "siglip"))
    # regression: the rating columns, one model output each (HelpSteer2: helpfulness, correctness, ...).
    attributes: list[str] = field(default_factory=list)
    # regression: the reward is Σ weight · attribute (default: equal weights); scoring can take others.
    reward_weights: list[float] | None = bounded(None, at_least=0)
    model: ModelSettings = field(default_factory=ModelSettings)
    ensemble: EnsembleSettings = field(default_factory=EnsembleSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)
    clip: ClipSettings = field(default_factory=ClipSettings)
    # Data: a local .jsonl/.json/.parquet/.csv file or a hub dataset name.
    train_data: str = "data/prefs-train.jsonl"
    train_split: str = "train"
    eval_data: str | None = "data/prefs-dev.jsonl"
    eval_split: str = "test"
    # Tokens per sequence; shorter than 8 leaves no room beside the special tokens.
    max_length: int = bounded(512, at_least=8)
    # How pairs become rows (see rewardlab/data/collate.py); auto: prefix_shared for causal LMs, packed for encoders.
    layout: str = choice("auto", ("auto", "padded", "packed", "prefix_shared"))
    # Batches of pairs of similar length (shuffled between batches), so less is spent on padding.
    group_by_length: bool = False
    # Pair files: the pairs that share a prompt form one example (a preference graph), each distinct response
    # computed once, every pair in the loss. batch_size then counts prompts.
    group_by_prompt: bool = False
    truncation: str = choice("truncate", ("truncate", "drop"), "what to do with pairs longer than max_length")
    # Pairs per optimizer step, over all processes and accumulation steps.
    batch_size: int = bounded(8, above=0)
    # Pairs per forward pass on one process; batch_size / (micro_batch_size · processes) accumulation steps.
    micro_batch_size: int | None = bounded(None, above=0)
    learning_rate: float = bounded(1e-5, above=0)
    weight_decay: float = bounded(0.0, at_least=0)
    lr_scheduler: str = choice(
        "linear", ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
    )
    warmup_ratio: float = bounded(0.0, at_least=0, at_most=1, doc="the fraction of the steps spent warming up")
    epochs: float = bounded(1.0, above=0)
    max_steps: int | None = bounded(None, above=0, doc="or null: epochs decide")
    max_grad_norm: float = bounded(1.0, at_least=0, doc="0 turns clipping off")
    # Optimizer steps with a non-finite loss or gradient norm to skip (no update from them; counted in the log and in
    # rewardlab.json) before the run stops with an error naming the step and its rows.
    skip_nonfinite: int = bounded(0, at_least=0, doc="0: stop at the first")
    precision: str = choice("fp32", ("fp32", "bf16", "fp16", "auto"), "auto: bf16 where the hardware has it")
    seed: int = bounded(0, at_least=0, at_most=2**32 - 1, doc="numpy's seed range")
    eval_steps: int | None = bounded(None, above=0, doc="or null: evaluate at the end only")
    save_steps: int | None = bounded(None, above=0, doc="or null: no checkpoints")
    save_total_limit: int = bounded(2, at_least=1, doc="checkpoints kept")
    logging_steps: int = bounded(10, above=0)
    tracker: str = choice("jsonl", ("jsonl", "tensorboard", "none"))
    output_dir: str = "runs/quickstart"
    # Save only the LoRA adapter (and head) instead of a merged sequence-classification model.
    save_adapter_only: bool = False
    # Write reward-distribution and reward-vs-length PNGs next to the final model.
    plots: bool = False


@dataclass
class Comparison:
    """``rewardlab compare``: train several recipes under the same overrides and set their results side by side."""

    runs: list[str] = field(default_factory=list)  # recipe files, relative to the working directory
    overrides: list[str] = field(default_factory=list)  # key=value applied to every run
    output_dir: str = "runs/compare"


def load_comparison(path: str | Path) -> Comparison:
    """Read a comparison file (``runs:``, ``overrides:``, ``output_dir:``) and check that every run's recipe loads."""
    path = Path(path)
    try:
        comparison = build(Comparison, read_yaml(path))
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    if not comparison.runs:
        raise RecipeError(f"{path}: recipe key 'runs' must list at least one recipe file")
    for run in comparison.runs:
        load_recipe(run, comparison.overrides)
    return comparison


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class _UnusableValue(RecipeError):
    """A value of the right type that no key takes (a number that is not finite, an empty string)."""


# A number as YAML 1.1 leaves it a string ("1e-5": YAML wants "1.0e-5"); parsed only where a float is expected.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``: ints are accepted where floats are expected, and so are
    numbers written as strings (``1e-5``); floats must be finite, strings not empty."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        problem = None
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except _UnusableValue as e:  # the right type: say what is wrong with the value
                problem = e
            except RecipeError:
                continue
        raise problem or RecipeError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item, key) for v in value]
    elif tp is float:
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _UnusableValue(f"recipe key '{key}': expected a finite number, got {value!r}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            if not value.strip():
                raise _UnusableValue(f"recipe key '{key}': expected a non-empty string, got {value!r}")
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise RecipeError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")


def _check(value: Any, f: dataclasses.Field, key: str) -> None:
    """The field's choices, bounds and list length."""
    doc = f" ({f.metadata['doc']})" if f.metadata.get("doc") else ""
    allowed = f.metadata.get("choices")
    if allowed and value not in allowed:
        raise RecipeError(f"recipe key '{key}': {value!r} is not allowed; choose one of: {', '.join(allowed)}{doc}")
    bounds = f.metadata.get("bounds")
    if bounds and isinstance(value, (int, float)) and not isinstance(value, bool) and not _within(value, bounds):
        raise RecipeError(f"recipe key '{key}' must be {_describe_bounds(bounds)}{doc}, got {value!r}")
    items = f.metadata.get("items")
    if items and isinstance(value, list) and not items[0] <= len(value) <= (items[1] or len(value)):
        count = f"exactly {items[0]}" if items[0] == items[1] else f"at least {items[0]}"
        raise RecipeError(f"recipe key '{key}' must list {count} item{'s' * (items[0] != 1)}{doc}, got {value!r}")


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys, wrong types and values out of range."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe key '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_), key=str)
    if unknown:
        raise RecipeError(
            f"unknown recipe key '{prefix}{unknown[0]}'; valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: "
            + ", ".join(sorted(types_))
        )
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key, tp, raw = prefix + f.name, types_[f.name], data[f.name]
        if dataclasses.is_dataclass(tp):
            values[f.name] = build(tp, raw, key + ".")
            continue
        values[f.name] = _coerce(raw, tp, key)
        _check(values[f.name], f, key)
    return cls(**values)


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``dotted.key=value`` to a nested dict; the value is parsed as YAML (``3``, ``1e-5``, ``[a, b]``)."""
    if "=" not in assignment:
        raise RecipeError(f"override '{assignment}' is not of the form key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override '{assignment}': '{part}' is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise RecipeError(f"override '{assignment}': the value is not valid YAML ({getattr(e, 'problem', e)})") from None


def read_yaml(path: Path) -> Any:
    """A recipe or comparison file's contents ({} when empty); a missing, unreadable or malformed file is a
    :class:`RecipeError`."""
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file (the quickstart when ``path`` is None) and apply ``key=value`` overrides."""
    path = Path(path) if path else DEFAULT_RECIPE
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values, got {type(data).__name__}")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        recipe = build(Recipe, data)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Cross-field checks that a field alone cannot express."""
    if (recipe.objective == "regression") != bool(recipe.attributes):
        raise RecipeError("recipe key 'attributes' names the rating columns of objective regression (and only "
                          f"of it); got objective {recipe.objective} with attributes {recipe.attributes}")
    if recipe.reward_weights is not None and len(recipe.reward_weights) != len(recipe.attributes):
        raise RecipeError(f"recipe key 'reward_weights' needs one weight per attribute ({len(recipe.attributes)}), "
                          f"got {recipe.reward_weights}")
    if recipe.save_adapter_only and recipe.model.lora.r == 0:
        raise RecipeError("recipe key 'save_adapter_only' needs LoRA: set model.lora.r > 0")
    ensemble = recipe.ensemble
    if ensemble.size > 1 and recipe.objective in ("simcse", "clip", "siglip"):
        raise RecipeError(f"recipe key 'ensemble': ensembles are of reward models; objective {recipe.objective} "
                          "trains an embedding model (choose one of: bradley_terry, plackett_luce, regression, odin)")
    twice = sorted({b for b in ensemble.backbones if ensemble.backbones.count(b) > 1})
    if twice:
        raise RecipeError(f"recipe key 'ensemble.backbones' lists {twice[0]} twice; for several members on one "
                          "backbone set ensemble.members")


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)
