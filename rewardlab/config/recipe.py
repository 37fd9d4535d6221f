"""What a recipe holds: one pydantic declaration per key, with its type, range, allowed values and a docstring.

The declarations drive everything that checks or describes a key: validation (:mod:`rewardlab.config.loading`
turns pydantic's errors into one-line messages naming the key), the command line's choices (``--layout``,
``--attention``, ``--pooling``, ``--ensemble-reward`` take their values from the ``Literal`` types here) and the
table of keys in ``docs/recipes.md`` (:func:`rewardlab.config.docs.keys_table`).

A recipe is one of three kinds, told apart by ``objective`` (a discriminated union): reward models
(:class:`RewardRecipe`: Bradley–Terry, Plackett–Luce, attribute regression, ODIN), sentence embeddings
(:class:`SimCSERecipe`) and image–text towers (:class:`ClipRecipe`: CLIP, SigLIP). Keys common to all of them
live in :class:`Recipe`; each kind adds its own sections, so a key that does not apply to the recipe's objective is
an error, not silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# The values a key may take, declared once; the models and the command line read them from here.
Layout = Literal["auto", "padded", "packed", "prefix_shared"]
Attention = Literal["auto", "dense", "blocks"]
Pooling = Literal["cls", "mean", "last"]
EnsembleReward = Literal["mean", "min", "mean_minus_std"]
ImageTower = Literal["efficientnet-lite0", "tiny-conv"]
Truncation = Literal["truncate", "drop"]
Precision = Literal["fp32", "bf16", "fp16", "auto"]
ModelDtype = Literal["fp32", "bf16", "fp16", "auto"]
FrozenDtype = Literal["same", "checkpoint", "fp32", "bf16", "fp16"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]
Tracker = Literal["jsonl", "tensorboard", "none"]
RewardObjective = Literal["bradley_terry", "plackett_luce", "regression", "odin"]
ContrastiveObjective = Literal["simcse", "clip", "siglip"]
OBJECTIVES = get_args(RewardObjective) + get_args(ContrastiveObjective)
SEED_RANGE = 2**32 - 1  # numpy's

# A number as YAML 1.1 leaves it, a string ("1e-5": YAML wants "1.0e-5"); parsed only where a float is expected.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def number_from_text(value: Any) -> Any:
    return float(value) if isinstance(value, str) and NUMBER.fullmatch(value.strip()) else value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty_string", "expected a non-empty string")
    return value


# Floats: finite, and written as YAML 1.1 leaves them where need be. Texts: more than whitespace.
Float = Annotated[float, BeforeValidator(number_from_text), Field(allow_inf_nan=False)]
Text = Annotated[str, AfterValidator(_non_empty)]


def refuse(message: str) -> PydanticCustomError:
    """A cross-key check's error, reported as it is written (:mod:`rewardlab.config.loading`)."""
    return PydanticCustomError("recipe", "{message}", {"message": message})


def key(default: Any = ..., hint: str = "", **constraints: Any) -> Any:
    """A recipe key's default and constraints (pydantic's ``gt``, ``ge``, ``lt``, ``le``, ``min_length``, ...);
    ``hint`` is added to the message when a value is refused."""
    return Field(default, json_schema_extra={"hint": hint} if hint else None, **constraints)


class Section(BaseModel):
    """A part of a recipe: unknown keys are errors, types are strict (no ``"3"`` for 3, no 1 for true)."""

    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True, validate_assignment=True)


class LoraSettings(Section):
    """LoRA adapters (peft); the reward head (or projection) is always fully trained."""

    r: int = key(0, "0 = full fine-tuning", ge=0)
    """The adapters' rank; 0 means full fine-tuning."""
    alpha: int = key(16, "the adapters' scale is alpha / r", gt=0)
    """The adapters' scale is alpha / r."""
    dropout: Float = key(0.05, ge=0, lt=1)
    """Dropout on the adapters' input."""
    target_modules: Annotated[list[Text], Field(min_length=1)] | Text = "all-linear"
    """The layers that get adapters: names, or ``all-linear``."""
    frozen_dtype: FrozenDtype = "same"
    """The frozen weights' dtype: ``same`` as model.dtype, ``checkpoint`` (as saved: bfloat16 for most hub LLMs,
    half the memory of fp32), or fp32, bf16, fp16. Adapters and head are always in model.dtype."""


class ModelSettings(Section):
    """The backbone: an offline name (``minilm-l6``, ``smollm2-135m``), a tiny random one (``tiny-llama``,
    ``tiny-gpt2``, ``tiny-bert``), a Hugging Face hub id or a local folder."""

    name: Text = "tiny-llama"
    """The backbone: an offline name, a tiny random one, a hub id or a local folder."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    dtype: ModelDtype = "fp32"
    """The dtype of the trained weights, whatever the checkpoint's (fp32: master weights; ``precision: bf16`` is
    mixed precision over them); ``auto`` keeps the checkpoint's."""
    dropout: bool = False
    """Dropout in the backbone while training. Off for Bradley–Terry: the two rewards of a pair should differ
    because the responses differ, not because two dropout masks did."""
    gradient_checkpointing: bool | Annotated[Float, Field(ge=0, le=1)] = key(
        False, "true, false, or the fraction of the layers to checkpoint")
    """Activation checkpointing: true (every layer), false, or the fraction of layers to checkpoint (0.25: the
    first quarter). Each checkpointed layer stores only its input and recomputes its forward in the backward pass."""
    init_seed: int | None = key(None, ge=0, le=SEED_RANGE)
    """The seed of a tiny random backbone's weights (pretrained weights are what they are); null: ``seed``. The
    members of an ensemble share it, so that they start from one backbone."""
    head_seed: int | None = key(None, ge=0, le=SEED_RANGE)
    """The seed of the new reward head's initial weights and of LoRA's; null: ``seed``. An ensemble with
    ``shared_init: true`` gives every member the same, so that they differ by data order only."""
    attention: Attention = "auto"
    """How packed and prefix-shared rows attend: ``blocks`` (each block of a row on its own, masked blocks never
    computed), ``dense`` (the whole mask to the model's attention), ``auto`` (blocks where the model computes them
    exactly, else dense, said in the log)."""


class LossSettings(Section):
    """Bradley–Terry: ``-log σ(r_chosen − r_rejected − margin)`` + ``center_coefficient · mean((r_chosen +
    r_rejected)²)``; the terms of regression and ODIN."""

    label_smoothing: Float = key(0.0, "0.5 would make chosen and rejected equal", ge=0, lt=0.5)
    """Probability mass moved to "rejected is better" (conservative / noisy-label BT, as in cDPO)."""
    center_coefficient: Float = key(0.0, ge=0)
    """Weight of the centring term (TRL's ``center_rewards_coefficient``)."""
    use_margin: bool = True
    """Subtract the rows' ``margin`` column (when present) inside the sigmoid."""
    pairwise_coefficient: Float = key(0.0, ge=0)
    """regression: weight of Bradley–Terry on the weighted reward of a prompt's responses, next to the MSE."""
    length_coefficient: Float = key(0.3, ge=0)
    """odin: weight of |corr(quality, length)| − corr(length head, length). (At 1.0 the length term kept tiny
    models from learning at all in tests; 0.3 learned on every seed.)"""
    orthogonal_coefficient: Float = key(1.0, ge=0)
    """odin: weight of the heads' orthogonality."""


class ContrastiveSettings(Section):
    """InfoNCE objectives (SimCSE, CLIP, SigLIP): how embeddings are pooled, projected and compared."""

    temperature: Float = key(0.05, gt=0)
    """SimCSE: similarity / temperature. CLIP/SigLIP learn their scale, starting at 1 / temperature."""
    pooling: Pooling = key("mean", "cls for BERT-style encoders, mean or last for causal LMs")
    """One embedding per text: the first token (cls), the mean of the tokens, or the last token (causal LMs)."""
    mlp_head: bool = True
    """SimCSE trains through an MLP over the pooled embedding and drops it afterwards (Gao et al., 2021)."""
    gather_across_processes: bool = True
    """Gather embeddings from all processes so each one sees every other process's negatives."""
    supervised: bool = False
    """SimCSE: false reads single sentences, each seen twice under two dropout masks; true reads pairs."""
    sentence_column: Text | Annotated[list[Text], Field(min_length=1)] = "sentence"
    """Unsupervised SimCSE's sentence column, or a list of columns (every one of them, e.g. [sentence1,
    sentence2] of an STS file); .txt files: one sentence a line."""
    pair_columns: Annotated[list[Text], Field(min_length=2, max_length=2)] = key(
        ["sentence1", "sentence2"], "anchor and positive")
    """Supervised SimCSE's anchor and positive columns."""
    hard_negative_column: Text | None = None
    """Supervised SimCSE: an optional column of hard negatives."""
    min_pair_score: Float | None = None
    """Supervised: keep only the pairs whose ``score`` column is at least this (STS-B: 4 ≈ paraphrase); null keeps
    all."""
    mini_batch_size: int | None = key(None, ge=1)
    """Cached-gradient batches (GradCache): each forward pass's examples are embedded in chunks of this many,
    first without a graph, then chunk by chunk with one. null: one pass over the micro-batch."""


class ClipSettings(Section):
    """Two towers: an image encoder and a text backbone (``model.name``), each with a linear projection."""

    image_tower: ImageTower = "efficientnet-lite0"
    """The image encoder: EfficientNet-Lite0 (pretrained, packaged) or a tiny random conv net."""
    freeze_image_tower: bool = False
    """Lock the image tower (LiT); its projection still trains."""
    freeze_text_tower: bool = False
    """Lock the text tower; its projection still trains."""
    embed_dim: int = key(256, gt=0)
    """The size of both towers' projected embeddings."""
    image_size: int = key(224, "pixels a side", gt=0)
    """Images are centre-cropped and resized to this many pixels a side."""
    init_bias: Float = -10.0
    """SigLIP's learnable bias starts here (the paper's −10)."""


class EnsembleSettings(Section):
    """``ensemble.members=N``: N members that differ by seed (head and LoRA initialisation, data order), saved as
    one ensemble folder; with ``backbones``, ``members`` per backbone."""

    members: int = key(1, "1 with no backbones: one model, no ensemble", ge=1, le=64)
    """Members (per backbone, with ``backbones``)."""
    backbones: list[Text] = Field(default_factory=list)
    """Backbones (as model.name takes them) that replace model.name: ``members`` members on each. They must share
    one tokenizer, since an ensemble encodes a text once for all its members."""
    reward: EnsembleReward = "mean"
    """The reward scoring gives: the members' mean, their minimum, or mean − std_weight · std (a conservative
    reward for RLHF; std is the sample standard deviation across members). Scoring can take others."""
    std_weight: Float = key(1.0, "λ in mean − λ·std", ge=0)
    """λ in mean − λ·std."""
    center_members: bool = True
    """Subtract each member's reward mean (on its evaluation set) before combining: a Bradley–Terry reward is
    defined up to a constant, so without it the spread across members measures their offsets."""
    shared_init: bool = False
    """Every member starts from the same head and LoRA initialisation (seed ``seed``) and differs by data order
    only: members for weight averaging (WARM)."""

    @property
    def size(self) -> int:
        return self.members * max(1, len(self.backbones))

    @model_validator(mode="after")
    def distinct_backbones(self) -> EnsembleSettings:
        twice = sorted({b for b in self.backbones if self.backbones.count(b) > 1})
        if twice:
            raise refuse(f"recipe key 'ensemble.backbones' lists {twice[0]} twice; for several members on one "
                         "backbone set ensemble.members")
        return self


class Recipe(Section):
    """One training run: the keys every objective shares. Paths are relative to the working directory."""

    objective: str
    model: ModelSettings = Field(default_factory=ModelSettings)
    train_data: Text = "data/prefs-train.jsonl"
    """Training data: a local .jsonl/.json/.parquet/.csv file (or a folder or generator, for image–text data) or a
    hub dataset name."""
    train_split: Text = "train"
    """The split of a hub dataset."""
    eval_data: Text | None = "data/prefs-dev.jsonl"
    """Evaluation data, as train_data; null: none (the final metrics are then measured on training data)."""
    eval_split: Text = "test"
    """The split of a hub dataset."""
    max_length: int = key(512, ge=8)
    """Tokens per sequence; shorter than 8 leaves no room beside the special tokens."""
    batch_size: int = key(8, gt=0)
    """Examples (pairs, prompts, sentences, image–caption pairs) per optimizer step, over all processes and
    accumulation steps."""
    micro_batch_size: int | None = key(None, gt=0)
    """Examples per forward pass on one process; batch_size / (micro_batch_size · processes) accumulation steps."""
    learning_rate: Float = key(1e-5, gt=0)
    """AdamW's learning rate."""
    weight_decay: Float = key(0.0, ge=0)
    """AdamW's weight decay, on tensors of 2 or more dimensions only."""
    lr_scheduler: Scheduler = "linear"
    """The learning-rate schedule (transformers' ``get_scheduler``)."""
    warmup_ratio: Float = key(0.0, "the fraction of the steps spent warming up", ge=0, le=1)
    """The fraction of the steps spent warming up."""
    epochs: Float = key(1.0, gt=0)
    """Passes over the training data (unless max_steps is set)."""
    max_steps: int | None = key(None, "or null: epochs decide", gt=0)
    """Optimizer steps; null: epochs decide."""
    max_grad_norm: Float = key(1.0, "0 turns clipping off", ge=0)
    """Gradient clipping by global norm; 0 turns clipping off."""
    skip_nonfinite: int = key(0, "0: stop at the first", ge=0)
    """Optimizer steps with a non-finite loss or gradient norm to skip (no update from them; counted in the log
    and in rewardlab.json) before the run stops with an error naming the step and its rows."""
    precision: Precision = key("fp32", "auto: bf16 where the hardware has it")
    """Mixed precision over the trained weights; auto: bf16 where the hardware has it."""
    seed: int = key(0, "numpy's seed range", ge=0, le=SEED_RANGE)
    """The seed of data order, initialisation and dropout."""
    eval_steps: int | None = key(None, "or null: evaluate at the end only", gt=0)
    """Evaluate every this many steps; null: at the end only."""
    save_steps: int | None = key(None, "or null: no checkpoints", gt=0)
    """Write a resumable checkpoint every this many steps; null: none."""
    save_total_limit: int = key(2, "checkpoints kept", ge=1)
    """Checkpoints kept (the newest)."""
    logging_steps: int = key(10, gt=0)
    """Log every this many steps."""
    tracker: Tracker = "jsonl"
    """Where metrics go: ``metrics.jsonl`` in output_dir, TensorBoard, or nowhere."""
    output_dir: Text = "runs/quickstart"
    """The run's folder: checkpoints, metrics and the saved model."""

    def to_dict(self) -> dict:
        """The recipe as plain data (what ``recipe.yaml`` holds)."""
        return self.model_dump()


class RewardRecipe(Recipe):
    """A reward model on preference data (pairs, rankings, preference graphs, attribute ratings)."""

    objective: RewardObjective = "bradley_terry"
    """bradley_terry: every comparison (pairs, rankings, graphs); plackett_luce: the likelihood of each ranking;
    regression: per-response attribute ratings (``attributes``); odin: Bradley–Terry with a separate length head."""
    attributes: list[Text] = Field(default_factory=list)
    """regression: the rating columns, one model output each (HelpSteer2: helpfulness, correctness, ...)."""
    reward_weights: list[Annotated[Float, Field(ge=0)]] | None = None
    """regression: the reward is Σ weight · attribute (default: equal weights); scoring can take others."""
    loss: LossSettings = Field(default_factory=LossSettings)
    ensemble: EnsembleSettings = Field(default_factory=EnsembleSettings)
    layout: Layout = "auto"
    """How pairs become rows; auto: prefix_shared for causal LMs, packed for encoders (where the model computes
    them exactly)."""
    group_by_length: bool = False
    """Batches of pairs of similar length (shuffled between batches), so less is spent on padding."""
    group_by_prompt: bool = False
    """Pair files: the pairs that share a prompt form one example (a preference graph), each distinct response
    computed once, every pair in the loss. batch_size then counts prompts."""
    truncation: Truncation = key("truncate", "what to do with pairs longer than max_length")
    """Pairs longer than max_length: cut the prompt from the left (truncate), or drop the pair."""
    save_adapter_only: bool = False
    """Save only the LoRA adapter (and head) instead of a merged sequence-classification model."""
    plots: bool = False
    """Write reward-distribution and reward-vs-length PNGs next to the final model."""

    @model_validator(mode="after")
    def consistent(self) -> RewardRecipe:
        if (self.objective == "regression") != bool(self.attributes):
            raise refuse("recipe key 'attributes' names the rating columns of objective regression (and only of it); "
                         f"got objective {self.objective} with attributes {self.attributes}")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.attributes):
            raise refuse(f"recipe key 'reward_weights' needs one weight per attribute ({len(self.attributes)}), got "
                         f"{self.reward_weights}")
        if self.save_adapter_only and self.model.lora.r == 0:
            raise refuse("recipe key 'save_adapter_only' needs LoRA: set model.lora.r > 0")
        return self


class SimCSERecipe(Recipe):
    """SimCSE sentence embeddings (unsupervised or supervised)."""

    objective: Literal["simcse"]
    """simcse: contrastive sentence embeddings."""
    contrastive: ContrastiveSettings = Field(default_factory=ContrastiveSettings)


class ClipRecipe(Recipe):
    """Image–text towers trained by CLIP's softmax or SigLIP's sigmoid loss."""

    objective: Literal["clip", "siglip"]
    """clip: symmetric InfoNCE; siglip: a sigmoid per image–text pair."""
    contrastive: ContrastiveSettings = Field(default_factory=ContrastiveSettings)
    clip: ClipSettings = Field(default_factory=ClipSettings)


RECIPE_KINDS: dict[str, type[Recipe]] = {"reward": RewardRecipe, "simcse": SimCSERecipe, "clip": ClipRecipe}


def kind_of(objective: Any) -> str:
    """The recipe kind (a key of :data:`RECIPE_KINDS`) of an objective."""
    if objective in get_args(RewardObjective):
        return "reward"
    return "clip" if objective in ("clip", "siglip") else "simcse" if objective == "simcse" else "unknown"


class Comparison(Section):
    """``rewardlab compare``: train several recipes under the same overrides and set their results side by side."""

    runs: Annotated[list[Text], Field(min_length=1)]
    """Recipe files, relative to the working directory."""
    overrides: list[Text] = Field(default_factory=list)
    """``key=value`` applied to every run."""
    output_dir: Text = "runs/compare"
    """Each run trains into OUTPUT_DIR/RECIPE_NAME; the table and plot go here."""
