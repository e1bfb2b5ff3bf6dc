"""LoRA trigger words a word-level tokenizer does not know (the demo model's): added as whole tokens whose text-encoder
row depends on the word alone, at training and at rendering, instead of reading as `<unk>`."""

from __future__ import annotations

import string

import pytest
import torch
from adapter_helpers import make_pipe, reference_picture

from adapters.embedding import add_tokens
from adapters.loading import AdapterSpec, apply_adapters
from adapters.lora import (
    TRIGGER_WORD_ROWS,
    LoraTrainingConfig,
    add_trigger_words,
    added_trigger_words,
    read_lora_metadata,
    train_lora,
)
from pipelines.tiny import DEFAULT_WORDS, TinyWanConfig, build_tiny_components

# A vocabulary short enough that the text encoder keeps spare rows (64 rows), like the shipped demo model.
SHORT_WORDS = tuple(DEFAULT_WORDS[:40])


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def rows(components) -> torch.Tensor:
    return components["text_encoder"].get_input_embeddings().weight.detach()


def load_fake_embedding(components, tokens: list[str], seed: int) -> torch.Tensor:
    """What `load_embedding_into` does with a trained file: whole tokens, their own (here random) rows."""
    vectors = torch.randn(len(tokens), rows(components).shape[1], generator=torch.Generator().manual_seed(seed))
    ids = add_tokens(components["tokenizer"], components["text_encoder"], tokens)
    with torch.no_grad():
        components["text_encoder"].get_input_embeddings().weight[ids] = vectors
    return vectors


def test_unknown_word_gets_its_own_token_and_row():
    components = build_tiny_components()
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    unk = tokenizer.unk_token_id
    assert ids_of(tokenizer, "kai") == [unk] == ids_of(tokenizer, "zed")  # the defect: both read as <unk>
    before = rows(components).clone()
    vocabulary = tokenizer.vocab_size

    torch.manual_seed(5)
    assert add_trigger_words(tokenizer, text_encoder, "kai zed") == ["kai", "zed"]
    after = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(1))  # growing the table did not move the caller's RNG

    (kai,), (zed,) = ids_of(tokenizer, "kai"), ids_of(tokenizer, "zed")
    assert unk not in (kai, zed) and kai != zed and min(kai, zed) >= vocabulary
    weight = rows(components)
    assert not torch.equal(weight[kai], weight[zed])
    assert torch.equal(weight[: before.shape[0]], before)  # every existing row untouched
    # A typical row: the norm of the vocabulary's rows, not a zero or a huge vector.
    typical = before[:vocabulary].norm(dim=1).mean()
    assert weight[kai].norm() == pytest.approx(float(typical), rel=1e-4)
    # Whole word, after the tokenizer's lower-casing: "Kai," is the token, "kaiser" stays unknown.
    assert ids_of(tokenizer, "Kai, tom and kaiser") == [kai, *ids_of(tokenizer, ", tom and"), unk]
    assert added_trigger_words(tokenizer, "kai zed mara") == ["kai", "zed"]

    # Re-adding is a no-op: same ids, same rows, same table.
    size = len(tokenizer)
    assert add_trigger_words(tokenizer, text_encoder, "kai zed") == []
    assert len(tokenizer) == size and torch.equal(rows(components), weight)


@pytest.mark.parametrize("words", [DEFAULT_WORDS, SHORT_WORDS], ids=["table-grows", "spare-rows"])
def test_row_depends_on_the_word_not_on_the_order_of_additions(words):
    config = TinyWanConfig(words=words)
    first, second = build_tiny_components(config), build_tiny_components(config)
    assert add_trigger_words(first["tokenizer"], first["text_encoder"], "kai") == ["kai"]
    add_trigger_words(first["tokenizer"], first["text_encoder"], "zed")

    # The other pipeline first loads an embedding and another LoRA word, then kai: kai gets another id.
    vectors = load_fake_embedding(second, ["<ana>", "<ana_1>"], seed=3)
    add_trigger_words(second["tokenizer"], second["text_encoder"], "zed")
    before = rows(second).clone()
    add_trigger_words(second["tokenizer"], second["text_encoder"], "kai")
    (kai_first,), (kai_second,) = ids_of(first["tokenizer"], "kai"), ids_of(second["tokenizer"], "kai")
    assert kai_first != kai_second
    assert torch.equal(rows(first)[kai_first], rows(second)[kai_second])
    (zed_first,), (zed_second,) = ids_of(first["tokenizer"], "zed"), ids_of(second["tokenizer"], "zed")
    assert torch.equal(rows(first)[zed_first], rows(second)[zed_second])
    # The embedding's trained rows (and every other row) are as they were.
    embedding_ids = second["tokenizer"].convert_tokens_to_ids(["<ana>", "<ana_1>"])
    assert torch.equal(rows(second)[embedding_ids], vectors)
    others = torch.arange(before.shape[0]) != kai_second
    assert torch.equal(rows(second)[: before.shape[0]][others], before[others])


def sentencepiece_like_tokenizer():
    """A Unigram (sentencepiece-model) tokenizer that spells any lower-case word from pieces: never `<unk>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    letters = string.ascii_lowercase
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in letters] + [("\u2581" + c, -3.0) for c in letters] + [(",", -3.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("kind", ["known-word", "sentencepiece"])
def test_a_tokenizer_that_spells_the_word_is_left_untouched(kind, tmp_path):
    components = build_tiny_components()
    trigger = "<mara>"  # a word of the tiny vocabulary
    if kind == "sentencepiece":
        components["tokenizer"], trigger = sentencepiece_like_tokenizer(), "<kai>"
        assert components["tokenizer"].unk_token_id not in ids_of(components["tokenizer"], "kai")
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    size, table = len(tokenizer), text_encoder.get_input_embeddings()
    before = table.weight.detach().clone()

    assert add_trigger_words(tokenizer, text_encoder, trigger[1:-1]) == []
    config = LoraTrainingConfig.for_preset("tiny", steps=1, augment_variants=1)
    result = train_lora(components, [reference_picture()], trigger, tmp_path / "a.safetensors", config=config)
    assert len(tokenizer) == size and tokenizer.get_added_vocab().keys() == {"<pad>", "</s>", "<unk>"}
    assert text_encoder.get_input_embeddings() is table and torch.equal(table.weight, before)  # no resize, no write
    info = read_lora_metadata(result.path)
    assert info["trigger_words_added"] == [] and "trigger_word_rows" not in info


def test_rendering_on_a_fresh_pipeline_sees_the_text_training_saw(tmp_path, monkeypatch):
    import adapters.lora as lora

    seen = {}
    prepare = lora.prepare_samples

    def capture(components, images, captions, config):
        samples = prepare(components, images, captions, config)
        seen.update(zip(samples.captions, samples.text, strict=True))
        return samples

    monkeypatch.setattr(lora, "prepare_samples", capture)
    training = build_tiny_components()
    config = LoraTrainingConfig.for_preset("tiny", steps=2, augment_variants=1)
    result = train_lora(
        training, [reference_picture()], "<kai>", tmp_path / "kai.safetensors", config, description="a figure"
    )
    info = read_lora_metadata(result.path)
    assert info["trigger_words_added"] == ["kai"] and info["trigger_word_rows"] == TRIGGER_WORD_ROWS
    assert list(seen) == ["kai, a figure"]
    assert training["tokenizer"].unk_token_id not in ids_of(training["tokenizer"], "kai")

    # A fresh pipeline where other words and an embedding came first: kai's id differs, its text does not.
    fresh = build_tiny_components()
    load_fake_embedding(fresh, ["<ana>"], seed=7)
    add_trigger_words(fresh["tokenizer"], fresh["text_encoder"], "zed")
    pipe = make_pipe(fresh)
    pipe.encode_caption("kai, a figure", config.max_sequence_length)  # cached while kai was still <unk>
    applied = apply_adapters(pipe, [AdapterSpec(adapter_id=1, kind="lora", path=result.path, trigger="<kai>")])
    caption = applied.substitute("<kai>, a figure")
    assert caption == "kai, a figure"
    assert ids_of(pipe.tokenizer, "kai") != ids_of(training["tokenizer"], "kai")
    rendered = pipe.encode_caption(caption, config.max_sequence_length)
    torch.testing.assert_close(rendered, seen[caption], rtol=1e-6, atol=1e-6)
    # And another LoRA character's unknown name does not read the same as kai.
    other = pipe.encode_caption("zed, a figure", config.max_sequence_length)
    assert (other - rendered).abs().max() > 1e-3
    applied.unload()
