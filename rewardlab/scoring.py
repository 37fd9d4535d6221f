"""Load a saved reward model (rewardlab's output or any Hugging Face sequence-classification reward model)."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.backbones import is_encoder
from rewardlab.offline import resolve_offline
from rewardlab.save import load_info


def load_reward_model(path_or_id: str):
    """(model in eval mode, tokenizer, encoder?, rewardlab info) for a model folder, adapter folder or hub id."""
    source = resolve_offline(path_or_id) or path_or_id
    if Path(source, "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(source, num_labels=1)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    config = AutoConfig.from_pretrained(source)
    return model.eval(), tokenizer, is_encoder(config), load_info(source)
