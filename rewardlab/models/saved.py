"""A saved model folder: a trained reward model written as a plain transformers ``AutoModelForSequenceClassification``
folder, and the files rewardlab adds to every folder it saves (``rewardlab.json``, ``recipe.yaml``).

The folder holds the model (LoRA merged by default, or the adapter alone on request), the tokenizer, the resolved
recipe (``recipe.yaml``) and ``rewardlab.json`` with the reward mean/std measured on the evaluation set and the
encoding policy (``encoding``). The mean and std are also written into ``config.json`` (``reward_mean``,
``reward_std``), where plain transformers keeps them, and the tokenizer is saved truncating from the left at the
model's ``max_length``, so ``tokenizer(text, truncation=True)`` cuts a long text as rewardlab does.

The weights are saved in the dtype they were trained in (``config.json``'s ``dtype``, which plain transformers
loads them in); LoRA over frozen weights of a lower precision is merged in the trained dtype, so no update is lost
to rounding.

``rewardlab.json`` carries ``format_version`` (:data:`FORMAT_VERSION`). Folders saved before it had one are version
1; they load unchanged, except that their ``recipe.yaml`` held every section of every objective, which
:func:`saved_recipe` leaves out where it does not apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import yaml

from rewardlab.config.recipe import RewardObjective
from rewardlab.errors import ScoringError

REWARD = get_args(RewardObjective)

INFO_FILE = "rewardlab.json"
RECIPE_FILE = "recipe.yaml"
FORMAT_VERSION = 2  # 2: recipe.yaml holds only the sections of its objective (the redesign of December 2026)


def save_reward_model(
    model, tokenizer, output_dir: str | Path, recipe: dict, info: dict, adapter_only: bool = False,
    keep_outputs: list[int] | None = None,
) -> Path:
    """Write the folder; ``model`` is the unwrapped (possibly peft) model; ``keep_outputs`` keeps only those of the
    head's outputs (ODIN saves its quality head). Returns the folder."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload") and not adapter_only:
        trained = {p.dtype for p in model.parameters() if p.requires_grad}
        if len(trained) == 1 and {p.dtype for p in model.parameters()} != trained:
            model = model.to(trained.pop())  # frozen bfloat16 + float32 adapters: merge in float32
        model = model.merge_and_unload()
    if keep_outputs is not None:
        from rewardlab.models.heads import keep_outputs as keep

        if adapter_only:
            raise ValueError("an adapter-only save cannot drop head outputs; save the merged model")
        keep(model, keep_outputs)
    config = model.config if not adapter_only else model.base_model.model.config
    config.reward_mean, config.reward_std = info.get("reward_mean"), info.get("reward_std")
    model.save_pretrained(out)
    if adapter_only:
        config.save_pretrained(out)  # the base config, with pad token and reward statistics, next to the adapter
    save_tokenizer(tokenizer, out, info.get("encoding", {}).get("max_length") or info.get("max_length"))
    write_info(out, recipe, {**info, "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")})
    return out


def write_info(out: Path, recipe: dict, info: dict) -> None:
    """``recipe.yaml`` and ``rewardlab.json`` (with the format version) of a saved folder."""
    (out / RECIPE_FILE).write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / INFO_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **info}, indent=2) + "\n")


def save_tokenizer(tokenizer, out: Path, max_length: int | None) -> None:
    """The tokenizer, saved to truncate from the left at ``max_length`` (the tokenizer in memory is unchanged)."""
    saved = {"truncation_side": "left", "model_max_length": max_length or tokenizer.model_max_length}
    before = {key: getattr(tokenizer, key) for key in saved}
    before_init = {key: tokenizer.init_kwargs.get(key) for key in saved}
    for key, value in saved.items():  # save_pretrained writes init_kwargs; attributes for a consistent object
        setattr(tokenizer, key, value)
        tokenizer.init_kwargs[key] = value
    try:
        tokenizer.save_pretrained(out)
    finally:
        for key in saved:
            setattr(tokenizer, key, before[key])
            if before_init[key] is None:
                tokenizer.init_kwargs.pop(key, None)
            else:
                tokenizer.init_kwargs[key] = before_init[key]


def load_info(model_dir: str | Path) -> dict:
    """``rewardlab.json`` of a saved model, or {} for a model rewardlab did not train. A folder newer than this
    rewardlab (a format version it does not know) is refused."""
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        return {}
    info = json.loads(path.read_text())
    version = info.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ScoringError(f"{path}: format_version {version!r} is newer than this rewardlab reads ({FORMAT_VERSION}); "
                           "upgrade rewardlab")
    return info


# The sections a version-1 recipe.yaml held for every objective, and the objectives each belongs to.
V1_SECTIONS = {"attributes": REWARD, "reward_weights": REWARD, "loss": REWARD, "ensemble": REWARD, "layout": REWARD,
               "group_by_length": REWARD, "group_by_prompt": REWARD, "truncation": REWARD, "save_adapter_only": REWARD,
               "plots": REWARD, "contrastive": ("simcse", "clip", "siglip"), "clip": ("clip", "siglip")}


def saved_recipe(model_dir: str | Path) -> dict:
    """The recipe a folder was trained with, as plain data; a version-1 folder's sections that do not apply to its
    objective are left out (they held defaults the run never read)."""
    path = Path(model_dir) / RECIPE_FILE
    recipe = yaml.safe_load(path.read_text()) or {}
    if load_info(model_dir).get("format_version", 1) == 1 and isinstance(recipe, dict):
        objective = recipe.get("objective", "bradley_terry")
        recipe = {k: v for k, v in recipe.items() if objective in V1_SECTIONS.get(k, (objective,))}
    return recipe
