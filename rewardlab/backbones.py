"""Backbones: resolve a name to a sequence-classification model with a 1-output reward head, plus its tokenizer.

Names resolve in this order: the tiny random backbones built from a config (``tiny-llama``, ``tiny-gpt2``,
``tiny-bert``: for tests and smoke runs, no files needed), the offline packages (``minilm-l6``,
``smollm2-135m``, see :mod:`rewardlab.offline`), then anything ``from_pretrained`` accepts (hub id or folder).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.modeling_layers import GradientCheckpointingLayer

from rewardlab.config import LoraSettings, ModelSettings, RecipeError
from rewardlab.offline import resolve_offline

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SPECIALS = ["<pad>", "<s>", "</s>", "[CLS]", "[SEP]", "<|im_start|>", "<|im_end|>"]


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


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The modules that read the backbone's output, which may be kept in another dtype than the backbone under LoRA.
HEAD_MODULES = ("score", "classifier", "pre_classifier", "pooler", "head")


def is_encoder(config) -> bool:
    """Bidirectional encoders are the models that have a masked-LM head in transformers."""
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def tiny_tokenizer(encoder: bool) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges (256 byte tokens + specials) and a ChatML template."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TINY_SPECIALS)
    if encoder:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        names = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="<pad>")
    else:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
        names = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1024, **names)
    fast.chat_template = CHATML
    return fast


def tiny_config(name: str, vocab_size: int):
    """Configs of the tiny random backbones: two layers, width 32."""
    common = dict(vocab_size=vocab_size, num_labels=1, pad_token_id=0)
    if name == "tiny-llama":
        return LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, **common,
        )
    if name == "tiny-gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, bos_token_id=1, eos_token_id=2, **common)
    if name == "tiny-bert":
        return BertConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=1024, **common,
        )
    return None


TINY_BACKBONES = ("tiny-llama", "tiny-gpt2", "tiny-bert")


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


def reset_head(model: PreTrainedModel, seed: int) -> None:
    """New initial weights for the reward head (its linear maps, as transformers initialises them), from ``seed``."""
    torch.manual_seed(seed)
    for name in HEAD_MODULES:
        head = getattr(model, name, None)
        for module in head.modules() if isinstance(head, torch.nn.Module) else ():
            if isinstance(module, torch.nn.Linear):
                module.weight.data.normal_(0.0, model.config.initializer_range)
                if module.bias is not None:
                    module.bias.data.zero_()


FINGERPRINT_VALUES = 65536  # values per tensor that a fingerprint reads


def weights_fingerprint(model: PreTrainedModel) -> str:
    """A hash of a sequence classifier's backbone (``model.base_model``: the head is not in it): every tensor's name,
    dtype and shape, and up to 65,536 evenly spaced values of each (two checkpoints that differ at all differ almost
    everywhere; the whole of a 7B model would take tens of seconds to hash)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.base_model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // FINGERPRINT_VALUES)].contiguous().cpu()
        digest.update(f"{name}:{str(tensor.dtype).removeprefix('torch.')}:{tuple(tensor.shape)};".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


class UntrustedModelError(RecipeError):
    """A model rewardlab will not load as it stands: pickle weights only, or code of its own not trusted."""


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


def dtype_summary(model: torch.nn.Module) -> str:
    """E.g. "trained weights float32, frozen weights bfloat16"."""
    trained = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}
    frozen = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if not p.requires_grad}
    text = f"trained weights {'/'.join(sorted(trained)) or 'none'}"
    return text + (f", frozen weights {'/'.join(sorted(frozen))}" if frozen else "")


def cast_head_inputs(model: torch.nn.Module) -> None:
    """Let the head (kept in the trained dtype) read a backbone kept in another (LoRA over bfloat16 weights): its
    inputs are cast to its own dtype, with or without autocast."""
    classifier = model.get_base_model() if hasattr(model, "get_base_model") else model

    def cast(module, args, kwargs):  # to the trained copy's dtype (peft keeps the frozen original beside it)
        dtype = next((p for p in module.parameters() if p.requires_grad), next(module.parameters())).dtype
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args), kwargs

    for name in HEAD_MODULES:
        head = getattr(classifier, name, None)
        if isinstance(head, torch.nn.Module) and any(True for _ in head.parameters()):
            head.register_forward_pre_hook(cast, with_kwargs=True)


def checkpoint_layers(model: PreTrainedModel, fraction: float = 1.0) -> int:
    """Activation checkpointing (transformers' own) on the first ``fraction`` of the model's layers; returns how many.

    A checkpointed layer keeps only its input for the backward pass and runs its forward again there: memory for
    compute, layer by layer, so a fraction buys a proportional share of the saving at that share of the cost
    (``recompute_num_layers`` in Megatron-LM)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    keep = round(fraction * len(layers))
    for layer in layers[keep:]:
        layer.gradient_checkpointing = False
    return keep


def attention_cost(model: torch.nn.Module) -> float:
    """What a token's attention over one more context token costs, relative to the token's pass through one layer's
    weights: 4·hidden FLOPs (scores and values) against 2 per weight. Decides how wide packed rows are."""
    config = model.config
    layer_weights = (sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel())
    return 2 * config.hidden_size / (layer_weights / config.num_hidden_layers)


def disable_dropout(model: torch.nn.Module) -> None:
    """No dropout anywhere: dropout modules, and the attention dropout rate Llama-style attention keeps as a float."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def add_lora(model: PreTrainedModel, lora: LoraSettings):
    """Wrap ``model`` in LoRA adapters; peft's SEQ_CLS task keeps the reward head fully trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
    )
    return get_peft_model(model, config)


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total
