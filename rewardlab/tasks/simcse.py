"""SimCSE sentence embeddings: a backbone pooled into one vector per sentence, trained with the InfoNCE loss of
:class:`~rewardlab.objectives.SimCSELoss`, evaluated by STS Spearman (:mod:`rewardlab.evaluate_sts`).

- Unsupervised (``contrastive.supervised: false``): sentences from ``contrastive.sentence_column`` (one or several
  columns of a .csv/.jsonl/... file, or the lines of a .txt file). Each sentence is in the batch twice; the two
  copies differ only by their dropout masks, so dropout must be on (``model.dropout: true``).
- Supervised: ``contrastive.pair_columns`` (anchor, positive), optionally ``contrastive.hard_negative_column``.

The saved folder is a plain transformers ``AutoModel`` (LoRA merged) with its tokenizer, ``rewardlab.json``
(pooling, maximum length) and the sentence-transformers module files, so ``SentenceTransformer(folder)`` loads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from torch import nn
from rewardlab.backbones import checkpoint_layers, disable_dropout, load_text_model, trainable_parameters
from rewardlab.config import ModelSettings, Recipe, RecipeError, to_dict
from rewardlab.data.sentences import read_sentence_pairs, read_sentences
from rewardlab.evaluate_sts import StsPair, cosine_similarities, format_sts, read_sts, sts_metrics, tokenize
from rewardlab.heads import pool
from rewardlab.objectives import SimCSELoss
from rewardlab.objectives.cached import cached_backward, length_sorted_chunks, without_trailing_padding
from rewardlab.offline import resolve_offline
from rewardlab.save import INFO_FILE, load_info
from rewardlab.tasks import map_across_processes

# Attention dropout given to backbones that have no dropout at all (Llama, Qwen, Mistral, ...) when
# `model.dropout: true`: BERT's rate, the one the SimCSE paper uses.
ATTENTION_DROPOUT = 0.1
# sentence-transformers' Pooling config keys for rewardlab's poolings.
ST_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "last": "pooling_mode_lasttoken"
}
COLUMNS = ("anchors", "positives", "hard_negatives")  # a batch's columns: SimCSELoss's arguments, in order


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


@dataclass
class SentenceBatch:
    """k columns of b examples as k·b right-padded rows, column after column: anchors, positives[, hard negatives].

    Shape notation: b = examples, k = ``columns``, s = longest row. ``input_ids``, ``attention_mask``: (k·b, s).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    columns: int

    def to(self, device) -> "SentenceBatch":
        return SentenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.columns)

    def chunks(self, size: int) -> list["SentenceBatch"]:
        """The batch as batches of ``size`` examples (every column of each), the examples sorted by length (their
        longest column) and each chunk cut to its own longest row: what a cached-gradient batch embeds."""
        b = self.input_ids.shape[0] // self.columns
        lengths = self.attention_mask.view(self.columns, b, -1).sum(-1).amax(0)
        chunks = []
        for examples in length_sorted_chunks(lengths, size):
            rows = (torch.arange(self.columns)[:, None] * b + examples).flatten().to(self.input_ids.device)
            ids, mask = without_trailing_padding(self.input_ids[rows], self.attention_mask[rows])
            chunks.append(SentenceBatch(ids, mask, self.columns))
        return chunks


class SentenceCollator:
    """Examples (tuples of k texts) → :class:`SentenceBatch`. A single sentence is repeated (k = 2): both copies go
    through the same forward pass, so they get different dropout masks."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, examples: list[tuple[str, ...]]) -> SentenceBatch:
        columns = list(zip(*examples))
        if len(columns) == 1:
            columns = columns * 2
        encoded = tokenize(self.tokenizer, [text for column in columns for text in column], self.max_length)
        return SentenceBatch(encoded["input_ids"], encoded["attention_mask"], len(columns))


@torch.no_grad()
def in_batch_accuracy(anchors: torch.Tensor, positives: torch.Tensor, **_) -> torch.Tensor:
    """The share of anchors whose nearest positive on this process is their own."""
    similarity = nn.functional.normalize(anchors, dim=-1) @ nn.functional.normalize(positives, dim=-1).T
    return (similarity.argmax(1) == torch.arange(len(similarity), device=similarity.device)).float().mean()


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
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": info["max_length"]}) + "\n")
    pooling = {"word_embedding_dimension": backbone.config.hidden_size,
               **{key: name == encoder.pooling for name, key in ST_POOLING_KEYS.items()}}
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")


class SimCSETask:
    """Unsupervised or supervised SimCSE; the main metric is STS Spearman on ``eval_data``."""

    main_metric = "spearman"

    def __init__(self, recipe: Recipe, log):
        settings = recipe.contrastive
        self.recipe = recipe
        if not settings.supervised and not recipe.model.dropout:
            raise RecipeError("unsupervised SimCSE needs dropout (a sentence's two copies differ only by their "
                              "dropout masks): set model.dropout: true, or contrastive.supervised: true for pairs")
        if settings.supervised and len(settings.pair_columns) != 2:
            raise RecipeError(f"recipe key 'contrastive.pair_columns' must name 2 columns (anchor, positive), got "
                              f"{settings.pair_columns}")
        backbone, self.tokenizer, self.encoder = load_backbone_model(recipe.model, recipe.seed)
        if settings.pooling == "cls" and not self.encoder:
            raise RecipeError(f"recipe key 'contrastive.pooling': cls reads the first token, which in a causal LM "
                              f"({recipe.model.name}) sees nothing after it; choose mean or last")
        if not settings.supervised and not has_dropout(backbone):
            raise RecipeError(f"unsupervised SimCSE needs dropout, and {recipe.model.name} has none: its two views of "
                              f"a sentence would be identical; use a backbone with dropout or supervised pairs")
        torch.manual_seed(recipe.seed)  # the MLP head
        # Training mode throughout: from_pretrained returns the backbone in eval mode, where dropout (the two views
        # of unsupervised SimCSE) and the MLP head would be off.
        self.model = SentenceEncoder(backbone, settings.pooling, settings.mlp_head).train()
        trainable, total = trainable_parameters(self.model)
        log(f"model {recipe.model.name}: {trainable:,} of {total:,} parameters trained "
            f"({'LoRA r=' + str(recipe.model.lora.r) if recipe.model.lora.r else 'full fine-tuning'}); "
            f"{settings.pooling} pooling{', MLP head in training' if settings.mlp_head else ''}; "
            f"{'supervised' if settings.supervised else 'unsupervised'} SimCSE, τ = {settings.temperature}")
        if settings.supervised:
            self.train_data, summary = read_sentence_pairs(recipe.train_data, settings.pair_columns,
                                                           settings.hard_negative_column, settings.min_pair_score,
                                                           recipe.train_split)
        else:
            columns = settings.sentence_column
            self.train_data, summary = read_sentences(recipe.train_data, [columns] if isinstance(columns, str)
                                                      else columns, recipe.train_split)
        log(f"{recipe.train_data}: {summary}")
        self.eval_data = read_sts(recipe.eval_data, recipe.eval_split) if recipe.eval_data else []
        if self.eval_data:
            log(f"{recipe.eval_data}: {len(self.eval_data)} STS pairs")
        self.collate = SentenceCollator(self.tokenizer, recipe.max_length)
        self.loss_fn = SimCSELoss(settings.temperature, settings.gather_across_processes)

    def embed(self, model, batch: SentenceBatch) -> dict[str, torch.Tensor]:
        """The loss's arguments: each column's (b, d) embeddings, from one forward pass over all of them."""
        return dict(zip(COLUMNS, model(batch.input_ids, batch.attention_mask).chunk(batch.columns)))

    def loss(self, model, batch: SentenceBatch):
        embeddings = self.embed(model, batch)
        return self.loss_fn(**embeddings), {"accuracy": in_batch_accuracy(**embeddings)}

    def backward(self, accelerator: Accelerator, model, batch: SentenceBatch):
        """The batch's gradients: in one pass, or as a cached-gradient batch of ``contrastive.mini_batch_size``
        examples a chunk (:mod:`rewardlab.objectives.cached`)."""
        size = self.recipe.contrastive.mini_batch_size
        if size is None:
            loss, stats = self.loss(model, batch)
            accelerator.backward(loss)
            return loss, stats
        loss, embeddings = cached_backward(accelerator, model, batch.chunks(size),
                                           lambda chunk: self.embed(model, chunk), self.loss_fn)
        return loss, {"accuracy": in_batch_accuracy(**embeddings)}

    def evaluate(self, accelerator: Accelerator, model, data: list) -> dict:
        if not data or not isinstance(data[0], StsPair):  # no eval_data: training sentences have no scores
            return {"pairs": 0, "spearman": math.nan, "pearson": math.nan}
        encoder = accelerator.unwrap_model(model)
        similarities = map_across_processes(accelerator, data, self.eval_batch_size, lambda pairs: cosine_similarities(
            encoder, self.tokenizer, pairs, self.recipe.max_length, len(pairs), accelerator.device))
        return sts_metrics(similarities, data)

    @property
    def eval_batch_size(self) -> int:
        return self.recipe.micro_batch_size or self.recipe.batch_size

    def format(self, name: str, metrics: dict) -> str:
        if not metrics["pairs"]:
            return f"{name}: no STS evaluation (set eval_data to a sentence1,sentence2,score file)"
        return format_sts(name, metrics)

    def save(self, model: SentenceEncoder, output_dir: Path, info: dict) -> None:
        info = {"objective": "simcse", "pooling": model.pooling, "max_length": self.recipe.max_length,
                "encoder": self.encoder, **info}
        save_sentence_encoder(model, self.tokenizer, output_dir, to_dict(self.recipe), info)
