"""Textual inversion: new whole tokens, only their rows trained, everything else bit for bit unchanged."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import generate_latent, make_pipe, reference_picture

from adapters.embedding import (
    EmbeddingTrainingConfig,
    load_embedding_into,
    placeholder_tokens,
    read_embedding,
    train_embedding,
)
from adapters.loading import AdapterSpec, apply_adapters
from pipelines.tiny import build_tiny_components


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    components = build_tiny_components()
    text_before = {k: v.clone() for k, v in components["text_encoder"].state_dict().items()}
    transformer_before = {k: v.clone() for k, v in components["transformer"].state_dict().items()}
    vocab_before = len(components["tokenizer"])
    result = train_embedding(
        components,
        [reference_picture()],
        trigger="<mara>",
        output_path=tmp_path_factory.mktemp("emb") / "mara.safetensors",
        config=EmbeddingTrainingConfig.for_preset("tiny", num_vectors=2, steps=80),
        description="a woman in red",
        preset="tiny",
    )
    return components, text_before, transformer_before, vocab_before, result


def test_training_changes_only_the_new_rows(trained):
    components, text_before, transformer_before, vocab_before, result = trained
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    assert result.steps_done == 80 and result.path.is_file()
    assert result.eval_loss_after < result.eval_loss_before, result.metrics
    # Training itself never wrote into the model: every weight is as before, the embedding table only grew.
    text_after = text_encoder.state_dict()
    for key, value in text_before.items():
        if text_after[key].shape == value.shape:
            assert torch.equal(text_after[key], value), key
        else:
            assert torch.equal(text_after[key][: value.shape[0]], value), key
    assert all(torch.equal(components["transformer"].state_dict()[k], v) for k, v in transformer_before.items())
    assert len(tokenizer) == vocab_before + 2

    # Loading writes exactly the new rows: old rows bit for bit, new rows = the trained vectors.
    old_rows = text_encoder.get_input_embeddings().weight.detach()[:vocab_before].clone()
    tokens = load_embedding_into(tokenizer, text_encoder, result.path)
    assert tokens == ["<mara>", "<mara_1>"]
    weight = text_encoder.get_input_embeddings().weight.detach()
    assert torch.equal(weight[:vocab_before], old_rows)
    vectors, info = read_embedding(result.path)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert ids == [vocab_before, vocab_before + 1]
    assert torch.equal(weight[ids], vectors)
    assert info["trigger"] == "<mara>" and info["caption"].startswith("<mara> <mara_1>")
    # The tokens are whole ids, even glued to punctuation.
    assert tokenizer.tokenize("<mara>, walks") == ["<mara>", ",", "walks"]


def test_embedding_changes_generation_through_trigger_substitution(trained, tmp_path):
    components, _, _, _, result = trained
    pipe = make_pipe(components)
    applied = apply_adapters(pipe, [AdapterSpec(adapter_id=7, kind="embedding", path=result.path, trigger="<mara>")])
    caption = applied.substitute("<mara> walks")
    assert caption == "<mara> <mara_1> walks"
    assert applied.records()[0]["kind"] == "embedding"
    with_embedding = generate_latent(pipe, caption)
    plain = generate_latent(pipe, "mara walks")
    assert (with_embedding - plain).abs().max() > 1e-3


def test_stop_and_bad_trigger(tmp_path):
    components = build_tiny_components()
    result = train_embedding(
        components,
        [reference_picture()],
        "<mara>",
        tmp_path / "e.safetensors",
        config=EmbeddingTrainingConfig.for_preset("tiny", steps=20),
        should_stop=lambda: True,
    )
    assert result.stopped and result.path is None and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="<name>"):
        placeholder_tokens("mara walks", 1)


def test_width_mismatch_is_refused(trained):
    _, _, _, _, result = trained
    from pipelines.tiny import TinyWanConfig

    other = build_tiny_components(TinyWanConfig(text_dim=64, text_heads=4))
    with pytest.raises(ValueError, match="width 32"):
        load_embedding_into(other["tokenizer"], other["text_encoder"], result.path)


def test_per_reference_captions_place_the_rows_where_a_storyboard_caption_puts_them(tmp_path):
    pictures = [reference_picture(), reference_picture().transpose(0)]  # two references, one caption each
    config = EmbeddingTrainingConfig.for_preset("tiny", num_vectors=2, steps=5)
    captions = ["wide shot, <mara> walks left", "close-up of <mara> smiling"]

    components = build_tiny_components()
    vocab_before = len(components["tokenizer"])
    with pytest.raises(ValueError, match=r"caption\(s\) \[2\] do not name the character: write its trigger <mara>"):
        train_embedding(
            components, pictures, "<mara>", tmp_path / "x.safetensors", config, captions=[captions[0], "mara"]
        )
    with pytest.raises(ValueError, match="2 pictures but 4 captions for the embedding"):
        train_embedding(components, pictures, "<mara>", tmp_path / "x.safetensors", config, captions=captions * 2)
    assert len(components["tokenizer"]) == vocab_before and list(tmp_path.iterdir()) == []  # nothing added or written

    with_captions = train_embedding(
        components, pictures, "<mara>", tmp_path / "c.safetensors", config, captions=captions
    )
    info = with_captions.metadata
    assert info["captions"] == ["wide shot, <mara> <mara_1> walks left", "close-up of <mara> <mara_1> smiling"]
    plain = train_embedding(build_tiny_components(), pictures, "<mara>", tmp_path / "p.safetensors", config)
    assert plain.metadata["captions"] == ["<mara> <mara_1>"]
    # Same pictures, seed and starting rows: only the captions differ, and the model is trained on what they say.
    assert with_captions.eval_loss_before != pytest.approx(plain.eval_loss_before, rel=1e-6)
