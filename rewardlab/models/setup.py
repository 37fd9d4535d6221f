"""A loaded model made ready to train: dropout, activation checkpointing, LoRA adapters, dtypes, a fresh head;
and what is measured of it (fingerprint, parameter counts, attention cost)."""

from __future__ import annotations

import hashlib

import torch
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from rewardlab.config.recipe import LoraSettings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# The modules that read the backbone's output, which may be kept in another dtype than the backbone under LoRA.
HEAD_MODULES = ("score", "classifier", "pre_classifier", "pooler", "head")


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
