"""Checkpoints as users bring them, built offline: tiny random models of every family people train reward models on,
saved with ``save_pretrained`` (float32 and bfloat16) next to real tokenizers trained in seconds with the
``tokenizers`` library on the project's own ``data/``: byte-level BPE (GPT-2, Qwen, RoBERTa style), Unigram with
Metaspace (SentencePiece: Llama, Mistral, Gemma, Phi-3, DeBERTa style) and WordPiece (BERT style)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VOCAB = 700


def corpus() -> list[str]:
    rows = [json.loads(line) for line in (REPO / "data" / "prefs-train.jsonl").read_text().splitlines()]
    return [text for r in rows for text in (r["prompt"], r["chosen"], r["rejected"])]


def byte_bpe(roberta: bool = False) -> PreTrainedTokenizerFast:
    """GPT-2's byte-level BPE (no BOS added, EOS "<|endoftext|>"), or RoBERTa's (``<s> … </s>``)."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if roberta else ["<|endoftext|>", "<|pad|>"]
    specials += ["<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if roberta:
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", 0))
        names = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", pad_token="<pad>",
                     unk_token="<unk>", mask_token="<mask>")
    else:
        names = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>")
    return _fast(tok, names, chat=not roberta)


def sentencepiece() -> PreTrainedTokenizerFast:
    """Llama-style SentencePiece: Unigram over Metaspace ("▁" for spaces, one prepended), BOS "<s>" added."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(corpus(), trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=specials,
                                                              unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return _fast(tok, dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"), chat=True)


def wordpiece() -> PreTrainedTokenizerFast:
    """BERT's WordPiece, lower-cased, ``[CLS] … [SEP]``."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=VOCAB, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    names = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    return _fast(tok, names, chat=False)


def _fast(tok: Tokenizer, names: dict, chat: bool) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **names)
    if chat:
        fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        fast.chat_template = CHATML
    return fast


TOKENIZERS = {"bpe": byte_bpe, "roberta-bpe": lambda: byte_bpe(roberta=True), "unigram": sentencepiece,
              "wordpiece": wordpiece}

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
DECODER = dict(**SMALL, num_key_value_heads=2, max_position_embeddings=512)
ENCODER = dict(**SMALL, max_position_embeddings=520)

# family → (config class, its kwargs, tokenizer kind, the model class the checkpoint is saved as)
FAMILIES = {
    "llama": ("LlamaConfig", DECODER, "unigram", "ForCausalLM"),
    "qwen2": ("Qwen2Config", DECODER, "bpe", "ForCausalLM"),
    # windows far shorter than the test rows, so the packed layouts must apply them as the padded path does
    "mistral": ("MistralConfig", dict(DECODER, sliding_window=24), "unigram", "ForCausalLM"),
    "gemma2": ("Gemma2Config", dict(DECODER, head_dim=8, sliding_window=8, query_pre_attn_scalar=8), "unigram",
               "ForCausalLM"),
    "phi3": ("Phi3Config", dict(DECODER, resid_pdrop=0.0), "unigram", "ForCausalLM"),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_positions=512), "bpe", "LMHeadModel"),
    "gpt_neox": ("GPTNeoXConfig", dict(SMALL, max_position_embeddings=512), "bpe", "ForCausalLM"),
    "bert": ("BertConfig", ENCODER, "wordpiece", "ForMaskedLM"),
    "roberta": ("RobertaConfig", ENCODER, "roberta-bpe", "ForMaskedLM"),
    "distilbert": ("DistilBertConfig", dict(dim=32, hidden_dim=64, n_layers=2, n_heads=4, max_position_embeddings=512),
                   "wordpiece", "ForMaskedLM"),
    "deberta-v2": ("DebertaV2Config", dict(ENCODER, relative_attention=True, position_biased_input=False,
                                           pos_att_type=["p2c", "c2p"], max_relative_positions=64), "wordpiece",
                   "ForMaskedLM"),
    "electra": ("ElectraConfig", dict(ENCODER, embedding_size=32), "wordpiece", "ForMaskedLM"),
    "modernbert": ("ModernBertConfig", dict(SMALL, max_position_embeddings=512, global_attn_every_n_layers=2,
                                            local_attention=8), "wordpiece", "ForMaskedLM"),
}
ENCODERS = {"bert", "roberta", "distilbert", "deberta-v2", "electra", "modernbert"}
# What the layout probe finds (rewardlab.models.reward.probe_layouts): the layouts each family computes exactly.
LAYOUTS = {name: ("padded", "packed") for name in ENCODERS} | {
    name: ("padded", "packed", "prefix_shared") for name in FAMILIES if name not in ENCODERS}
LAYOUTS |= {"deberta-v2": ("padded",)}


def model_class(family: str) -> type:
    config_name, _, _, suffix = FAMILIES[family]
    return getattr(transformers, config_name.removesuffix("Config") + suffix)


def build_checkpoint(family: str, folder: Path, tokenizer: PreTrainedTokenizerFast, dtype: torch.dtype) -> Path:
    """A tiny random ``family`` model saved to ``folder`` in ``dtype``, as a pretrained checkpoint (LM head, no
    reward head), with ``tokenizer``."""
    config_name, kwargs, _, _ = FAMILIES[family]
    specials = {"pad_token_id": tokenizer.pad_token_id}
    for name in ("bos", "eos"):
        token_id = getattr(tokenizer, f"{name}_token_id")
        if token_id is not None:
            specials[f"{name}_token_id"] = token_id
    if family == "modernbert":
        specials |= {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
                     "bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    config = getattr(transformers, config_name)(vocab_size=len(tokenizer), **kwargs, **specials)
    torch.manual_seed(0)
    model = model_class(family)(config).to(dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
