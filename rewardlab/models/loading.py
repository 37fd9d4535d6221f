"""Backbones: resolve a name to a sequence-classification model with a 1-output reward head, plus its tokenizer.

Names resolve in this order: the tiny random backbones built from a config (``tiny-llama``, ``tiny-gpt2``,
``tiny-bert``: for tests and smoke runs, no files needed), the offline packages (``minilm-l6``,
``smollm2-135m``, see :mod:`rewardlab.models.offline`), then anything ``from_pretrained`` accepts (hub id or folder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from rewardlab.config import ModelSettings
from rewardlab.errors import UntrustedModelError
from rewardlab.models.offline import resolve_offline
from rewardlab.models.setup import (
    DTYPES,
    add_lora,
    cast_head_inputs,
    checkpoint_layers,
    disable_dropout,
    dtype_summary,
    reset_head,
    weights_fingerprint,
)
from rewardlab.models.tiny import TINY_BACKBONES, tiny_config, tiny_tokenizer


@dataclass
class Backbone:
    """A reward model and its tokenizer. ``encoder`` is True for bidirectional encoders (BERT-style), which read
    the reward from the first token; causal LMs read it from the last real token. ``dtypes`` says in words which
    weights are in which dtype."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    encoder: bool
    dtypes: str = ""
    fingerprint: str = ""  # of the initial backbone weights (:func:`weights_fingerprint`), head and LoRA excluded


def is_encoder(config) -> bool:
    """Bidirectional encoders are the models that have a masked-LM head in transformers."""
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def load_backbone(settings: ModelSettings, seed: int = 0, num_labels: int = 1) -> Backbone:
    """Load (or build) the model named in ``settings`` with a ``num_labels``-output reward head, ready for training.

    Dtypes (torchtune's rule, "the dtype you train in is the dtype you asked for"): the trained weights are
    ``settings.dtype`` (fp32 master weights by default), whatever dtype the checkpoint was saved in (hub LLMs ship
    bfloat16, where small AdamW updates round to nothing); under LoRA the frozen weights are
    ``settings.lora.frozen_dtype`` (``same``, or e.g. ``checkpoint`` to keep the hub's bfloat16 and half the memory)."""
    trained = DTYPES.get(settings.dtype, "auto")
    frozen = trained if settings.lora.r == 0 or settings.lora.frozen_dtype == "same" else DTYPES.get(
        settings.lora.frozen_dtype, "auto")
    head_seed = seed if settings.head_seed is None else settings.head_seed
    if settings.name in TINY_BACKBONES:
        encoder = settings.name == "tiny-bert"
        tokenizer = tiny_tokenizer(encoder)
        init_seed = seed if settings.init_seed is None else settings.init_seed
        torch.manual_seed(init_seed)
        config = tiny_config(settings.name, len(tokenizer))
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config)
        if init_seed != head_seed:  # one backbone for every seed, the head from its own (an ensemble's members)
            reset_head(model, head_seed)
        if frozen != "auto":
            model.to(frozen)
    else:
        torch.manual_seed(head_seed)  # the new head's initial weights (and, after it, LoRA's)
        model, tokenizer, encoder = load_classifier(resolve_offline(settings.name) or settings.name, num_labels,
                                                    dtype=frozen)
    trained_dtype = model.get_input_embeddings().weight.dtype if trained == "auto" else trained
    if not settings.dropout:
        disable_dropout(model)
    if settings.gradient_checkpointing:
        checkpoint_layers(model, float(settings.gradient_checkpointing))
    fingerprint = weights_fingerprint(model)
    if settings.lora.r > 0:
        model = add_lora(model, settings.lora)
    for param in model.parameters():
        if param.requires_grad and param.dtype != trained_dtype:
            param.data = param.data.to(trained_dtype)
    dtypes = dtype_summary(model)
    if len({p.dtype for p in model.parameters()}) > 1:
        cast_head_inputs(model)
    return Backbone(model=model, tokenizer=tokenizer, encoder=encoder, dtypes=dtypes, fingerprint=fingerprint)




def checked_config(source, trust_remote_code: bool = False):
    """The config of a model that is safe to load: weights from safetensors only (a pickle such as
    ``pytorch_model.bin`` can run code as it loads), and code shipped with it (``auto_map``) only when trusted."""
    folder = Path(source)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise UntrustedModelError(
            f"{source} holds no .safetensors weights (it has: {found:.200}); rewardlab loads weights only from "
            f"safetensors, since a pickle file (pytorch_model.bin) can run code when loaded. Where you trust the "
            f"file, convert it once with transformers' save_pretrained")
    adapter = folder / "adapter_config.json"
    if folder.is_dir() and adapter.is_file() and not (folder / "config.json").is_file():
        # an adapter alone, as plain transformers loads it too: the config is its base model's
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base:
            raise UntrustedModelError(f"{source} is a LoRA adapter whose adapter_config.json names no base model "
                                      "(base_model_name_or_path)")
        return checked_config(base, trust_remote_code)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise UntrustedModelError(
            f"{source} ships its own Python code (auto_map in config.json), which rewardlab runs only when asked: "
            f"--trust-remote-code (trust_remote_code=True), if you trust it") from None


def load_classifier(source, num_labels: int = 1, dtype: torch.dtype | str = "auto", trust_remote_code: bool = False):
    """(sequence classifier, tokenizer, encoder?) from a folder or hub id: a saved classifier as it is, an adapter
    folder with its base, or a plain backbone with a new ``num_labels``-output head. The one place rewardlab loads
    a reward model; ``dtype`` "auto" keeps the checkpoint's. Safetensors only, remote code only when asked
    (:func:`checked_config`)."""
    config = checked_config(source, trust_remote_code)
    options = dict(trust_remote_code=trust_remote_code, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if Path(source, "adapter_config.json").is_file():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(source, num_labels=num_labels, dtype=dtype,
                                                                       **options)
    elif any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype, **options)
    else:  # a plain backbone (e.g. an offline name): a new, untrained head
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config, dtype=dtype, **options)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Sequence-classification heads find the reward token from the pad id (the rightmost non-pad token).
    (model.get_base_model() if hasattr(model, "get_base_model") else model).config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, is_encoder(config)


def load_tokenizer(name: str, trust_remote_code: bool = False) -> tuple[PreTrainedTokenizerFast, bool]:
    """(tokenizer, encoder?) of a backbone name, without its weights."""
    if name in TINY_BACKBONES:
        return tiny_tokenizer(encoder=name == "tiny-bert"), name == "tiny-bert"
    source = resolve_offline(name) or name
    config = checked_config(source, trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, is_encoder(config)


def load_text_model(name: str, seed: int = 0, dtype: str = "fp32", trust_remote_code: bool = False):
    """(transformers ``AutoModel``, tokenizer, encoder?) for an embedding backbone (SimCSE, CLIP's text tower): a tiny
    random one (built from a config, seeded), an offline name, a hub id or a folder; weights in ``dtype`` (``auto``:
    the checkpoint's). The one place rewardlab loads a backbone without a reward head."""
    if name in TINY_BACKBONES:
        tokenizer = tiny_tokenizer(encoder=name == "tiny-bert")
        torch.manual_seed(seed)
        model = AutoModel.from_config(tiny_config(name, len(tokenizer)))
    else:
        source = resolve_offline(name) or name
        checked_config(source, trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(source, dtype=DTYPES.get(dtype, "auto"), use_safetensors=True,
                                          trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, is_encoder(model.config)


