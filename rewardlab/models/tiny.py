"""Tiny random backbones built from a config (``tiny-llama``, ``tiny-gpt2``, ``tiny-bert``), with a byte-level
tokenizer and a ChatML template: for tests and smoke runs, no files needed."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import BertConfig, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


TINY_SPECIALS = ["<pad>", "<s>", "</s>", "[CLS]", "[SEP]", "<|im_start|>", "<|im_end|>"]


def tiny_tokenizer(encoder: bool) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges (256 byte tokens + specials) and a ChatML template."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(TINY_SPECIALS)
    if encoder:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        names = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="<pad>")
    else:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
        names = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1024, **names)
    fast.chat_template = CHATML
    return fast


def tiny_config(name: str, vocab_size: int):
    """Configs of the tiny random backbones: two layers, width 32."""
    common = dict(vocab_size=vocab_size, num_labels=1, pad_token_id=0)
    if name == "tiny-llama":
        return LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, **common,
        )
    if name == "tiny-gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, bos_token_id=1, eos_token_id=2, **common)
    if name == "tiny-bert":
        return BertConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=1024, **common,
        )
    return None


TINY_BACKBONES = ("tiny-llama", "tiny-gpt2", "tiny-bert")
