"""CLIP and SigLIP: hand-computed losses, the model/loss contract, image–caption data, EfficientNet-Lite0's packaged
weights, and a tiny two-tower model that learns the generated shapes well above chance."""

import inspect
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import accelerate_launch, logged_losses, needs, subprocess_env

from rewardlab.config import RECIPES_DIR, load_recipe
from rewardlab.data.images import (
    SHAPE_CLASSES,
    ImageDataError,
    ImageTextCollator,
    generate_shapes,
    load_pixels,
    read_image_captions,
)
from rewardlab.errors import DataError
from rewardlab.models.two_tower import load_two_tower
from rewardlab.models.vision import EFFICIENTNET_PACKAGE, build_image_tower, efficientnet_lite0
from rewardlab.objectives import ClipLoss, SigLipLoss
from rewardlab.tasks.clip import ClipTask, embed_pairs, retrieval_metrics
from rewardlab.training.loop import train

IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TEXTS = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # similarities [[1, 0.6], [0, 0.8]]


def test_clip_loss_matches_hand_computed_values():
    """scale 1: image rows −log softmax = log(1 + e^−0.4) = 0.513015, log(1 + e^−0.8) = 0.371101; text rows (the
    transpose [[1, 0], [0.6, 0.8]]) log(1 + e^−1) = 0.313262, log(1 + e^−0.2) = 0.598139; mean of the two
    directions' means = 0.448879.
    scale 2 (logits doubled): log(1 + e^−0.8) = 0.371101, log(1 + e^−1.6) = 0.183901, log(1 + e^−2) = 0.126928,
    log(1 + e^−0.4) = 0.513015 → (0.277501 + 0.319972) / 2 = 0.298736."""
    loss = ClipLoss()
    assert loss(IMAGES, TEXTS, torch.tensor(1.0)).item() == pytest.approx(0.448879, abs=1e-6)
    assert loss(IMAGES, TEXTS, torch.tensor(2.0)).item() == pytest.approx(0.298736, abs=1e-6)


def test_siglip_loss_matches_hand_computed_values():
    """t = 1, b = 0: −log σ(1) − log σ(−0.6) − log σ(−0) − log σ(0.8) = 0.313262 + 1.037488 + 0.693147 + 0.371101,
    summed over the 4 cells and divided by n = 2: 1.207499.
    t = 10, b = −10: logits [[0, −4], [−10, −2]] → (0.693147 + 0.018150 + 0.000045 + 2.126928) / 2 = 1.419135."""
    loss = SigLipLoss()
    assert loss(IMAGES, TEXTS, torch.tensor(1.0), torch.tensor(0.0)).item() == pytest.approx(1.207499, abs=1e-6)
    assert loss(IMAGES, TEXTS, torch.tensor(10.0), torch.tensor(-10.0)).item() == pytest.approx(1.419135, abs=1e-6)


@pytest.mark.parametrize("make_loss, extra", [(ClipLoss, ()), (SigLipLoss, (torch.tensor(-1.0),))])
def test_gathered_negatives_enter_the_loss_and_gradients_reach_the_local_rows(make_loss, extra):
    """A stand-in gather that appends another process's rows: the loss equals the loss over all rows, and the
    local rows get gradients."""
    torch.manual_seed(0)
    unit = lambda *shape: torch.nn.functional.normalize(torch.randn(*shape), dim=-1)
    local_images, local_texts = unit(3, 8).requires_grad_(), unit(3, 8).requires_grad_()
    other_images, other_texts = unit(5, 8), unit(5, 8)
    other = {id(local_images): other_images, id(local_texts): other_texts}
    gathered = make_loss(gather=lambda x: torch.cat([x, other[id(x)]]))
    scale = torch.tensor(5.0)
    loss = gathered(local_images, local_texts, scale, *extra)
    images, texts = torch.cat([local_images, other_images]), torch.cat([local_texts, other_texts])
    expected = make_loss()(images, texts, scale, *extra)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert local_images.grad.abs().sum() > 0 and local_texts.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def tiny_recipe_path():
    return RECIPES_DIR / "clip-shapes-tiny.yaml"


@pytest.mark.parametrize("objective, loss_cls", [("clip", ClipLoss), ("siglip", SigLipLoss)])
def test_the_model_returns_exactly_the_loss_arguments(tiny_recipe_path, objective, loss_cls):
    recipe = load_recipe(tiny_recipe_path, [f"objective={objective}", "train_data=shapes:4", "eval_data=null"])
    task = ClipTask(recipe, lambda _: None)
    out = task.model(**task.collate(task.train_data).inputs())
    assert set(out) == set(inspect.signature(loss_cls.forward).parameters) - {"self"}
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    if objective == "siglip":
        assert out["logit_bias"].item() == -10.0


def test_a_logit_scale_past_the_clamp_keeps_its_gradient_and_is_clamped_after_the_step(tiny_recipe_path, tmp_path):
    """The scale starts at 1/0.001 = 1000, past CLIP's 100: the loss still has a gradient for it (a clamped output
    would have none, and Adam would then never move it), and after one optimizer step the parameter is log 100."""
    recipe = load_recipe(tiny_recipe_path, ["contrastive.temperature=0.001", "train_data=shapes:32", "eval_data=null",
                                            "batch_size=16", "max_steps=1", f"output_dir={tmp_path}"])
    task = ClipTask(recipe, lambda _: None)
    out = task.model(**task.collate(task.train_data[:16]).inputs())
    assert out["logit_scale"].item() == pytest.approx(1000.0, rel=1e-5)
    task.loss_fn(**out).backward()
    assert task.model.logit_scale.grad.abs().item() > 0
    train(recipe)
    model, _, _ = load_two_tower(tmp_path)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0), abs=1e-6)


def test_text_pooling_reads_the_real_tokens_whatever_side_the_tokenizer_pads(tiny_recipe_path):
    """A Llama text tower (rotary positions: shifting a caption by its left padding changes nothing) pooled at the
    last real token: the same caption embeddings whether the tokenizer pads on the right or on the left."""
    recipe = load_recipe(tiny_recipe_path, ["model.name=tiny-llama", "contrastive.pooling=last", "train_data=shapes:6",
                                            "eval_data=null"])
    task = ClipTask(recipe, lambda _: None)
    task.model.eval()
    embeddings = {}
    for side in ("right", "left"):
        task.tokenizer.padding_side = side
        batch = task.collate(task.train_data)
        assert batch.attention_mask[:, 0 if side == "left" else -1].min() == 0  # the captions' lengths differ
        with torch.no_grad():
            embeddings[side] = task.model.encode_text(batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(embeddings["left"], embeddings["right"], atol=1e-5, rtol=1e-5)


def test_retrieval_counts_a_candidate_with_the_same_caption_as_the_pair():
    """Captions a, a, b: texts 0 and 1 are the same caption, so image 1 retrieving text 0 is a hit."""
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    metrics = retrieval_metrics(images, texts, ["a", "a", "b"])
    assert metrics["i2t_recall@1"] == 1.0 and metrics["t2i_recall@1"] == 1.0
    assert retrieval_metrics(images, texts, ["a", "c", "b"])["i2t_recall@1"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_tiny_clip_learns_the_generated_shapes_well_above_chance(tiny_recipe_path, tmp_path):
    """24 classes (6 colours × 4 shapes): chance is 1/24 ≈ 0.042; 200 steps of tiny random towers reach ~0.3."""
    recipe = load_recipe(tiny_recipe_path, [f"output_dir={tmp_path}"])
    info = train(recipe)
    metrics = info["metrics"]
    assert metrics["zero_shot_classes"] == 24
    assert metrics["zero_shot_accuracy"] > 0.2
    assert metrics["i2t_recall@10"] > 0.5 and metrics["t2i_recall@10"] > 0.5

    assert {"model.safetensors", "text", "recipe.yaml", "rewardlab.json"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "rewardlab.json").read_text())["metrics"] == metrics
    model, tokenizer, reloaded = load_two_tower(tmp_path)
    pairs = read_image_captions(reloaded.eval_data, reloaded.clip.image_size)
    images, texts = embed_pairs(model, pairs, ImageTextCollator(tokenizer, 48, 64), 64, "cpu")
    assert retrieval_metrics(images, texts, [p.caption for p in pairs])["i2t_recall@1"] == pytest.approx(
        metrics["i2t_recall@1"], abs=1e-6)


def _launch(tmp_path: Path, processes: int) -> dict[int, float]:
    out = tmp_path / f"p{processes}"
    command = accelerate_launch(processes) + [
        "-m", "rewardlab.cli", "train", str(RECIPES_DIR / "clip-shapes-tiny.yaml"), "train_data=shapes:48",
        "eval_data=null", "clip.image_size=32", "batch_size=8", "max_steps=3", "logging_steps=1", f"output_dir={out}"]
    result = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return logged_losses(out)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_with_gathered_negatives_give_the_same_losses_as_one(tmp_path):
    """Each of 2 processes embeds 4 pairs and scores them against all 8: the loss of the 8-pair batch on 1 process,
    and (gradients flowing back through the gather) the same training trajectory."""
    one, two = _launch(tmp_path, 1), _launch(tmp_path, 2)
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), step


def test_a_locked_tower_stays_unchanged_while_the_other_trains(tiny_recipe_path, tmp_path):
    recipe = load_recipe(tiny_recipe_path, ["objective=siglip", "clip.freeze_image_tower=true", "max_steps=2",
                                            "train_data=shapes:64", "eval_data=null", f"output_dir={tmp_path}"])
    task = ClipTask(recipe, lambda _: None)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad], lr=1e-2)
    task.model.train()
    assert not task.model.image_tower.training
    for start in (0, 32):
        loss, _ = task.loss(task.model, task.collate(task.train_data[start : start + 32]))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = task.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("image_tower.") for k in changed)
    assert {"image_projection.weight", "text_projection.weight", "logit_scale", "logit_bias"} <= changed
    assert any(k.startswith("text_model.") for k in changed)


def test_generated_shapes_are_deterministic_from_the_seed():
    a, b = generate_shapes(8, seed=3, image_size=32), generate_shapes(8, seed=3, image_size=32)
    c = generate_shapes(8, 4, 32)
    assert all(np.array_equal(x.image, y.image) and x.caption == y.caption for x, y in zip(a, b))
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c))
    for pair in a:
        assert pair.image.shape == (32, 32, 3) and pair.image.dtype == np.uint8
        colour, shape = pair.label.split()
        assert pair.label in SHAPE_CLASSES and colour in pair.caption and shape in pair.caption
    assert len(read_image_captions("shapes:5:seed=2", 16)) == 5


@pytest.mark.parametrize("spec", ["shapes", "shapes:", "shapes:ten", "shapes:10:seed=x", "shapes:10:sed=1"])
def test_a_malformed_shapes_source_says_how_to_write_it(spec):
    with pytest.raises(ImageDataError, match=r"shapes:N or shapes:N:seed=S"):
        read_image_captions(spec, 32)


def _write_png(path: Path, colour, size=(40, 30)) -> Path:
    from PIL import Image

    Image.new("RGB", size, colour).save(path)
    return path


def test_folder_and_jsonl_sources_read_images_and_captions(tmp_path):
    _write_png(tmp_path / "a.png", (255, 0, 0))
    (tmp_path / "a.txt").write_text("a red picture\n")
    _write_png(tmp_path / "b.png", (0, 0, 255))
    (tmp_path / "b.txt").write_text("a blue picture")
    pairs = read_image_captions(str(tmp_path), 16)
    assert [p.caption for p in pairs] == ["a red picture", "a blue picture"]
    pixels = load_pixels(pairs[0].image, 16)
    assert pixels.shape == (3, 16, 16) and pixels[0].min() > 0.99 and pixels[2].max() < 0.01

    rows = [{"image": "a.png", "caption": "red", "label": "red"}, {"image": "b.png", "caption": "blue"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_image_captions(str(tmp_path / "pairs.jsonl"), 16)
    assert [(p.caption, p.label) for p in pairs] == [("red", "red"), ("blue", None)]


def test_bad_image_data_errors_name_the_file_and_line(tmp_path):
    _write_png(tmp_path / "a.png", (0, 0, 0))
    with pytest.raises(ImageDataError, match=r"a\.png: no caption file a\.txt"):
        read_image_captions(str(tmp_path), 16)
    cases = {
        '{"image": "a.png"': r"bad\.jsonl:1: malformed JSON",
        '{"image": "a.png", "text": "x"}': r"bad\.jsonl:1: missing column 'caption'; columns present: image, text",
        '{"image": "missing.png", "caption": "x"}': r"bad\.jsonl:1: image file not found: .*missing\.png",
    }
    for line, message in cases.items():
        (tmp_path / "bad.jsonl").write_text(line + "\n")
        with pytest.raises(DataError, match=message):
            read_image_captions(str(tmp_path / "bad.jsonl"), 16)
    with pytest.raises(ImageDataError, match=r"expected a folder .*\(no such file or folder\)"):
        read_image_captions(str(tmp_path / "nope.jsonl"), 16)


def test_image_towers_map_pixels_to_features():
    pixels = torch.rand(2, 3, 64, 64)
    for name in ("tiny-conv", "efficientnet-lite0"):
        tower = build_image_tower(name, pretrained=False).eval()
        assert tower(pixels).shape == (2, tower.width)
    with pytest.raises(ValueError, match="unknown image tower 'resnet'"):
        build_image_tower("resnet")


@needs(EFFICIENTNET_PACKAGE)
def test_packaged_efficientnet_weights_load_strictly_and_recognise_a_photo():
    """matplotlib's sample photo of Grace Hopper in uniform: ImageNet class 652 is "military uniform"."""
    from matplotlib import cbook

    model = efficientnet_lite0(pretrained=True, classifier=True).eval()
    photo = load_pixels(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), 224)
    with torch.no_grad():
        probabilities = model.classify(photo[None]).softmax(-1)[0]
    assert probabilities.argmax().item() == 652 and probabilities.max() > 0.3
