import torch

from rewardlab.data.collate import PadCollator, score_positions
from rewardlab.data.encode import EncodeReport, EncodingPolicy
from rewardlab.data.pairs import PreferencePair
from rewardlab.models.loading import tiny_tokenizer

PAIR = PreferencePair(prompt="abcdefghij", chosen="XYZ", rejected="UV")


def test_causal_sequences_get_bos_and_eos():
    tok = tiny_tokenizer(encoder=False)
    encoded = EncodingPolicy(tok, encoder=False, max_length=64).encode_pair(PAIR, EncodeReport())
    assert encoded.prompt_ids[0] == tok.bos_token_id and tok.decode(encoded.prompt_ids[1:]) == "abcdefghij"
    assert encoded.chosen_ids[-1] == tok.eos_token_id and tok.decode(encoded.chosen_ids[:-1]) == "XYZ"


def test_encoder_sequences_are_wrapped_in_cls_and_sep():
    tok = tiny_tokenizer(encoder=True)
    encoded = EncodingPolicy(tok, encoder=True, max_length=64).encode_pair(PAIR, EncodeReport())
    assert tok.convert_ids_to_tokens(encoded.prompt_ids[:1] + encoded.chosen_ids[-1:]) == ["[CLS]", "[SEP]"]


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_response():
    """max_length 8: <s> + prompt + "XYZ" + </s> (4) → the prompt keeps 8 − 4 − 1 = 3 characters: "hij"."""
    tok = tiny_tokenizer(encoder=False)
    report = EncodeReport()
    encoded = EncodingPolicy(tok, encoder=False, max_length=8).encode_pair(PAIR, report)
    assert encoded.prompt_ids[0] == tok.bos_token_id and tok.decode(encoded.prompt_ids[1:]) == "hij"
    assert tok.decode(encoded.chosen_ids[:-1]) == "XYZ" and tok.decode(encoded.rejected_ids[:-1]) == "UV"
    assert len(encoded.prompt_ids) + len(encoded.chosen_ids) == 8
    assert report.truncated_prompt == 1 and report.truncated_response == 0


def test_a_response_longer_than_max_length_keeps_its_end():
    tok = tiny_tokenizer(encoder=False)
    report = EncodeReport()
    pair = PreferencePair(prompt="p", chosen="0123456789", rejected="ab")
    encoded = EncodingPolicy(tok, encoder=False, max_length=5).encode_pair(pair, report)
    assert encoded.prompt_ids == [tok.bos_token_id]
    assert tok.decode(encoded.chosen_ids[:-1]) == "789" and encoded.chosen_ids[-1] == tok.eos_token_id
    assert report.truncated_response == 1


def test_drop_policy_drops_and_counts():
    tok = tiny_tokenizer(encoder=False)
    encoder = EncodingPolicy(tok, encoder=False, max_length=8, truncation="drop")
    short = PreferencePair(prompt="ab", chosen="c", rejected="d", origin="f:1")
    long = PreferencePair(prompt="abcdefghij", chosen="c", rejected="d", origin="f:2")
    encoded, report = encoder.encode_pairs([short, long])
    assert len(encoded) == 1 and report.dropped == ["f:2"]
    assert "1 pairs dropped" in report.summary()


def test_collated_batch_stacks_chosen_then_rejected_and_finds_score_positions():
    tok = tiny_tokenizer(encoder=False)
    encoder = EncodingPolicy(tok, encoder=False, max_length=64)
    pairs = [encoder.encode_pair(PAIR, EncodeReport())]
    batch = PadCollator(tok.pad_token_id, encoder=False)(pairs)
    # chosen: <s> + 10 + XYZ + </s> = 15 tokens; rejected: <s> + 10 + UV + </s> = 14, padded to 15
    assert batch.input_ids.shape == (2, 15)
    assert batch.score_index.tolist() == [14, 15 + 13]
    assert batch.attention_mask.sum(1).tolist() == [15, 14]
    assert batch.response_lengths.tolist() == [4, 3]


def test_score_position_skips_trailing_pad_that_equals_eos_like_transformers():
    ids = torch.tensor([[5, 6, 7, 2, 2], [5, 6, 2, 2, 2]])  # pad == eos == 2
    assert score_positions(ids, pad_token_id=2, encoder=False).tolist() == [2, 1]
    assert score_positions(ids, pad_token_id=2, encoder=True).tolist() == [0, 0]
