"""Cached-gradient (GradCache) batches: with dropout on, the gradients of SimCSE (unsupervised, supervised with hard
negatives, LoRA), CLIP and SigLIP (both towers trained) equal those of the loss computed from the same chunk passes
in one graph, on 1 process and on 2 with gathered negatives; without dropout they equal the plain one-pass loss; and
the training loop runs them with gradient accumulation, several processes and resume."""

import json
import os
import subprocess

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate import Accelerator
from helpers import accelerate_launch, join_gloo_group, logged, subprocess_env
from torch import nn

from rewardlab.config import RECIPES_DIR, load_recipe
from rewardlab.errors import RecipeError
from rewardlab.objectives.cached import cached_backward
from rewardlab.tasks.clip import ClipTask, image_text_chunks
from rewardlab.tasks.simcse import SimCSETask
from rewardlab.training import loop as train_module
from rewardlab.training.loop import train

WORDS = "a man woman dog child is running eating sleeping cooking in the park at home on beach quickly".split()


def write_triples(path, n: int = 40):
    """Rows with an anchor, a positive and a hard negative of varied lengths (1 to 9 words, repeated)."""
    rows = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + i % 9)]
        rows.append({"anchor": " ".join(words) + f" {i}", "positive": " ".join(reversed(words)) + f" {i}",
                     "negative": " ".join(words[::2]) + f" no {i}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_task(kind: str, tmp_path, *overrides):
    """A tiny learner with dropout on whose micro-batch is embedded in chunks of 3 examples."""
    common = ["model.dropout=true", "contrastive.mini_batch_size=3", "eval_data=null", "batch_size=10",
              f"output_dir={tmp_path / 'out'}", *overrides]
    if kind in ("clip", "siglip"):
        recipe = load_recipe(RECIPES_DIR / "clip-shapes-tiny.yaml",
                             [f"objective={kind}", "train_data=shapes:20", "clip.image_size=32", *common])
        return ClipTask(recipe, lambda _: None)
    data = write_triples(tmp_path / "triples.jsonl")
    columns = {"unsupervised": ["contrastive.sentence_column=[anchor, positive]"],
               "hard_negatives": ["contrastive.supervised=true", "contrastive.pair_columns=[anchor, positive]",
                                  "contrastive.hard_negative_column=negative", "model.name=tiny-llama",
                                  "model.lora.r=4", "contrastive.pooling=last"]}[kind]
    recipe = load_recipe(None, ["objective=simcse", "model.name=tiny-bert", f"train_data={data}", "max_length=32",
                                *columns, *common])
    return SimCSETask(recipe, lambda _: None)


def chunks_and_embed(task, model, batch, size):
    if isinstance(task, ClipTask):
        return image_text_chunks(batch, size), lambda chunk: model(**chunk.inputs())
    return batch.chunks(size), lambda chunk: task.embed(model, chunk)


def one_graph_loss(task, model, batch, size) -> torch.Tensor:
    """The loss over the same chunk passes as a cached batch (so the same dropout masks), kept in one graph: the
    gradients a cached batch must reproduce. The logit scale and bias are read from the first chunk's pass."""
    chunks, embed = chunks_and_embed(task, model, batch, size)
    outputs = [embed(chunk) for chunk in chunks]
    merged = {k: torch.cat([o[k] for o in outputs]) if v.dim() else v for k, v in outputs[0].items()}
    return task.loss_fn(**merged)


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def assert_same_gradients(got: dict, expected: dict, trained: set[str]) -> None:
    assert set(got) == set(expected) == trained
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


TRAINED_SCALARS = {"clip": {"logit_scale"}, "siglip": {"logit_scale", "logit_bias"}}


@pytest.mark.parametrize("kind", ["unsupervised", "hard_negatives", "clip", "siglip"])
def test_with_dropout_on_cached_gradients_equal_those_of_the_same_passes_in_one_graph(kind, tmp_path):
    """10 examples in chunks of 3, 3, 3, 1. Replaying each chunk from its saved random state draws the same dropout
    masks (BERT's dropout, Llama's attention dropout, LoRA's dropout), so the loss and every trained parameter's
    gradient equal the one-graph loss's to 1e-5; with another seed (other masks) the gradients differ."""
    task = make_task(kind, tmp_path)
    model, accelerator = task.model, Accelerator(cpu=True)
    batch = task.collate(task.train_data[:10])
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert TRAINED_SCALARS.get(kind, set()) <= trained and any(n.startswith("image_tower.") for n in trained) == (
        kind in TRAINED_SCALARS)

    torch.manual_seed(1)
    expected_loss = one_graph_loss(task, model, batch, 3)
    expected_loss.backward()
    expected, after_expected = gradients(model), torch.get_rng_state()

    torch.manual_seed(1)
    loss, _ = task.backward(accelerator, model, batch)
    assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-6)
    assert_same_gradients(gradients(model), expected, trained)
    assert torch.equal(torch.get_rng_state(), after_expected)  # the random stream goes on as after one pass

    torch.manual_seed(2)
    task.backward(accelerator, model, batch)
    other = gradients(model)
    assert max((other[n] - expected[n]).abs().max().item() for n in expected) > 1e-3


@pytest.mark.parametrize("kind", ["hard_negatives", "clip"])
def test_without_dropout_a_cached_batch_equals_the_plain_one_pass_loss(kind, tmp_path):
    """Chunks sorted by length and cut to their own longest row change nothing but float summation order."""
    task = make_task(kind, tmp_path, "model.dropout=false", "model.lora.dropout=0")
    model, accelerator = task.model, Accelerator(cpu=True)
    batch = task.collate(task.train_data[:10])
    expected_loss, expected_stats = task.loss(model, batch)
    expected_loss.backward()
    expected = gradients(model)
    loss, stats = task.backward(accelerator, model, batch)
    assert loss.item() == pytest.approx(expected_loss.item(), abs=1e-6)
    assert stats.keys() == expected_stats.keys() and stats["accuracy"] == expected_stats["accuracy"]
    assert_same_gradients(gradients(model), expected, set(expected))


def test_chunks_hold_every_column_of_their_examples_sorted_by_length_without_extra_padding(tmp_path):
    task = make_task("hard_negatives", tmp_path)
    batch = task.collate(task.train_data[:10])
    chunks = batch.chunks(4)
    assert [c.input_ids.shape[0] for c in chunks] == [12, 12, 6] and all(c.columns == 3 for c in chunks)
    lengths = [c.attention_mask.view(3, -1, c.attention_mask.shape[1]).sum(-1).amax(0) for c in chunks]
    flat = torch.cat(lengths)
    assert torch.equal(flat, flat.sort().values)  # shortest examples first
    assert all(c.attention_mask[:, -1].any() for c in chunks)  # each cut to its own longest row
    # every example's three texts are still together: rows i, b + i, 2b + i of a chunk
    texts = lambda ids, mask: task.tokenizer.decode(ids[mask.bool()])
    originals = {tuple(texts(batch.input_ids[r + 10 * c], batch.attention_mask[r + 10 * c]) for c in range(3))
                 for r in range(10)}
    found = set()
    for chunk in chunks:
        b = chunk.input_ids.shape[0] // 3
        found |= {tuple(texts(chunk.input_ids[r + b * c], chunk.attention_mask[r + b * c]) for c in range(3))
                  for r in range(b)}
    assert found == originals


class BatchNormEncoder(nn.Module):
    """Linear → BatchNorm → Dropout: batch statistics per chunk, running statistics, dropout."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 3))

    def forward(self, x):
        return {"anchors": self.layers(x[:, :4]), "positives": self.layers(x[:, 4:])}


def test_batch_norm_running_statistics_are_updated_once_per_chunk():
    """The pass without a graph leaves the running statistics as they were: after a cached batch they are those of
    embedding each chunk once (as micro-batches would)."""
    from rewardlab.objectives import SimCSELoss

    torch.manual_seed(0)
    model, data = BatchNormEncoder().train(), torch.randn(9, 8)
    chunks = list(data.split(3))
    reference = BatchNormEncoder().train()
    reference.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    outputs = [reference(c) for c in chunks]
    SimCSELoss(0.5)(**{k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}).backward()

    torch.manual_seed(1)
    cached_backward(Accelerator(cpu=True), model, chunks, model, SimCSELoss(0.5))
    for (name, got), expected in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6, msg=name)  # running mean/var, count
    assert model.layers[1].num_batches_tracked.item() == 6  # 3 chunks × 2 columns, not twice that
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["unsupervised", "clip"])
def test_a_chunk_size_below_one_names_the_key(kind, tmp_path):
    with pytest.raises(RecipeError, match="'contrastive.mini_batch_size' must be >= 1, got 0"):
        make_task(kind, tmp_path, "contrastive.mini_batch_size=0")


# Two processes, gathered negatives (gloo, Accelerate's DDP)

WORLD = 2


def distributed_worker(rank: int, kind: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      OMP_NUM_THREADS="1")
    join_gloo_group(rank, WORLD, tmp)  # Accelerate takes the process group it finds
    accelerator = Accelerator(cpu=True)
    try:
        from pathlib import Path

        (Path(tmp) / f"rank{rank}").mkdir()
        task = make_task(kind, Path(tmp) / f"rank{rank}")
        model = accelerator.prepare(task.model)
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        batch = task.collate(task.train_data[rank * 5 : rank * 5 + 5])  # 5 examples each: chunks of 3 and 2

        torch.manual_seed(1)
        expected_loss = one_graph_loss(task, task.model, batch, 3)  # the unwrapped module: DDP averages below
        expected_loss.backward()
        expected = gradients(task.model)
        for grad in expected.values():
            dist.all_reduce(grad)
            grad /= WORLD

        torch.manual_seed(1)
        loss, _ = task.backward(accelerator, model, batch)
        torch.save({"loss": loss, "expected_loss": expected_loss.detach(), "grads": gradients(task.model),
                    "expected": expected}, os.path.join(tmp, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["hard_negatives", "clip"])
@pytest.mark.slow
@pytest.mark.distributed
def test_on_two_processes_cached_gradients_equal_the_one_graph_loss_with_gathered_negatives(kind, tmp_path):
    """Each process embeds its 5 examples in chunks of 3 and 2 (dropout on) and scores its anchors against all 10
    processes' candidates (CLIP: the whole gathered batch). Its loss equals the one-graph loss over the same passes,
    and after DDP's single reduction (the first chunk's backward runs in no_sync) every process holds the averaged
    one-graph gradients."""
    mp.spawn(distributed_worker, args=(kind, str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    if kind == "hard_negatives":  # each process's anchors: different examples, different losses
        assert ranks[0]["loss"].item() != pytest.approx(ranks[1]["loss"].item())
    else:  # CLIP: every process scores the whole gathered batch
        assert ranks[0]["loss"].item() == pytest.approx(ranks[1]["loss"].item(), abs=1e-6)
    for r in ranks:
        assert r["loss"].item() == pytest.approx(r["expected_loss"].item(), abs=1e-6)
        assert_same_gradients(r["grads"], r["expected"], set(r["expected"]))


# The training loop


@pytest.mark.slow
def test_training_with_cached_batches_and_accumulation_follows_the_plain_run(tmp_path):
    """Supervised SimCSE with hard negatives, no dropout, 8 examples a step in 2 accumulation steps of 4, each in
    chunks of 3 and 1: the same losses, gradient norms' effect and weights as the plain run, step by step."""
    data = write_triples(tmp_path / "triples.jsonl")
    common = ["objective=simcse", "model.name=tiny-bert", "model.dropout=false", "contrastive.supervised=true",
              "contrastive.pair_columns=[anchor, positive]", "contrastive.hard_negative_column=negative",
              f"train_data={data}", "eval_data=null", "max_length=32", "batch_size=8", "micro_batch_size=4",
              "learning_rate=1e-3", "max_steps=4", "logging_steps=1"]
    train(load_recipe(None, [*common, f"output_dir={tmp_path / 'plain'}"]))
    train(load_recipe(None, [*common, "contrastive.mini_batch_size=3", f"output_dir={tmp_path / 'cached'}"]))
    plain, cached = logged(tmp_path / "plain"), logged(tmp_path / "cached")
    assert sorted(plain) == sorted(cached) == [1, 2, 3, 4]
    for step in plain:
        for key in ("train/loss", "train/accuracy"):
            assert cached[step][key] == pytest.approx(plain[step][key], abs=1e-5), (step, key)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_with_cached_batches_train_like_one_plain_process(tmp_path):
    """CLIP on tiny towers, 8 pairs a step: 2 processes each embedding 4 pairs in chunks of 3 and 1 (gathered
    negatives, DDP) give the losses of 1 process embedding all 8 at once."""
    overrides = ["train_data=shapes:48", "eval_data=null", "clip.image_size=32", "batch_size=8", "max_steps=3",
                 "logging_steps=1"]
    train(load_recipe(RECIPES_DIR / "clip-shapes-tiny.yaml", [*overrides, f"output_dir={tmp_path / 'one'}"]))
    command = accelerate_launch(2) + ["-m", "rewardlab.cli", "train", str(RECIPES_DIR / "clip-shapes-tiny.yaml"),
                                      *overrides, "contrastive.mini_batch_size=3", f"output_dir={tmp_path / 'two'}"]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = logged(tmp_path / "one"), logged(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step]["train/loss"] == pytest.approx(one[step]["train/loss"], abs=1e-5), step


@pytest.mark.slow
def test_resume_with_cached_batches_and_dropout_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Unsupervised SimCSE (dropout is the augmentation) on tiny BERT with LoRA, cached batches in chunks of 3,
    2 accumulation steps: stopped after the checkpoint at step 2, resumed to step 5 (crossing an epoch), the losses
    are the uninterrupted run's."""
    data = write_triples(tmp_path / "triples.jsonl", n=32)
    common = ["objective=simcse", "model.name=tiny-bert", "model.dropout=true", "model.lora.r=4",
              "contrastive.sentence_column=[anchor, positive]", "contrastive.mini_batch_size=3",
              f"train_data={data}", "eval_data=null", "max_length=32", "batch_size=16", "micro_batch_size=8",
              "learning_rate=1e-3", "max_steps=5", "save_steps=2", "logging_steps=1"]
    train(load_recipe(None, [*common, f"output_dir={tmp_path / 'straight'}"]))

    interrupted = load_recipe(None, [*common, f"output_dir={tmp_path / 'resumed'}"])
    real_save = train_module.save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    train(interrupted, resume=True)
    straight, resumed = logged(tmp_path / "straight"), logged(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4, 5]
    for step in range(3, 6):
        assert resumed[step]["train/loss"] == pytest.approx(straight[step]["train/loss"], abs=1e-6), step
