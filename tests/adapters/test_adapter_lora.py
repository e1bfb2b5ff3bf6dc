"""LoRA training on tiny Wan components: the loss falls, the file is diffusers' Wan LoRA format, and generation
with it moves toward the reference picture."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import generate_latent, make_pipe, reference_picture
from safetensors import safe_open

from adapters.common import encode_images
from adapters.lora import LoraTrainingConfig, read_lora_metadata, train_lora
from pipelines.tiny import build_tiny_components

STEPS = 150


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    components = build_tiny_components()
    before = {k: v.clone() for k, v in components["transformer"].state_dict().items()}
    calls = []
    result = train_lora(
        components,
        [reference_picture()],
        trigger="<mara>",
        output_path=tmp_path_factory.mktemp("lora") / "mara.safetensors",
        config=LoraTrainingConfig.for_preset("tiny", steps=STEPS),
        preset="tiny",
        progress=lambda step, total, loss: calls.append((step, total, loss)),
    )
    return components, before, result, calls


def test_training_lowers_the_loss_and_reports_every_step(trained):
    _, _, result, calls = trained
    assert result.steps_done == STEPS and not result.stopped
    assert [c[0] for c in calls] == list(range(1, STEPS + 1))
    assert all(c[1] == STEPS for c in calls)
    metrics = result.metrics
    assert len(metrics["loss_curve"]) == STEPS
    # Mean of the last tenth of the steps against the first tenth.
    assert metrics["loss_last"] < 0.85 * metrics["loss_first"], metrics
    # Same noise, same levels, before and after: the adapter fits the reference.
    assert result.eval_loss_after < 0.8 * result.eval_loss_before, metrics


def test_transformer_is_left_as_it_was(trained):
    components, before, _, _ = trained
    transformer = components["transformer"]
    after = transformer.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not getattr(transformer, "peft_config", {})


def test_file_is_diffusers_wan_lora_on_attention_projections(trained):
    components, _, result, _ = trained
    with safe_open(str(result.path), framework="pt") as handle:
        keys = set(handle.keys())
        header = handle.metadata()
    layers = components["transformer"].config.num_layers
    expected = {
        f"transformer.blocks.{b}.{attn}.{proj}.lora_{ab}.weight"
        for b in range(layers)
        for attn in ("attn1", "attn2")
        for proj in ("to_q", "to_k", "to_v", "to_out.0")
        for ab in ("A", "B")
    }
    assert keys == expected
    assert "transformer.r" in header["lora_adapter_metadata"]
    info = read_lora_metadata(result.path)
    assert info["trigger"] == "<mara>" and info["trigger_text"] == "mara"
    assert info["config"]["rank"] == 4 and info["steps_done"] == STEPS


@pytest.mark.parametrize("stock", [False, True], ids=["MultiShotPipeline", "WanPipeline"])
def test_lora_loads_and_moves_generation_toward_the_reference(trained, stock):
    components, _, result, _ = trained
    pipe = make_pipe(components, stock=stock)
    reference = encode_images(components["vae"], [reference_picture().resize((32, 32))])[0]
    without = generate_latent(pipe, "mara")
    pipe.load_lora_weights(str(result.path), adapter_name="mara")
    assert "mara" in pipe.get_list_adapters()["transformer"]
    with_lora = generate_latent(pipe, "mara")
    error_without = float(((without - reference) ** 2).mean())
    error_with = float(((with_lora - reference) ** 2).mean())
    assert (with_lora - without).abs().max() > 0.1
    # Reconstruction error of the reference frame in latent space drops by more than a fifth.
    assert error_with < 0.8 * error_without, (error_with, error_without)
    pipe.unload_lora_weights()
    assert torch.equal(generate_latent(pipe, "mara"), without)


def test_stop_request_ends_training_without_a_file(tmp_path):
    components = build_tiny_components()
    steps = []
    result = train_lora(
        components,
        [reference_picture()],
        trigger="<mara>",
        output_path=tmp_path / "mara.safetensors",
        config=LoraTrainingConfig.for_preset("tiny", steps=50),
        progress=lambda step, total, loss: steps.append(step),
        should_stop=lambda: len(steps) >= 3,
    )
    assert result.stopped and result.path is None and result.steps_done == 3
    assert list(tmp_path.iterdir()) == []  # not even a temporary file
    assert not getattr(components["transformer"], "peft_config", {})


@pytest.mark.parametrize(
    "overrides, message",
    [({"rank": 0}, "rank"), ({"steps": 0}, "steps"), ({"learning_rate": 0.0}, "learning rate"), ({"width": 40}, "16")],
)
def test_bad_hyperparameters_are_refused(overrides, message, tmp_path):
    config = LoraTrainingConfig.for_preset("tiny", **overrides)
    with pytest.raises(ValueError, match=message):
        train_lora({}, [reference_picture()], "<mara>", tmp_path / "x.safetensors", config=config)


def test_no_pictures_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one reference"):
        train_lora(build_tiny_components(), [], "<mara>", tmp_path / "x.safetensors", preset="tiny")


def test_preset_defaults():
    tiny = LoraTrainingConfig.for_preset("tiny")
    big = LoraTrainingConfig.for_preset("wan2.1-t2v-14b")
    assert (tiny.width, tiny.height, tiny.max_sequence_length) == (32, 32, 16)
    assert big.rank > tiny.rank and big.learning_rate < tiny.learning_rate
    assert LoraTrainingConfig.for_preset("demo", rank=2).rank == 2


def test_gradient_checkpointing_gives_the_same_training(tmp_path):
    curves = []
    for checkpointing in (False, True):
        components = build_tiny_components()
        config = LoraTrainingConfig.for_preset("tiny", steps=5, gradient_checkpointing=checkpointing)
        result = train_lora(
            components, [reference_picture()], "<mara>", tmp_path / f"{checkpointing}.safetensors", config=config
        )
        curves.append(result.loss_curve)
        assert not components["transformer"].is_gradient_checkpointing
    assert curves[0] == pytest.approx(curves[1], rel=1e-5)
    assert LoraTrainingConfig.for_preset("wan2.1-t2v-14b").gradient_checkpointing
    assert not LoraTrainingConfig.for_preset("tiny").gradient_checkpointing


def test_training_is_reproducible_and_leaves_the_global_rng_alone(tmp_path):
    curves = []
    for run in range(2):
        torch.manual_seed(123)
        result = train_lora(
            build_tiny_components(),
            [reference_picture()],
            "<mara>",
            tmp_path / f"{run}.safetensors",
            config=LoraTrainingConfig.for_preset("tiny", steps=5),
        )
        curves.append(result.loss_curve)
        after = torch.rand(1)
        torch.manual_seed(123)
        build_tiny_components()  # the same global draws as above, without training
        assert torch.equal(after, torch.rand(1))
    assert curves[0] == curves[1]


def test_captions_of_different_lengths_unpadded(tmp_path):
    from adapters.lora import batch_text, prepare_samples

    components = build_tiny_components()
    config = LoraTrainingConfig.for_preset("tiny", steps=3, batch_size=2, max_sequence_length=None, augment_variants=1)
    pictures = [reference_picture(), reference_picture((40, 200, 40))]
    captions = ["mara", "mara , a keeper in red"]
    samples = prepare_samples(components, pictures, captions, config)
    assert [t.shape[0] for t in samples.text] == [2, 7]  # each caption at its own length (words + eos)
    batch = batch_text(samples, torch.tensor([0, 1]))
    assert batch.shape[:2] == (2, 7) and torch.equal(batch[0, 2:], torch.zeros(5, batch.shape[2]))
    result = train_lora(components, pictures, "<mara>", tmp_path / "m.safetensors", config=config, captions=captions)
    assert result.steps_done == 3 and result.path.is_file()


def test_captions_name_the_character_by_its_trigger_and_train_on_its_caption_word(tmp_path):
    config = LoraTrainingConfig.for_preset("tiny", steps=2)
    runs = {}
    for form in ("wide shot, <mara> walks", "wide shot, mara walks"):
        result = train_lora(
            build_tiny_components(),
            [reference_picture()],
            "<mara>",
            tmp_path / "l.safetensors",
            config,
            captions=[form],
        )
        runs[form] = result.eval_loss_before
    # `<mara>` in a caption becomes `mara`, as storyboard captions do at generation: the same text, the same loss.
    assert runs["wide shot, <mara> walks"] == runs["wide shot, mara walks"]
    other = train_lora(
        build_tiny_components(), [reference_picture()], "<mara>", tmp_path / "o.safetensors", config, captions=["mara"]
    )
    assert other.eval_loss_before != runs["wide shot, mara walks"]  # and the caption is what the model sees
