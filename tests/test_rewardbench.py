"""`rewardlab bench`: RewardBench v1 accuracy with ties, section weights, RewardBench 2 best-of-k with ties, bad rows
with file and line, and the command end to end on a rewardlab model and on a plain transformers classifier."""

import json

import pytest
import torch
import transformers
from families import ENCODER, wordpiece
from helpers import SHARED_DATA, needs_shared_data, write_jsonl

from rewardlab.cli import main
from rewardlab.errors import DataError
from rewardlab.evaluation.rewardbench import build_report, load_sections, read_bench
from rewardlab.inference.bench import score_rows
from rewardlab.inference.scorer import RewardModel, Scores


class Table:
    """A model whose reward is written in the response: ``"... =2.5"`` scores 2.5 (a scorer of one member)."""

    size, name = 1, "table"

    def score(self, prompts, responses):
        assert len(prompts) == len(responses)
        return [float(r.rsplit("=", 1)[1]) for r in responses]

    def scores(self, prompts, responses):
        rewards = self.score(prompts, responses)
        return Scores(rewards, [rewards])


class Ensemble(Table):
    """Two members: ``"=a,b"`` gives member rewards a and b; the reward is their mean."""

    size = 2

    def scores(self, prompts, responses):
        values = [[float(v) for v in r.rsplit("=", 1)[1].split(",")] for r in responses]
        members = [[v[0] for v in values], [v[1] for v in values]]
        return Scores([sum(m) / 2 for m in zip(*members)], members)


def pair(subset, chosen, rejected, **extra):
    return {"prompt": "Q?", "chosen": f" a ={chosen}", "rejected": f" b ={rejected}", "subset": subset, **extra}


def best_of(subset, chosen, rejected):
    return {"prompt": "Q?", "chosen": [f" c ={chosen}"], "rejected": [f" r{i} ={r}" for i, r in enumerate(rejected)],
            "subset": subset}


def bench(tmp_path, rows, sections=None, model=None, name="data.jsonl"):
    data = read_bench([str(write_jsonl(tmp_path / name, rows))])
    results, members = score_rows(model or Table(), data)
    return build_report(data, results, sections or {}, members)


def test_v1_accuracy_per_subset_counts_a_tie_as_wrong(tmp_path):
    """Subset a: 2 > 1 right, 1 = 1 tie (wrong), 0 < 1 wrong, 3 > −1 right: 2/4, one tie. Subset b: 2/2."""
    rows = [pair("a", 2, 1), pair("a", 1, 1), pair("a", 0, 1), pair("a", 3, -1), pair("b", 1, 0), pair("b", 5, 4)]
    report = bench(tmp_path, rows)
    assert report["subsets"] == {"a": {"format": "v1", "n": 4, "accuracy": 0.5, "ties": 1},
                                 "b": {"format": "v1", "n": 2, "accuracy": 1.0, "ties": 0}}
    assert report["overall"]["accuracy"] == pytest.approx(4 / 6) and report["overall"]["n"] == 6


def test_sections_weight_their_subsets_and_report_what_is_missing(tmp_path):
    """S = (3 · 0.5 + 1 · 1.0) / (3 + 1) = 0.625 (its subset zz is not in the data: missing, not counted);
    T has no subset in the data: no score. c is in no section: reported on its own. Overall: the mean of the
    sections with a score, 0.625."""
    rows = [pair("a", 2, 1), pair("a", 0, 1), pair("b", 1, 0), pair("c", 0, 1)]
    sections_file = tmp_path / "sections.yaml"
    sections_file.write_text("S:\n  a: 3\n  b: 1\n  zz: 5\nT: [zz, yy]\n")
    sections = load_sections(sections_file)
    assert sections == {"S": {"a": 3.0, "b": 1.0, "zz": 5.0}, "T": {"zz": 1.0, "yy": 1.0}}
    report = bench(tmp_path, rows, sections)
    s, t = report["sections"]["S"], report["sections"]["T"]
    assert s["score"] == pytest.approx(0.625) and s["present"] == ["a", "b"] and s["missing"] == ["zz"] and s["n"] == 3
    assert t["score"] is None and t["missing"] == ["zz", "yy"] and t["n"] == 0
    assert report["unsectioned"] == ["c"] and report["subsets"]["c"]["accuracy"] == 0.0
    assert report["overall"]["score"] == pytest.approx(0.625) and report["overall"]["sections_scored"] == 1


def test_default_sections_are_rewardbench_s():
    sections = load_sections()
    assert list(sections) == ["Chat", "Chat Hard", "Safety", "Reasoning"]
    assert sections["Reasoning"]["math-prm"] == 984 and sum(sections["Reasoning"].values()) == 2 * 984
    assert sum(len(s) for s in sections.values()) == 23 and sections["Chat Hard"]["llmbar-natural"] == 100


def test_rewardbench_2_best_of_k_shares_a_tied_win(tmp_path):
    """Chosen above all three: 1. Tied with 1, 2, 3 rejected at the top: 1/2, 1/3, 1/4. Below the best: 0, also
    when tied with another rejected one below the top."""
    rows = [best_of("v2", 5, [1, 2, 3]), best_of("v2", 3, [3, 1, 0]), best_of("v2", 3, [3, 3, 1]),
            best_of("v2", 3, [3, 3, 3]), best_of("v2", 2, [3, 1, 0]), best_of("v2", 3, [3, 4, 1])]
    report = bench(tmp_path, rows)
    m = report["subsets"]["v2"]
    assert m["format"] == "v2" and m["n"] == 6 and m["ties"] == 3
    assert m["accuracy"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4 + 0 + 0) / 6)
    assert report["calibration"] is None  # calibration is of pairs


def test_v1_and_v2_files_and_a_chosen_string_in_v2(tmp_path):
    """The format is per row: a v2 row may give chosen as a string; v1 and v2 subsets sit in one report."""
    row = best_of("v2", 4, [1, 2, 3]) | {"chosen": " c =4"}
    report = bench(tmp_path, [pair("v1", 1, 0), row])
    assert report["subsets"]["v1"]["format"] == "v1" and report["subsets"]["v2"] == {
        "format": "v2", "n": 1, "accuracy": 1.0, "ties": 0}


def test_calibration_and_ensemble_uncertainty_in_the_report(tmp_path):
    """Two members. Margins: pair 1 (2, 0) mean 1, std 1; pair 2 (1, 1) mean 1, std 0; pair 3 (−1, −3) mean −2,
    std 1. ECE of the mean margins [1, 1, −2]: confidences σ(1) twice (right) and σ(2) (wrong):
    (2 (1 − σ(1)) + σ(2)) / 3."""
    rows = [pair("a", "2,1", "0,1"), pair("a", "1,1", "0,0"), pair("a", "0,0", "1,3")]
    report = bench(tmp_path, rows, model=Ensemble())
    sigmoid = lambda x: float(torch.sigmoid(torch.tensor(x, dtype=torch.float64)))
    assert report["calibration"]["ece"] == pytest.approx((2 * (1 - sigmoid(1.0)) + sigmoid(2.0)) / 3)
    u = report["uncertainty"]
    assert u["members"] == 2 and u["member_accuracy"] == pytest.approx([2 / 3, 1 / 3]) and u["accuracy"] == 2 / 3
    assert u["disagreement"]["margin_std"] == pytest.approx(2 / 3)
    assert u["disagreement"]["winner_disagreement"] == pytest.approx(1 / 3)
    assert u["uncertainty_vs_error"]["half"]["pairs"] == 1


@pytest.mark.parametrize("bad, message", [
    ({"prompt": "Q?", "rejected": " b =1", "subset": "a"}, "missing column 'chosen'"),
    ({"prompt": "Q?", "chosen": " a =1", "rejected": [" x =1", " y =2"], "subset": "a"},
     "a list of 2; a RewardBench 2 row has 3 or more"),
    ({"prompt": "Q?", "chosen": [" a =1", " b =2"], "rejected": [" x =1", " y =2", " z =0"], "subset": "a"},
     "column 'chosen' holds 2 responses"),
    ({"prompt": "Q?", "chosen": " a =1", "rejected": 3, "subset": "a"}, "column 'rejected' must be a string"),
    ({"prompt": None, "chosen": " a =1", "rejected": " b =0", "subset": "a"}, "column 'prompt' is null"),
    ({"prompt": "Q?", "chosen": " ", "rejected": " b =0", "subset": "a"}, "column 'chosen' is empty"),
    ({"prompt": "Q?", "chosen": " a =1", "rejected": [" x =1", 2, " z =0"], "subset": "a"},
     "column 'rejected[1]' must be a string"),
    ({"chosen": " a =1", "rejected": [" x =1", " y =2", " z =0"], "subset": "a"}, "missing column 'prompt'"),
    (best_of("a", 1, [0, 0, 0]), "subset 'a' mixes RewardBench v1 rows"),
    ({"prompt": "Q?", "chosen": " a =1", "rejected": " b =0", "subset": 7}, "column 'subset' must be a string"),
])
def test_bad_rows_name_file_and_line(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "data.jsonl", [pair("a", 1, 0), bad])
    with pytest.raises(DataError, match=f"^{path}:2: ") as e:
        read_bench([str(path)])
    assert message in str(e.value)


@pytest.mark.parametrize("text, message", [
    ("S:\n  a: -1\n", "section 'S', subset 'a': a weight is a positive number"),
    ("S:\n  a: yes\n", "a weight is a positive number"),
    ("S: 3\n", "section 'S' must list its subsets"),
    ("- a\n- b\n", "maps section names to their subsets"),
    ("S: {a: 1\n", "not valid YAML"),
    ("", "got nothing"),
])
def test_bad_sections_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "sections.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=f"^{path}: ") as e:
        load_sections(path)
    assert message in str(e.value)


def test_a_folder_is_its_data_files_and_rows_take_the_file_name_as_subset(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    write_jsonl(folder / "first.jsonl", [{k: v for k, v in pair("x", 1, 0).items() if k != "subset"}])
    write_jsonl(folder / "second.jsonl", [pair("named", 0, 1)])
    (folder / "notes.txt").write_text("not data")
    rows = read_bench([str(folder)])
    assert [(r.subset, r.origin) for r in rows] == [("first", f"{folder}/first.jsonl:1"),
                                                   ("named", f"{folder}/second.jsonl:1")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="a folder without data files"):
        read_bench([str(empty)])


def test_conversation_prompts_and_implicit_prompts(tmp_path):
    """A prompt of messages keeps its responses as given (strings or messages); a v1 row without a prompt takes the
    text its two responses share, as training does."""
    chat = [{"role": "user", "content": "Hi?"}]
    rows = [{"prompt": chat, "chosen": "Hello. =1", "rejected": [{"role": "assistant", "content": "Go. =0"}],
             "subset": "chat"},
            {"chosen": "Human: hi\n\nAssistant: hello =2", "rejected": "Human: hi\n\nAssistant: go =1", "subset": "hh"}]
    conversation, hh = read_bench([str(write_jsonl(tmp_path / "d.jsonl", rows))])
    assert conversation.prompt == chat and conversation.chosen == "Hello. =1" and conversation.version == 1
    assert conversation.rejected == [[{"role": "assistant", "content": "Go. =0"}]]
    assert hh.prompt == "Human: hi\n\nAssistant:" and hh.chosen == " hello =2" and hh.rejected == [" go =1"]


class Refusing(Table):
    """Refuses one response, as a chat template that raises makes RewardModel refuse it."""

    def score(self, prompts, responses):
        if any("refused" in r for r in responses):
            raise DataError("the chat template refused this conversation")
        return super().score(prompts, responses)


def test_an_input_the_model_refuses_is_named_by_its_row(tmp_path):
    rows = [pair("a", 1, 0), pair("a", 2, 1), {**pair("a", 1, 0), "rejected": " refused =0"}, pair("a", 0, 1)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=f"^{path}:3: the chat template refused"):
        score_rows(Refusing(), read_bench([str(path)]))


def test_a_non_finite_reward_is_an_error_naming_the_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [pair("a", 1, 0), pair("a", "nan", 0)])
    with pytest.raises(DataError, match=f"^{path}:2: the model gave a non-finite reward"):
        score_rows(Table(), read_bench([str(path)]))


@needs_shared_data
def test_the_project_s_prefs_files_read_as_v1_rows():
    """LLMBar, LLMEval² and PandaLM (prompt, chosen, rejected, source): subsets from the file names by default, from
    the source column when asked."""
    prefs = SHARED_DATA / "prefs"
    by_file = read_bench([str(prefs)])
    assert len(by_file) == 1134 and {r.version for r in by_file} == {1}
    counts = {s: sum(r.subset == s for r in by_file) for s in {r.subset for r in by_file}}
    assert counts == {"llmbar-natural": 100, "llmbar-processed-llmeval2": 198, "pandalm-testset-human": 836}
    by_source = {r.subset for r in read_bench([str(prefs)], subset_column="source")}
    assert by_source == {"llmbar/natural", "llmbar-processed/llmeval2", "pandalm/testset-v1-human-majority"}


def bench_rows():
    return [{"prompt": "Request 1:", "chosen": " thanks", "rejected": " go away", "subset": "llmbar-natural", "id": 1},
            {"prompt": "Request 2:", "chosen": " sure", "rejected": " never", "subset": "llmbar-natural", "id": 2},
            {"prompt": "Request 3:", "chosen": " gladly", "rejected": " whatever", "subset": "own", "id": 3},
            {"prompt": "Request 4:", "chosen": [" sure"], "rejected": [" never", " go away", " whatever"],
             "subset": "Focus", "id": 4}]


def expected_scores(folder, rows):
    """Every row's rewards from RewardModel itself, and the v1 and v2 rules by hand."""
    rm = RewardModel.load(str(folder))
    scores = {}
    for row in rows:
        rejected = row["rejected"] if isinstance(row["rejected"], list) else [row["rejected"]]
        chosen = row["chosen"][0] if isinstance(row["chosen"], list) else row["chosen"]
        rewards = rm.score([row["prompt"]] * (1 + len(rejected)), [chosen, *rejected])
        scores[row["id"]] = (rewards, float(rewards[0] > max(rewards[1:])))
    return scores


def run_bench(folder, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bench.jsonl", bench_rows())
    out = tmp_path / "report"
    capsys.readouterr()
    assert main(["bench", str(folder), "--data", str(data), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    for png in ("section-chat-hard.png", "section-subsets-in-no-section.png", "reliability.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    assert (out / "report.md").read_text() == printed and "| llmbar-natural | Chat Hard | v1 | 2 |" in printed
    return report, rows


def check_against_reward_model(folder, report, rows):
    expected = expected_scores(folder, bench_rows())
    for row in rows:
        rewards, _ = expected[row["id"]]
        assert [row["chosen_reward"], *row["rejected_rewards"]] == pytest.approx(rewards, abs=1e-6)
    natural = (expected[1][1] + expected[2][1]) / 2
    assert report["subsets"]["llmbar-natural"]["accuracy"] == pytest.approx(natural)
    assert report["sections"]["Chat Hard"]["score"] == pytest.approx(natural)
    assert report["overall"]["score"] == pytest.approx(natural)  # the only section with data
    assert report["unsectioned"] == ["own", "Focus"] and report["subsets"]["Focus"]["format"] == "v2"
    assert report["calibration"]["pairs"] == 3


def test_bench_end_to_end_on_a_saved_rewardlab_model(trained, tmp_path, capsys):
    report, rows = run_bench(trained, tmp_path, capsys)
    check_against_reward_model(trained, report, rows)
    assert report["model"] == str(trained) and report["sections"]["Chat"]["score"] is None


def test_bench_on_a_plain_transformers_classifier(tmp_path, capsys):
    """A BERT sequence classifier saved by transformers alone (no rewardlab.json, no recipe)."""
    tokenizer = wordpiece()
    config = transformers.BertConfig(vocab_size=len(tokenizer), num_labels=1, pad_token_id=tokenizer.pad_token_id,
                                     **ENCODER)
    torch.manual_seed(0)
    folder = tmp_path / "plain"
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert not (folder / "rewardlab.json").exists()
    report, rows = run_bench(folder, tmp_path, capsys)
    check_against_reward_model(folder, report, rows)


def test_bench_cli_bad_data_is_one_line_with_file_and_line(trained, tmp_path, capsys):
    data = write_jsonl(tmp_path / "bad.jsonl", [pair("a", 1, 0), {"prompt": "Q?", "chosen": " x", "subset": "a"}])
    assert main(["bench", str(trained), "--data", str(data), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data}:2: missing column 'rejected'") and not (tmp_path / "out").exists()
    sections = tmp_path / "s.yaml"
    sections.write_text("S:\n  a: 0\n")
    assert main(["bench", str(trained), "--data", str(data), "--sections", str(sections)]) == 2
    assert "section 'S', subset 'a': a weight is a positive number" in capsys.readouterr().err
