"""References shown as still clips: the demo preset trains adapters on clips held still for a whole shot, run as a
one-shot scene through the preset's cross-attention, because the demo model has only ever seen clips."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import reference_picture

from adapters.common import encode_images, images_to_tensor, transformer_forward
from adapters.embedding import EmbeddingTrainingConfig, train_embedding
from adapters.lora import LoraTrainingConfig, read_lora_metadata, train_lora
from pipelines.attention import multishot_attention
from pipelines.layout import ShotLayout
from pipelines.tiny import build_tiny_components


def test_presets_choose_still_clips_for_the_demo_model_only():
    demo = LoraTrainingConfig.for_preset("demo")
    assert demo.still_frames == 17 and demo.cross_attention == "mmrope"
    assert EmbeddingTrainingConfig.for_preset("demo").still_frames == 17
    real = LoraTrainingConfig.for_preset("wan2.1-t2v-1.3b")
    assert real.still_frames == 1 and real.cross_attention == "window"
    for bad in (0, 4, 16):
        with pytest.raises(ValueError, match="4n\\+1"):
            LoraTrainingConfig(still_frames=bad).validate()
        with pytest.raises(ValueError, match="4n\\+1"):
            EmbeddingTrainingConfig(still_frames=bad).validate()


def test_still_clip_is_the_picture_repeated_and_encodes_to_its_latent_frames():
    picture = reference_picture().resize((32, 32))
    clip = images_to_tensor([picture], frames=9)
    assert clip.shape == (1, 3, 9, 32, 32)
    assert all(torch.equal(clip[:, :, i], clip[:, :, 0]) for i in range(9))
    assert torch.equal(images_to_tensor([picture])[:, :, 0], clip[:, :, 0])
    vae = build_tiny_components()["vae"]
    assert encode_images(vae, [picture], frames=9).shape[2] == 3  # 1 + (9 - 1) / 4 latent frames


def test_training_forward_is_the_pipelines_one_shot_forward():
    torch.manual_seed(0)
    transformer = build_tiny_components()["transformer"].eval()
    x = torch.randn(1, transformer.config.in_channels, 3, 4, 4)
    text = torch.randn(1, 6, transformer.config.text_dim)
    t = torch.tensor([500.0])
    with torch.no_grad():
        ours = transformer_forward(transformer, x, t, text, "mmrope")
        layout = ShotLayout.build([3], 2, 2, [6])
        with multishot_attention(transformer, layout, "mmrope", "full"):
            pipeline = transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        stock = transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        # One latent frame: mmrope and the stock forward agree, so images keep the stock path.
        image = x[:, :, :1]
        single = transformer_forward(transformer, image, t, text, "mmrope")
        with multishot_attention(transformer, ShotLayout.build([1], 2, 2, [6]), "mmrope", "full"):
            single_pipeline = transformer(hidden_states=image, timestep=t, encoder_hidden_states=text).sample
    assert torch.equal(ours, pipeline)
    assert not torch.allclose(ours, stock)  # the caption's temporal anchor matters for a clip
    torch.testing.assert_close(single, single_pipeline)


@pytest.mark.parametrize("kind", ["lora", "embedding"])
def test_adapters_train_on_still_clips(tmp_path, kind):
    torch.set_num_threads(1)
    components = build_tiny_components()
    transformer = components["transformer"]
    seen = []  # (latent frames, cross-attention processor) of every training forward

    def record(module, args, kwargs):
        processor = module.blocks[0].attn2.processor
        seen.append((kwargs["hidden_states"].shape[2], type(processor).__name__))

    hook = transformer.register_forward_pre_hook(record, with_kwargs=True)
    common = dict(steps=40, still_frames=5, cross_attention="mmrope")
    if kind == "lora":
        config = LoraTrainingConfig.for_preset("tiny", **common)
        result = train_lora(
            components, [reference_picture()], "<mara>", tmp_path / "m.safetensors", config, preset="tiny"
        )
        assert read_lora_metadata(result.path)["config"]["still_frames"] == 5
    else:
        config = EmbeddingTrainingConfig.for_preset("tiny", **common)
        result = train_embedding(
            components, [reference_picture()], "<mara>", tmp_path / "m.safetensors", config, preset="tiny"
        )
        assert result.metadata["config"]["still_frames"] == 5
    hook.remove()
    assert result.steps_done == 40 and result.eval_loss_after < result.eval_loss_before
    # Every step saw a 5-frame still clip (2 latent frames) through the pipeline's multi-shot cross-attention.
    assert len(seen) >= 40 and set(seen) == {(2, "MultiShotCrossAttnProcessor")}
