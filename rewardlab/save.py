"""Save a trained reward model as a plain transformers ``AutoModelForSequenceClassification`` folder.

The folder holds the model (LoRA merged by default, or the adapter alone on request), the tokenizer, the resolved
recipe (``recipe.yaml``) and ``rewardlab.json`` with the reward mean/std measured on the evaluation set and the
encoding policy (``encoding``). The mean and std are also written into ``config.json`` (``reward_mean``,
``reward_std``), where plain transformers keeps them, and the tokenizer is saved truncating from the left at the
model's ``max_length``, so ``tokenizer(text, truncation=True)`` cuts a long text as rewardlab does.

The weights are saved in the dtype they were trained in (``config.json``'s ``dtype``, which plain transformers
loads them in); LoRA over frozen weights of a lower precision is merged in the trained dtype, so no update is lost
to rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

INFO_FILE = "rewardlab.json"


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
        from rewardlab.model import keep_outputs as keep

        if adapter_only:
            raise ValueError("an adapter-only save cannot drop head outputs; save the merged model")
        keep(model, keep_outputs)
    config = model.config if not adapter_only else model.base_model.model.config
    config.reward_mean, config.reward_std = info.get("reward_mean"), info.get("reward_std")
    model.save_pretrained(out)
    if adapter_only:
        config.save_pretrained(out)  # the base config, with pad token and reward statistics, next to the adapter
    save_tokenizer(tokenizer, out, info.get("encoding", {}).get("max_length") or info.get("max_length"))
    info = {**info, "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out


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
    """``rewardlab.json`` of a saved model, or {} for a model rewardlab did not train."""
    path = Path(model_dir) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
