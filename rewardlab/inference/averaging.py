"""Weight averaging (WARM: Ramé et al., 2024, "WARM: On the Benefits of Weight Averaged Reward Models", arXiv
2401.12187): reward models fine-tuned from one initialisation, averaged weight by weight into one ordinary model,
``rewardlab average MEMBERS... --output DIR`` (or an ensemble folder).

The average is uniform over every floating-point weight. LoRA members are merged first (W + B·A·scale, in float32)
and the merged weights averaged, which averages their updates B·A; averaging A and B separately would not (the mean
of products is not the product of means). Members must share architecture and config, tokenizer and encoding, and
the initial backbone (its name and fingerprint, recorded in each member's rewardlab.json at training time): weights
fine-tuned from different starting points are not in one basin, and their average is no model at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from rewardlab.data.encode import EncodingPolicy
from rewardlab.errors import AveragingError
from rewardlab.inference.ensemble import encoding_probe, read_manifest
from rewardlab.models.loading import checked_config, is_encoder, load_classifier
from rewardlab.models.manifest import is_ensemble
from rewardlab.models.saved import RECIPE_FILE, load_info, save_reward_model, saved_recipe

# Config keys that say nothing about the architecture.
UNCHECKED_CONFIG = {"_name_or_path", "reward_mean", "reward_std", "transformers_version", "dtype", "torch_dtype"}
# What an average keeps of its first member's rewardlab.json: not the statistics measured on that member.
MEASURED = {"metrics", "reward_mean", "reward_std", "steps", "train_seconds", "evaluated_on", "skipped_nonfinite",
            "dtype"}




def member_folders(paths: list[str], select: list[int] | None = None) -> list[Path]:
    """The members to average: model folders, or the members of one ensemble folder (``select``: their indices)."""
    if len(paths) == 1 and is_ensemble(paths[0]):
        members = read_manifest(paths[0])["members"]
        chosen = range(len(members)) if select is None else select
        bad = [i for i in chosen if not 0 <= i < len(members)]
        if bad:
            raise AveragingError(f"--member {bad[0]}: {paths[0]} has members 0 to {len(members) - 1}")
        return [Path(paths[0], members[i]["path"]) for i in chosen]
    if select is not None:
        raise AveragingError("--member picks members of one ensemble folder; give model folders without it")
    return [Path(p) for p in paths]


def check_averageable(folders: list[Path]) -> None:
    """Refuse (:class:`AveragingError`) members that differ in architecture/config, tokenizer/encoding or initial
    backbone, or that do not record theirs."""
    first, reference = folders[0], None
    for folder in folders:
        info = load_info(folder)
        initial = info.get("initial_backbone") or {}
        if not initial.get("fingerprint"):
            raise AveragingError(f"{folder} does not record its initial backbone (rewardlab.json 'initial_backbone'; "
                                 "models trained by rewardlab before it recorded one, or not by rewardlab): cannot "
                                 "check that the members share their initialisation")
        config = {k: v for k, v in checked_config(str(folder)).to_dict().items() if k not in UNCHECKED_CONFIG}
        tokenizer, encoder = load_classifier_tokenizer(folder)
        policy = EncodingPolicy.from_dict(tokenizer, encoder, info.get("encoding", {}))
        current = {"config": config, "encoding": encoding_probe(policy), "initial": initial,
                   "vocab": tokenizer.get_vocab()}
        if reference is None:
            reference = current
            continue
        if current["config"] != reference["config"]:
            keys = sorted(k for k in current["config"].keys() | reference["config"].keys()
                          if current["config"].get(k) != reference["config"].get(k))
            raise AveragingError(f"{folder} and {first} differ in architecture or config ({', '.join(keys[:6])}); "
                                 "only members of one architecture average")
        if current["vocab"] != reference["vocab"] or current["encoding"] != reference["encoding"]:
            raise AveragingError(f"{folder} and {first} have different tokenizers or encodings")
        if current["initial"] != reference["initial"]:
            raise AveragingError(
                f"{folder} and {first} were fine-tuned from different initial backbones ({initial.get('name')} "
                f"{initial['fingerprint']} against {reference['initial'].get('name')} "
                f"{reference['initial']['fingerprint']}); weight averaging needs one shared initialisation")


def load_classifier_tokenizer(folder: Path):
    return AutoTokenizer.from_pretrained(folder), is_encoder(checked_config(str(folder)))


def merged(folder: Path) -> tuple[torch.nn.Module, object, torch.dtype]:
    """(the member as a plain sequence classifier in float32, LoRA merged; its tokenizer; the dtype it was trained
    in: a LoRA member's adapters', as :func:`rewardlab.models.saved.save_reward_model` merges in it)."""
    model, tokenizer, _ = load_classifier(str(folder))
    trained = {p.dtype for n, p in model.named_parameters() if "lora_" in n} or {model.dtype}
    model = model.float()
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.eval(), tokenizer, trained.pop()


def average(folders: list[Path], output: str | Path) -> Path:
    """Average ``folders`` into a plain model folder at ``output`` (one folder: it, merged); returns it."""
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AveragingError(f"--output {out} exists and is not an empty folder")
    if len(folders) > 1:  # one member alone is that member, as a plain folder (LoRA merged)
        check_averageable(folders)
    dtypes = set()
    model = tokenizer = total = None
    for folder in folders:  # a running sum: one member in memory beside it
        member, member_tokenizer, dtype = merged(folder)
        dtypes.add(dtype)
        state = member.state_dict()
        if total is None:
            model, tokenizer = member, member_tokenizer
            total = {k: v.clone() for k, v in state.items()}
            continue
        for key, value in state.items():
            if value.is_floating_point():
                total[key] += value
            elif not torch.equal(total[key], value):
                raise AveragingError(f"{folder}: the integer tensor {key} differs from {folders[0]}'s")
    model.load_state_dict({k: v / len(folders) if v.is_floating_point() else v for k, v in total.items()})
    model.to(dtypes.pop() if len(dtypes) == 1 else torch.float32)
    info = {k: v for k, v in load_info(folders[0]).items() if k not in MEASURED}
    info["averaged_from"] = [str(f) for f in folders]
    info["averaging"] = "uniform mean of every floating-point weight, LoRA merged first (WARM, arXiv 2401.12187)"
    recipe = saved_recipe(folders[0]) if (folders[0] / RECIPE_FILE).is_file() else {}
    return save_reward_model(model, tokenizer, out, recipe, info)
