"""Smoke runs on the real preference data in ../shared/data (skipped where it is absent)."""

import pytest
from helpers import SHARED_DATA, needs_shared_data

from rewardlab.config import load_recipe
from rewardlab.data.encode import EncodingPolicy
from rewardlab.data.pairs import read_pairs
from rewardlab.models.loading import tiny_tokenizer
from rewardlab.training.loop import train

HH_TRAIN, HH_DEV = SHARED_DATA / "hh-harmless-train.jsonl", SHARED_DATA / "hh-harmless-dev.jsonl"
pytestmark = needs_shared_data


def test_hh_rows_all_parse_with_the_prompt_up_to_the_last_assistant_turn():
    pairs, report = read_pairs(str(HH_TRAIN))
    assert report.rows == 1600 and report.kept + len(report.skipped_identical) == 1600
    assert all(p.prompt.endswith("\n\nAssistant:") for p in pairs)
    # some transcripts end in an empty assistant turn: an empty reply, kept, against a non-empty one
    assert all(p.chosen.strip() or p.rejected.strip() for p in pairs)
    assert 0 < sum(not p.chosen.strip() for p in pairs) < 20


@pytest.mark.parametrize("name", ["llmbar-natural", "llmbar-processed-llmeval2", "pandalm-testset-human"])
def test_explicit_prompt_sets_parse_with_sources(name):
    pairs, report = read_pairs(str(SHARED_DATA / "prefs" / f"{name}.jsonl"))
    assert report.kept == len(pairs) > 0 and all(p.source for p in pairs)


def test_truncation_on_hh_keeps_every_response_end():
    pairs, _ = read_pairs(str(HH_DEV))
    encoder = EncodingPolicy(tiny_tokenizer(encoder=False), encoder=False, max_length=256)
    encoded, report = encoder.encode_pairs(pairs)
    assert len(encoded) == len(pairs) and report.truncated_prompt > 0
    for e in encoded:
        assert len(e.prompt_ids) + max(len(e.chosen_ids), len(e.rejected_ids)) <= 256
        assert e.chosen_ids[-1] == e.rejected_ids[-1] == encoder.tokenizer.eos_token_id


@pytest.mark.slow
def test_a_few_training_steps_on_hh(tmp_path):
    recipe = load_recipe(None, ["model.name=tiny-llama", f"train_data={HH_TRAIN}", f"eval_data={HH_DEV}",
                                "max_length=256", "max_steps=3", "batch_size=4", f"output_dir={tmp_path}"])
    info = train(recipe)
    assert info["steps"] == 3 and info["metrics"]["pairs"] == 300
    assert info["evaluated_on"] == "eval"
