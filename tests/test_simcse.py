"""SimCSE: loss values against hand-computed ones, pooling, Spearman with ties, data reading and its errors, dropout
views, a tiny backbone learning paraphrases (STS Spearman rises), save → reload (transformers, sentence-transformers),
and `rewardlab eval` on STS files."""

import csv
import json
import math
import random

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModel, AutoTokenizer

from rewardlab.cli import main
from rewardlab.config import load_recipe
from rewardlab.data.sts import read_sts
from rewardlab.errors import DataError, RecipeError
from rewardlab.evaluation.sts import average_ranks, embed, spearman
from rewardlab.models.loading import tiny_config, tiny_tokenizer
from rewardlab.models.poolers import pool
from rewardlab.models.sentence import load_sentence_encoder
from rewardlab.objectives import SimCSELoss
from rewardlab.tasks.simcse import SimCSETask, read_sentence_pairs, read_sentences
from rewardlab.training.loop import train

# A tiny world of 48 meanings, each said with synonyms: only training on paraphrase pairs can tell that "a guy is
# jogging" and "a man is running" mean the same thing, which is what the STS scores (shared meanings, 0-3) measure.
SLOTS = [
    [("a man", "a guy"), ("a woman", "a lady"), ("a dog", "a puppy"), ("a child", "a kid")],
    [("is running", "is jogging"), ("is eating", "is dining"), ("is sleeping", "is napping"),
     ("is cooking", "is baking")],
    [("in the park", "on the lawn"), ("at home", "in the house"), ("on the beach", "by the sea")],
]


def write_paraphrases(path, n: int, seed: int, sts: bool):
    """Rows sentence1,sentence2,score. Training (sts=False): one meaning said twice (score 3). STS: a meaning and
    a variant with each slot changed with probability 1/2; the score counts the shared slots."""
    rng = random.Random(seed)
    say = lambda meaning: " ".join(rng.choice(SLOTS[i][m]) for i, m in enumerate(meaning)) + "."
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence1", "sentence2", "score"])
        for _ in range(n):
            a = [rng.randrange(len(slot)) for slot in SLOTS]
            b = [rng.randrange(len(SLOTS[i])) if sts and rng.random() < 0.5 else m for i, m in enumerate(a)]
            writer.writerow([say(a), say(b), sum(x == y for x, y in zip(a, b))])
    return path


def save_tiny_backbone(folder, name: str):
    """A tiny random backbone saved as a plain transformers folder (loaded back with from_pretrained)."""
    tokenizer = tiny_tokenizer(encoder=name == "tiny-bert")
    AutoModel.from_config(tiny_config(name, len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def simcse_recipe(tmp_path, *overrides):
    train_data = write_paraphrases(tmp_path / "train.csv", 200, seed=0, sts=False)
    dev = write_paraphrases(tmp_path / "dev.csv", 100, seed=1, sts=True)
    return load_recipe(None, [
        "objective=simcse", "model.name=tiny-bert", "model.dropout=true", f"train_data={train_data}",
        f"eval_data={dev}", "max_length=64", "batch_size=16", "learning_rate=3e-3", "logging_steps=1",
        f"output_dir={tmp_path / 'out'}", *overrides,
    ])


# Loss


def test_simcse_loss_matches_hand_computed_values():
    """τ = 0.5; anchors (1, 0), (0, 1); positives (1, 0), (1, 1): cosines [[1, 1/√2], [0, 1/√2]], logits
    [[2, 1.414214], [0, 1.414214]], targets [0, 1]: mean(log(1 + e^−0.585786), log(1 + e^−1.414214))
    = mean(0.442548, 0.217622) = 0.330085."""
    anchors, positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert SimCSELoss(0.5)(anchors, positives).item() == pytest.approx(0.330085, abs=1e-6)
    # cosine, not dot product: scaling an embedding changes nothing
    assert SimCSELoss(0.5)(3 * anchors, positives / 7).item() == pytest.approx(0.330085, abs=1e-6)


def test_hard_negatives_are_extra_columns():
    """The same, plus hard negatives (0, 1), (−1, 0): row 0 logits [2, 1.414214, 0, −2] (target 0), row 1
    [0, 1.414214, 2, 0] (target 1). Row 0: log(e² + e^1.414214 + 1 + e^−2) − 2 = 2.536680 − 2 = 0.536680;
    row 1: log(1 + e^1.414214 + e² + 1) − 1.414214 = 1.188647; mean 0.862663."""
    loss = SimCSELoss(0.5)
    anchors, positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    negatives = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    assert loss.get_logits(anchors, positives, negatives).shape == (2, 4)
    assert loss(anchors, positives, negatives).item() == pytest.approx(0.862663, abs=1e-6)


def test_loss_is_cross_entropy_over_cosines_with_the_diagonal_as_target():
    torch.manual_seed(0)
    a, p = torch.randn(5, 8), torch.randn(5, 8)
    cos = torch.nn.functional.cosine_similarity(a[:, None], p[None], dim=-1)
    expected = torch.nn.functional.cross_entropy(cos / 0.05, torch.arange(5))
    assert SimCSELoss(0.05)(a, p).item() == pytest.approx(expected.item(), rel=1e-5)


# Pooling and Spearman


def test_pooling_reads_the_first_token_the_mean_of_real_tokens_or_the_last_real_token():
    hidden = torch.arange(12.0).reshape(2, 3, 2)  # row 0: 3 real tokens; row 1: 2 real tokens and a pad
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert pool(hidden, mask, "cls").tolist() == [[0, 1], [6, 7]]
    assert pool(hidden, mask, "mean").tolist() == [[2, 3], [7, 8]]
    assert pool(hidden, mask, "last").tolist() == [[4, 5], [8, 9]]


def test_pooling_reads_the_real_tokens_of_left_padded_rows():
    """Row 1 is left-padded (its pad comes first): its first real token is 1, its last is 2."""
    hidden = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    assert pool(hidden, mask, "cls").tolist() == [[0, 1], [8, 9]]
    assert pool(hidden, mask, "mean").tolist() == [[2, 3], [9, 10]]
    assert pool(hidden, mask, "last").tolist() == [[4, 5], [10, 11]]


def test_spearman_averages_tied_ranks():
    """x = (1, 2, 2, 3) → ranks (1, 2.5, 2.5, 4); y = (1, 3, 2, 4) → ranks (1, 3, 2, 4). Centred: (−1.5, 0, 0, 1.5)
    and (−1.5, 0.5, −0.5, 1.5): ρ = 4.5 / √(4.5 · 5) = 0.948683."""
    assert average_ranks([1, 2, 2, 3]).tolist() == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.948683, abs=1e-6)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1)
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    x, y = [rng.randint(0, 5) for _ in range(50)], [rng.random() for _ in range(50)]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


# Data


def test_unsupervised_sentences_from_several_columns_or_lines_without_repeats(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\nA cat.,A dog.,1\nA dog.,A bird.,2\n")
    examples, summary = read_sentences(str(path), ["sentence1", "sentence2"])
    assert examples == [("A cat.",), ("A dog.",), ("A bird.",)]
    assert summary == "3 distinct sentences from 2 rows (4 in all)"
    text = tmp_path / "corpus.txt"
    text.write_text("one sentence\n\n  another one  \n")
    assert read_sentences(str(text), ["ignored"])[0] == [("one sentence",), ("another one",)]


def test_supervised_pairs_with_hard_negatives_and_a_minimum_score(tmp_path):
    path = tmp_path / "nli.jsonl"
    rows = [{"sent0": "a", "sent1": "b", "hard_neg": "c", "score": 5},
            {"sent0": "d", "sent1": "e", "hard_neg": "f", "score": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, _ = read_sentence_pairs(str(path), ["sent0", "sent1"], "hard_neg", None)
    assert examples == [("a", "b", "c"), ("d", "e", "f")]
    assert read_sentence_pairs(str(path), ["sent0", "sent1"], None, 4.0)[0] == [("a", "b")]


def test_bad_rows_name_the_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"sentence": "fine"}\n{"sentense": "typo"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: missing column 'sentence' \(did you mean 'sentense'"):
        read_sentences(str(path), ["sentence"])
    sts = tmp_path / "sts.csv"
    sts.write_text("sentence1,sentence2,score\na,b,4\nc,d,high\n")
    with pytest.raises(DataError, match=rf"{sts}:3: column 'score' must be a finite number, got 'high'"):
        read_sts(str(sts))


# Training


def test_unsupervised_simcse_refuses_to_run_without_dropout(tmp_path):
    with pytest.raises(RecipeError, match="unsupervised SimCSE needs dropout"):
        SimCSETask(simcse_recipe(tmp_path, "model.dropout=false"), print)


def test_unsupervised_batches_hold_each_sentence_twice_and_dropout_tells_the_copies_apart(tmp_path):
    """A Llama folder: from_pretrained gives it in eval mode, and Llama has no dropout of its own (its attention
    dropout is switched on)."""
    llama = save_tiny_backbone(tmp_path / "llama", "tiny-llama")
    recipe = simcse_recipe(tmp_path, "contrastive.sentence_column=[sentence1, sentence2]", f"model.name={llama}",
                           "contrastive.pooling=last")
    task = SimCSETask(recipe, print)
    batch = task.collate(task.train_data[:4])
    assert batch.columns == 2 and batch.input_ids.shape[0] == 8
    assert torch.equal(batch.input_ids[:4], batch.input_ids[4:])
    assert all(module.training for module in task.model.modules())  # what the training loop gets
    first, second = task.model(batch.input_ids, batch.attention_mask).chunk(2)
    assert not torch.allclose(first, second)
    first, second = task.model.eval()(batch.input_ids, batch.attention_mask).chunk(2)
    assert torch.allclose(first, second)


@pytest.mark.slow
def test_tiny_backbone_learns_paraphrases_and_sts_spearman_rises(tmp_path):
    """Supervised SimCSE on 200 synonym paraphrase pairs, 30 steps: STS Spearman on 100 held-out scored pairs goes
    from what a random backbone gets from shared characters (about 0.37) to above 0.7 (about 0.8)."""
    recipe = simcse_recipe(tmp_path, "contrastive.supervised=true", "max_steps=30")
    task = SimCSETask(recipe, print)
    before = task.evaluate(Accelerator(cpu=True), task.model, task.eval_data)["spearman"]
    after = train(recipe)["metrics"]["spearman"]
    assert before < 0.5 and after > 0.7, (before, after)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BERT with LoRA after 2 unsupervised SimCSE steps, saved (LoRA merged): (folder, its STS dev file,
    the metrics training measured before saving)."""
    tmp_path = tmp_path_factory.mktemp("simcse")
    recipe = simcse_recipe(tmp_path, "contrastive.sentence_column=[sentence1, sentence2]", "contrastive.pooling=cls",
                           "max_steps=2", "model.lora.r=4")
    info = train(recipe)
    return tmp_path / "out", recipe.eval_data, info["metrics"]


def test_without_sts_data_the_metric_is_nan_and_says_why(tmp_path):
    task = SimCSETask(simcse_recipe(tmp_path, "eval_data=null", "contrastive.supervised=true"), print)
    metrics = task.evaluate(Accelerator(cpu=True), task.model, task.train_data[:8])
    assert metrics["pairs"] == 0 and math.isnan(metrics["spearman"])
    assert "no STS evaluation" in task.format("train", metrics)


def test_saved_model_reloads_in_transformers_and_sentence_transformers_with_the_same_embeddings(trained):
    folder, _, _ = trained
    info = json.loads((folder / "rewardlab.json").read_text())
    assert info["objective"] == "simcse" and info["pooling"] == "cls"
    texts = ["a man is running.", "a kid is napping at home."]
    encoder, tokenizer, _ = load_sentence_encoder(str(folder))
    ours = embed(encoder, tokenizer, texts, 64, 8, "cpu")
    plain_tokenizer, plain = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = plain(**plain_tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state
    torch.testing.assert_close(ours, hidden[:, 0], atol=1e-5, rtol=1e-5)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    torch.testing.assert_close(torch.from_numpy(st.encode(texts)), ours, atol=1e-5, rtol=1e-5)


def test_lora_is_merged_on_save_and_the_reloaded_model_gives_the_same_embeddings(tmp_path):
    recipe = simcse_recipe(tmp_path, "contrastive.supervised=true", "model.name=tiny-llama", "model.lora.r=4",
                           "contrastive.pooling=mean")
    task = SimCSETask(recipe, print)
    torch.manual_seed(1)
    with torch.no_grad():  # adapters as training might leave them (they start at zero)
        for name, parameter in task.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    texts = ["a man is running.", "a kid is napping at home.", "a puppy is dining by the sea."]
    adapted = embed(task.model, task.tokenizer, texts, 64, 8, "cpu")
    task.save(task.model, tmp_path / "saved", {"metrics": {}})
    assert not (tmp_path / "saved" / "adapter_config.json").exists()
    encoder, tokenizer, _ = load_sentence_encoder(str(tmp_path / "saved"))
    torch.testing.assert_close(embed(encoder, tokenizer, texts, 64, 8, "cpu"), adapted, atol=1e-5, rtol=1e-5)


def test_eval_command_writes_spearman_for_simcse_and_plain_models(trained, tmp_path):
    folder, dev, in_training = trained
    assert main(["eval", str(folder), "--data", str(dev), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())[str(dev)]
    assert metrics["pairs"] == in_training["pairs"] == 100 and -1 <= metrics["spearman"] <= 1
    # A model rewardlab did not train: the file's columns choose STS, an encoder is mean-pooled.
    plain = save_tiny_backbone(tmp_path / "plain", "tiny-bert")
    assert main(["eval", str(plain), "--data", str(dev), "--json", str(tmp_path / "p.json")]) == 0
    assert "spearman" in json.loads((tmp_path / "p.json").read_text())[str(dev)]
