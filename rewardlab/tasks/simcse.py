"""The SimCSE learner: a sentence encoder (:mod:`rewardlab.models.sentence`) trained with the InfoNCE loss of
:class:`~rewardlab.objectives.SimCSELoss`, evaluated by STS Spearman (:mod:`rewardlab.evaluation.sts`).

- Unsupervised (``contrastive.supervised: false``): sentences from ``contrastive.sentence_column`` (one or several
  columns of a .csv/.jsonl/... file, or the lines of a .txt file). Each sentence is in the batch twice; the two
  copies differ only by their dropout masks, so dropout must be on (``model.dropout: true``).
- Supervised: ``contrastive.pair_columns`` (anchor, positive), optionally ``contrastive.hard_negative_column``.

The saved folder is a plain transformers ``AutoModel`` (LoRA merged) with its tokenizer, ``rewardlab.json``
(pooling, maximum length) and the sentence-transformers module files, so ``SentenceTransformer(folder)`` loads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from rewardlab.config import Recipe
from rewardlab.data.sentences import read_sentence_pairs, read_sentences
from rewardlab.data.sts import read_sts
from rewardlab.errors import RecipeError
from rewardlab.evaluation.parallel import map_across_processes
from rewardlab.evaluation.sts import StsPair, cosine_similarities, format_sts, sts_metrics, tokenize
from rewardlab.models.sentence import SentenceEncoder, has_dropout, load_backbone_model, save_sentence_encoder
from rewardlab.models.setup import trainable_parameters
from rewardlab.objectives import SimCSELoss
from rewardlab.objectives.cached import cached_backward, length_sorted_chunks, without_trailing_padding

COLUMNS = ("anchors", "positives", "hard_negatives")  # a batch's columns: SimCSELoss's arguments, in order


@dataclass
class SentenceBatch:
    """k columns of b examples as k·b right-padded rows, column after column: anchors, positives[, hard negatives].

    Shape notation: b = examples, k = ``columns``, s = longest row. ``input_ids``, ``attention_mask``: (k·b, s).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    columns: int

    def to(self, device) -> SentenceBatch:
        return SentenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.columns)

    def chunks(self, size: int) -> list[SentenceBatch]:
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
        save_sentence_encoder(model, self.tokenizer, output_dir, self.recipe.to_dict(), info)
