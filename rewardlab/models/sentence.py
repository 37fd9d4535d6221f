"""Sentence encoders: a backbone pooled into one embedding per text (SimCSE, and any model evaluated on STS), how
it is loaded with dropout for SimCSE, and its saved folder (a plain ``AutoModel`` that sentence-transformers loads)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rewardlab.config.recipe import ModelSettings
from rewardlab.models.loading import load_text_model
from rewardlab.models.offline import resolve_offline
from rewardlab.models.poolers import pool
from rewardlab.models.saved import load_info, write_info
from rewardlab.models.setup import checkpoint_layers, disable_dropout

# Attention dropout given to backbones that have no dropout at all (Llama, Qwen, Mistral, ...) when
# `model.dropout: true`: BERT's rate, the one the SimCSE paper uses.
ATTENTION_DROPOUT = 0.1


# sentence-transformers' Pooling config keys for rewardlab's poolings.
ST_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "last": "pooling_mode_lasttoken"
}


class SentenceEncoder(nn.Module):
    """A transformers ``AutoModel`` (possibly with LoRA) pooled into one embedding per sentence, plus — in training
    mode only — SimCSE's MLP head (Linear + Tanh).

    Shape notation: n = sentences, s = tokens, d = hidden size. ``forward(input_ids (n, s), attention_mask (n, s))``
    → (n, d).
    """

    def __init__(self, backbone: nn.Module, pooling: str, mlp_head: bool = False):
        super().__init__()
        self.backbone, self.pooling = backbone, pooling
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) if mlp_head else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        return self.head(pooled) if self.head is not None and self.training else pooled


def load_backbone_model(settings: ModelSettings, seed: int = 0):
    """(AutoModel, tokenizer, encoder?) for ``settings.name``, with dropout on or off as asked, gradient
    checkpointing and LoRA (peft, feature extraction) applied."""
    model, tokenizer, encoder = load_text_model(settings.name, seed, settings.dtype)
    if not settings.dropout:
        disable_dropout(model)
    elif not has_dropout(model):
        # Set on the modules, not the config, so the saved config (and a reward model trained from it) has none.
        for module in model.modules():
            if isinstance(getattr(module, "attention_dropout", None), float):
                module.attention_dropout = ATTENTION_DROPOUT
    pooler = getattr(model, "pooler", None)
    if pooler is not None:
        pooler.requires_grad_(False)  # BERT's pooler is not used (pooling happens here): kept as it is, untrained
    if settings.gradient_checkpointing:
        checkpoint_layers(model, float(settings.gradient_checkpointing))
    if settings.lora.r > 0:
        from peft import LoraConfig, TaskType, get_peft_model

        lora = settings.lora
        model = get_peft_model(model, LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules, exclude_modules=["pooler.dense"] if pooler is not None else None,
        ))
    return model, tokenizer, encoder


def has_dropout(model: nn.Module) -> bool:
    """Whether anything in ``model`` drops activations in training mode (dropout modules, or the attention
    probability that Llama-style attention modules keep as a float)."""
    return any((isinstance(m, nn.Dropout) and m.p > 0)
               or (isinstance(getattr(m, "attention_dropout", None), float) and m.attention_dropout > 0)
               for m in model.modules())


def load_sentence_encoder(name: str, pooling: str | None = None):
    """(SentenceEncoder in eval mode, tokenizer, rewardlab info) for a saved SimCSE folder or any other model (an
    offline name, hub id or folder). Pooling: ``pooling``, else the saved one, else the sentence-transformers pooling
    of the folder, else ``mean`` for encoders and ``last`` for causal LMs."""
    source = resolve_offline(name) or name
    model, tokenizer, encoder = load_text_model(name, dtype="auto")
    info = load_info(source)
    pooling = pooling or info.get("pooling") or sentence_transformers_pooling(source)
    pooling = pooling or ("mean" if encoder else "last")
    return SentenceEncoder(model, pooling).eval(), tokenizer, info


def sentence_transformers_pooling(source) -> str | None:
    """The pooling a sentence-transformers folder declares (``1_Pooling/config.json``), if rewardlab has it."""
    path = Path(source, "1_Pooling", "config.json")
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    return next((name for name, key in ST_POOLING_KEYS.items() if config.get(key)), None)


def save_sentence_encoder(encoder: SentenceEncoder, tokenizer, output_dir: Path, recipe: dict, info: dict) -> None:
    """The backbone (LoRA merged, MLP head dropped) as an ``AutoModel`` folder with its tokenizer, ``recipe.yaml``,
    ``rewardlab.json`` and the sentence-transformers module files (Transformer → Pooling)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = encoder.backbone
    if hasattr(backbone, "merge_and_unload"):
        backbone = backbone.merge_and_unload()
    backbone.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_info(out, recipe, info)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": info["max_length"]}) + "\n")
    pooling = {"word_embedding_dimension": backbone.config.hidden_size,
               **{key: name == encoder.pooling for name, key in ST_POOLING_KEYS.items()}}
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
