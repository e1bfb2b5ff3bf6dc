"""The demo model's word-level tokenizer over the procedural world's vocabulary (shipped as tokenizer.json)."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from pipelines.tiny import EOS_TOKEN, PAD_TOKEN, UNK_TOKEN
from training.world import vocabulary


def build_world_tokenizer(words: list[str] | None = None) -> PreTrainedTokenizerFast:
    """T5 conventions as `pipelines.tiny.build_word_tokenizer` (pad 0, eos 1 appended, unk 2, lower case), but
    hyphenated words such as "close-up" stay one token: only , . ; : ! ? split off a word."""
    vocab = {PAD_TOKEN: 0, EOS_TOKEN: 1, UNK_TOKEN: 2}
    for word in words if words is not None else vocabulary():
        vocab.setdefault(word.lower(), len(vocab))
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[,.;:!?]"), behavior="isolated")]
    )
    tok.post_processor = TemplateProcessing(single=f"$A {EOS_TOKEN}", special_tokens=[(EOS_TOKEN, 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, unk_token=UNK_TOKEN, model_max_length=512
    )
