"""Recipes: YAML files → validated dataclasses, with ``key=value`` overrides.

A recipe is a tree of small dataclasses. Every key is checked: an unknown key, a wrong type or a value outside
a field's allowed set is a :class:`RecipeError` that names the key and says what is allowed.
"""

from __future__ import annotations

import dataclasses
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
    return field(default=default, metadata={"choices": allowed, "doc": doc})


@dataclass
class LoraSettings:
    """LoRA adapters (peft). ``r: 0`` means full fine-tuning; the reward head is always fully trained."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"


@dataclass
class ModelSettings:
    """The backbone: an offline name (``minilm-l6``, ``smollm2-135m``), a tiny random one (``tiny-llama``,
    ``tiny-gpt2``, ``tiny-bert``), a Hugging Face hub id or a local folder."""

    name: str = "tiny-llama"
    lora: LoraSettings = field(default_factory=LoraSettings)
    # Dropout in the backbone while training. Off for Bradley–Terry: the two rewards of a pair should differ
    # because the responses differ, not because two dropout masks did.
    dropout: bool = False
    # Activation checkpointing: true (every layer), false, or the fraction of layers to checkpoint (0.25: the first
    # quarter). Each checkpointed layer stores only its input and recomputes its forward in the backward pass.
    gradient_checkpointing: bool | float = False


@dataclass
class LossSettings:
    """Bradley–Terry: ``-log σ(r_chosen − r_rejected − margin)`` + ``center_coefficient · mean(r²)``."""

    # Probability mass moved to "rejected is better" (conservative / noisy-label BT, as in cDPO).
    label_smoothing: float = 0.0
    center_coefficient: float = 0.0
    # Subtract the rows' `margin` column (when present) inside the sigmoid.
    use_margin: bool = True


@dataclass
class ContrastiveSettings:
    """InfoNCE objectives (SimCSE, CLIP, SigLIP): how embeddings are pooled, projected and compared."""

    # SimCSE: similarity / temperature. CLIP/SigLIP learn their scale, starting at 1 / temperature.
    temperature: float = 0.05
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
    sentence_column: str | list[str] = "sentence"
    pair_columns: list[str] = field(default_factory=lambda: ["sentence1", "sentence2"])
    hard_negative_column: str | None = None
    # Supervised: keep only the pairs whose `score` column is at least this (STS-B: 4 ≈ paraphrase); None keeps all.
    min_pair_score: float | None = None


@dataclass
class ClipSettings:
    """Two towers: an image encoder and a text backbone (``model.name``), each with a linear projection."""

    image_tower: str = "efficientnet-lite0"
    freeze_image_tower: bool = False
    freeze_text_tower: bool = False
    embed_dim: int = 256
    image_size: int = 224
    # SigLIP's learnable bias starts here (the paper's −10).
    init_bias: float = -10.0


@dataclass
class Recipe:
    """One training run. Paths are relative to the working directory."""

    objective: str = choice("bradley_terry", ("bradley_terry", "simcse", "clip", "siglip"))
    model: ModelSettings = field(default_factory=ModelSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    contrastive: ContrastiveSettings = field(default_factory=ContrastiveSettings)
    clip: ClipSettings = field(default_factory=ClipSettings)
    # Data: a local .jsonl/.json/.parquet/.csv file or a hub dataset name.
    train_data: str = "data/prefs-train.jsonl"
    train_split: str = "train"
    eval_data: str | None = "data/prefs-dev.jsonl"
    eval_split: str = "test"
    max_length: int = 512
    # How pairs become rows (see rewardlab/data/collate.py); auto: prefix_shared for causal LMs, packed for encoders.
    layout: str = choice("auto", ("auto", "padded", "packed", "prefix_shared"))
    # Batches of pairs of similar length (shuffled between batches), so less is spent on padding.
    group_by_length: bool = False
    truncation: str = choice("truncate", ("truncate", "drop"), "what to do with pairs longer than max_length")
    # Pairs per optimizer step, over all processes and accumulation steps.
    batch_size: int = 8
    # Pairs per forward pass on one process; batch_size / (micro_batch_size · processes) accumulation steps.
    micro_batch_size: int | None = None
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    lr_scheduler: str = choice(
        "linear", ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")
    )
    warmup_ratio: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None
    max_grad_norm: float = 1.0
    # Optimizer steps with a non-finite loss or gradient norm to skip (no update from them; counted in the log and in
    # rewardlab.json) before the run stops with an error naming the step and its rows; 0: stop at the first.
    skip_nonfinite: int = 0
    precision: str = choice("fp32", ("fp32", "bf16", "fp16", "auto"), "auto: bf16 where the hardware has it")
    seed: int = 0
    eval_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int = 2
    logging_steps: int = 10
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
        comparison = build(Comparison, yaml.safe_load(path.read_text()) or {})
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


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except RecipeError:
                continue
        raise RecipeError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item, key) for v in value]
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise RecipeError(f"recipe key '{key}': expected {_type_name(tp)}, got {value!r}")


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe key '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
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
        value = _coerce(raw, tp, key)
        allowed = f.metadata.get("choices")
        if allowed and value not in allowed:
            raise RecipeError(f"recipe key '{key}': {value!r} is not allowed; choose one of: {', '.join(allowed)}")
        values[f.name] = value
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
    value = yaml.safe_load(raw) if raw.strip() else None
    # YAML reads "1e-5" as a string; numbers written that way are numbers here.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    node[parts[-1]] = value


def load_recipe(path: str | Path | None = None, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file (the quickstart when ``path`` is None) and apply ``key=value`` overrides."""
    path = Path(path) if path else DEFAULT_RECIPE
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from None
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        recipe = build(Recipe, data)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    """Cross-field checks that a type alone cannot express."""
    positive = {"batch_size": recipe.batch_size, "max_length": recipe.max_length, "logging_steps": recipe.logging_steps}
    for name in ("micro_batch_size", "max_steps", "eval_steps", "save_steps"):
        if getattr(recipe, name) is not None:
            positive[name] = getattr(recipe, name)
    for name, value in positive.items():
        if value <= 0:
            raise RecipeError(f"recipe key '{name}' must be a positive integer, got {value}")
    if recipe.skip_nonfinite < 0:
        raise RecipeError(f"recipe key 'skip_nonfinite' must be >= 0 (0 = stop at the first), got {recipe.skip_nonfinite}")
    if recipe.learning_rate <= 0:
        raise RecipeError(f"recipe key 'learning_rate' must be > 0, got {recipe.learning_rate}")
    if not 0 <= recipe.loss.label_smoothing < 0.5:
        raise RecipeError(f"recipe key 'loss.label_smoothing' must be in [0, 0.5), got {recipe.loss.label_smoothing}")
    if recipe.model.lora.r < 0:
        raise RecipeError(f"recipe key 'model.lora.r' must be >= 0 (0 = full fine-tuning), got {recipe.model.lora.r}")
    if not 0 <= float(recipe.model.gradient_checkpointing) <= 1:
        raise RecipeError("recipe key 'model.gradient_checkpointing' must be true, false or a fraction of the layers "
                          f"in [0, 1], got {recipe.model.gradient_checkpointing}")
    if recipe.save_adapter_only and recipe.model.lora.r == 0:
        raise RecipeError("recipe key 'save_adapter_only' needs LoRA: set model.lora.r > 0")


def to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)
