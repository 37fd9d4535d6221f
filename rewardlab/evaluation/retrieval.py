"""Image–text retrieval and zero-shot classification from embeddings."""

from __future__ import annotations

import torch

RECALL_AT = (1, 5, 10)


def zero_shot_metrics(images: torch.Tensor, prompts: torch.Tensor, labels: list[int]) -> dict:
    """Each image is given the class whose prompt embedding is closest: accuracy over (n, d) images, (c, d) class
    prompts and n class indices."""
    predicted = (images @ prompts.T).argmax(1)
    return {"zero_shot_accuracy": (predicted == torch.tensor(labels)).float().mean().item(),
            "zero_shot_classes": len(prompts)}


def retrieval_metrics(images: torch.Tensor, texts: torch.Tensor, captions: list[str]) -> dict:
    """Image→text and text→image recall@k: the share of queries whose top k contain their pair.

    A candidate with the same caption as the pair counts as the pair: identical captions have identical
    embeddings, so which of them ranks first is arbitrary (generated data repeats captions).
    """
    group = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([group[c] for c in captions])
    similarity = images @ texts.T
    metrics = {}
    for direction, scores in (("i2t", similarity), ("t2i", similarity.T)):
        ranked = scores.topk(min(max(RECALL_AT), scores.shape[1]), dim=1).indices
        hits = ids[ranked] == ids[:, None]
        for k in RECALL_AT:
            metrics[f"{direction}_recall@{k}"] = hits[:, :k].any(1).float().mean().item()
    return metrics
