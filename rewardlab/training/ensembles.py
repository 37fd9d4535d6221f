"""Training an ensemble (``rewardlab train RECIPE ensemble.members=N``): its members one after another through
:func:`rewardlab.training.loop.train`, into one folder (laid out as :mod:`rewardlab.inference.ensemble` describes).

Member i is the recipe with ``seed + i`` (its data order, and its head and LoRA initialisation unless
``ensemble.shared_init`` gives every member ``seed``'s) and ``output_dir``
``OUT/member-i``; with ``ensemble.backbones``, members ``members·b … members·(b+1) − 1`` train on backbone b. Tiny
random backbones are built from one seed for all members (``model.init_seed``, default ``seed``), so that every
member starts from the same backbone, as pretrained ones do. Under LoRA a member saves its adapter and head only and
``OUT/base-b`` holds the frozen backbone once. Each member's folder holds the recipe that retrains it alone.

``--resume`` keeps the members that are complete, resumes the one that was interrupted and trains the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import yaml
from accelerate import PartialState

from rewardlab.config import Recipe, recipe_from_dict
from rewardlab.data.encode import EncodingPolicy
from rewardlab.errors import RecipeError
from rewardlab.models.loading import load_backbone, load_tokenizer, weights_fingerprint
from rewardlab.models.manifest import FORMAT, MANIFEST, encoding_probe
from rewardlab.models.saved import load_info, save_tokenizer
from rewardlab.training.checkpoints import check_output_dir, write_atomically


@dataclasses.dataclass
class Member:
    recipe: Recipe
    base: str | None  # the folder of the shared frozen backbone (LoRA), relative to the ensemble's

    @property
    def folder(self) -> Path:
        return Path(self.recipe.output_dir)


def member_recipes(recipe: Recipe) -> list[Member]:
    """The recipe of every member, in order."""
    settings, lora = recipe.ensemble, recipe.model.lora.r > 0
    if recipe.seed + settings.size - 1 > 2**32 - 1:
        raise RecipeError(f"recipe key 'seed': {recipe.seed} + {settings.size} members passes 2**32 - 1")
    init_seed = recipe.seed if recipe.model.init_seed is None else recipe.model.init_seed
    members = []
    for b, backbone in enumerate(settings.backbones or [recipe.model.name]):
        for _ in range(settings.members):
            i = len(members)
            data = recipe.to_dict()
            data["model"] |= {"name": backbone, "init_seed": init_seed,
                              "head_seed": recipe.seed if settings.shared_init else recipe.model.head_seed}
            data |= {"seed": recipe.seed + i, "ensemble": {}, "save_adapter_only": lora,
                     "output_dir": str(Path(recipe.output_dir, f"member-{i}"))}
            members.append(Member(recipe_from_dict(data, f"ensemble member {i}"), f"base-{b}" if lora else None))
    return members


def check_shared_encoding(recipe: Recipe, members: list[Member]) -> None:
    """Before any training: the backbones encode texts alike (an ensemble encodes a text once for all members)."""
    names = list(dict.fromkeys(m.recipe.model.name for m in members))
    probes = {}
    for name in names:
        tokenizer, encoder = load_tokenizer(name)
        probes[name] = encoding_probe(EncodingPolicy(tokenizer, encoder, recipe.max_length, recipe.truncation))
    for name in names[1:]:
        if probes[name] != probes[names[0]]:
            raise RecipeError(f"recipe key 'ensemble.backbones': {name} encodes texts differently from {names[0]} "
                              "(another tokenizer or reward token); an ensemble encodes a text once for all its "
                              "members, so its backbones must share a tokenizer")


def train_ensemble(recipe: Recipe, resume: bool = False, resume_changed: bool = False) -> dict:
    """Train every member of ``recipe.ensemble`` into ``recipe.output_dir`` and write the manifest last (a folder
    without it is not an ensemble yet). Returns ``{"members": [each member's final info]}``."""
    from rewardlab.training.loop import train

    out, state = Path(recipe.output_dir), PartialState()
    members = member_recipes(recipe)
    if (out / MANIFEST).exists() and not resume:
        raise RecipeError(f"recipe key 'output_dir': {out} already holds an ensemble ({MANIFEST}); choose another "
                          "output_dir (or delete this one)")
    check_shared_encoding(recipe, members)
    for member in members:  # every folder checked before the first member trains
        if not (resume and member_complete(member)):
            check_output_dir(member.folder, resume)
    if state.is_main_process:
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    infos = []
    for i, member in enumerate(members):
        if member.base and state.is_main_process:
            save_base(member, out / member.base)
        state.wait_for_everyone()
        if resume and member_complete(member):
            state.print(f"ensemble member {i}: complete in {member.folder}, kept")
        else:
            state.print(f"ensemble member {i} of {len(members)}: seed {member.recipe.seed}, "
                        f"backbone {member.recipe.model.name}")
            train(member.recipe, resume=resume, resume_changed=resume_changed)
        if member.base and state.is_main_process:
            point_adapter_at_base(member.folder, out / member.base)
        state.wait_for_everyone()
        infos.append(load_info(member.folder))
    if state.is_main_process:
        write_atomically(out / MANIFEST, json.dumps(manifest(recipe, members, infos), indent=2) + "\n")
        metric = main_metric(infos[0])
        values = ", ".join(f"{info.get('metrics', {}).get(metric, float('nan')):.4f}" for info in infos)
        state.print(f"ensemble of {len(members)} saved to {out}; members' {metric}: {values}")
    return {"members": infos}


def manifest(recipe: Recipe, members: list[Member], infos: list[dict]) -> dict:
    settings = recipe.ensemble
    return {
        "format": FORMAT,
        "members": [{"path": m.folder.name, "seed": m.recipe.seed, "backbone": m.recipe.model.name, "base": m.base,
                     "adapter": m.base is not None, main_metric(info): info.get("metrics", {}).get(main_metric(info))}
                    for m, info in zip(members, infos)],
        "reward": settings.reward, "std_weight": settings.std_weight, "center_members": settings.center_members,
        "std": "sample standard deviation across members (n - 1)",
    }


def main_metric(info: dict) -> str:
    return info.get("main_metric", "accuracy")


def member_complete(member: Member) -> bool:
    """A member's folder holds its whole model (the files moved in last are there)."""
    folder = member.folder
    if (folder / ".saving").exists() or not (folder / "rewardlab.json").is_file():
        return False
    # config.json moves in last; a LoRA member's is removed afterwards (point_adapter_at_base), recipe.yaml just before
    adapter = (member.base is not None and (folder / "adapter_config.json").is_file()
               and (folder / "recipe.yaml").is_file())
    return (folder / "config.json").is_file() or adapter


def save_base(member: Member, folder: Path) -> None:
    """The frozen backbone the LoRA members start from (and its tokenizer), once: written beside, then renamed."""
    if (folder / "config.json").is_file():
        return
    backbone = load_backbone(member.recipe.model, member.recipe.seed)
    base = backbone.model.unload()  # the LoRA layers out, the frozen weights as they were
    if weights_fingerprint(base) != backbone.fingerprint:
        raise RuntimeError("the unwrapped base is not the backbone the members start from")
    staging = folder.with_name(f".{folder.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    base.save_pretrained(staging)
    save_tokenizer(backbone.tokenizer, staging, member.recipe.max_length)
    os.replace(staging, folder)


def point_adapter_at_base(member_folder: Path, base: Path) -> None:
    """Make a LoRA member's folder load with plain transformers (``from_pretrained(member)`` reads the adapter and
    fetches its base from ``base_model_name_or_path``): the base's absolute path there, and no config.json of its
    own (transformers would take the folder for a whole model). rewardlab loads the base from the manifest's
    relative path, so a moved ensemble still loads with rewardlab."""
    adapter = member_folder / "adapter_config.json"
    config = json.loads(adapter.read_text())
    config["base_model_name_or_path"] = str(base.resolve())
    write_atomically(adapter, json.dumps(config, indent=2) + "\n")
    (member_folder / "config.json").unlink(missing_ok=True)
