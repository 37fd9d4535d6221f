"""Save a trained reward model as a plain transformers ``AutoModelForSequenceClassification`` folder.

The folder holds the model (LoRA merged by default, or the adapter alone on request), the tokenizer, the resolved
recipe (``recipe.yaml``) and ``rewardlab.json`` with the reward mean/std measured on the evaluation set. The mean and
std are also written into ``config.json`` (``reward_mean``, ``reward_std``), where plain transformers keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

INFO_FILE = "rewardlab.json"


def save_reward_model(
    model, tokenizer, output_dir: str | Path, recipe: dict, info: dict, adapter_only: bool = False
) -> Path:
    """Write the folder; ``model`` is the unwrapped (possibly peft) model. Returns the folder."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload") and not adapter_only:
        model = model.merge_and_unload()
    config = model.config if not adapter_only else model.base_model.model.config
    config.reward_mean, config.reward_std = info.get("reward_mean"), info.get("reward_std")
    model.save_pretrained(out)
    if adapter_only:
        config.save_pretrained(out)  # the base config, with pad token and reward statistics, next to the adapter
    tokenizer.save_pretrained(out)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return out


def load_info(model_dir: str | Path) -> dict:
    """``rewardlab.json`` of a saved model, or {} for a model rewardlab did not train."""
    path = Path(model_dir) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
