"""The shipped demo model (assets/demo): loads offline through the studio's loader and renders the storyboard."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.loading import DEMO_MODEL_DIR

pytestmark = pytest.mark.skipif(
    not (DEMO_MODEL_DIR / "model_index.json").exists(), reason="assets/demo is not exported yet"
)


@pytest.fixture(scope="module")
def pipe(demo_pipe):
    return demo_pipe


def test_shipped_weights_are_small_safetensors():
    files = [p for p in DEMO_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 40 * 2**20
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    assert {p.parent.name for p in weights} == {"text_encoder", "vae", "transformer"}
    assert all(p.suffix == ".safetensors" for p in weights)
    index = json.loads((DEMO_MODEL_DIR / "model_index.json").read_text())
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLWan"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]


def test_weights_are_stored_in_half_precision_and_load_as_float32(pipe, tmp_path):
    from safetensors.torch import load_file

    from training.train_vae import WEIGHTS_DTYPE, save_model_folder

    for name in ("transformer", "vae"):
        stored = load_file(DEMO_MODEL_DIR / name / "diffusion_pytorch_model.safetensors")
        assert {value.dtype for value in stored.values()} == {WEIGHTS_DTYPE}
        loaded = getattr(pipe, name).state_dict()
        assert all(loaded[key].dtype == torch.float32 for key in stored)  # the studio computes in float32 on a CPU
        assert all(torch.equal(loaded[key], value.float()) for key, value in stored.items())
    # the writer: the file holds the rounded weights, the model in memory keeps its own
    model = pipe.vae
    before = {key: value.clone() for key, value in model.state_dict().items()}
    save_model_folder(model, tmp_path / "vae")
    written = load_file(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(written[key], value.to(WEIGHTS_DTYPE)) for key, value in before.items())
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())


def test_shipped_model_loads_with_the_training_configs(pipe):
    """The shipped layout is one the training scripts build: the autoencoder of its spatial factor, and a
    transformer whose patch keeps 80 tokens a shot on it (patch 2 on the 8x autoencoder, 4 on the 4x one)."""
    from training.train_demo import TEXT_CONFIG, TRANSFORMER_CONFIG
    from training.train_vae import VAE_CONFIGS

    factor = pipe.vae.config.scale_factor_spatial
    for key, value in VAE_CONFIGS[factor].items():
        assert pipe.vae.config[key] == (list(value) if isinstance(value, tuple) else value), key
    assert len(pipe.vae.config.latents_std) == pipe.vae.config.z_dim
    cfg = pipe.transformer.config
    assert tuple(cfg.patch_size) == (1, 16 // factor, 16 // factor)
    assert cfg.in_channels == cfg.out_channels == pipe.vae.config.z_dim and cfg.text_dim == TEXT_CONFIG["d_model"]
    for key in ("attention_head_dim", "num_layers", "freq_dim", "cross_attn_norm", "qk_norm"):
        assert cfg[key] == TRANSFORMER_CONFIG[key], key
    assert pipe.config.cross_attention == "mmrope" and pipe.config.regenerate_mode == "context"
    assert pipe.scheduler.config.shift == 3.0
    assert pipe.resolution_multiple == 16


def test_training_records_say_how_the_shipped_weights_were_made():
    """The provenance a later session goes on from (`train_gpu --init-vae assets/demo/vae --init-transformer
    assets/demo`): the figure scale, the transformer's steps by session, the autoencoder's GPU and CPU steps."""
    from training.world import FIGURE_SCALES, recorded_figure_scale

    info = json.loads((DEMO_MODEL_DIR / "training.json").read_text())
    assert info["trained_steps"] == sum(info["steps_by_session"].values())
    vae_info = json.loads((DEMO_MODEL_DIR / "vae" / "training.json").read_text())
    assert vae_info["gpu"]["vae_steps"] > 0 and vae_info["cpu_decoder_steps"] > 0
    # the model and its autoencoder name one scale, the one every evaluation reads the shipped model's frames at
    assert recorded_figure_scale(DEMO_MODEL_DIR) == recorded_figure_scale(DEMO_MODEL_DIR / "vae") in FIGURE_SCALES


def test_autoencoder_keeps_the_outline_of_every_shot_size(pipe):
    """Real frames through the shipped autoencoder keep one coherent figure of the right shape at every shot size
    (docs/QUALITY.md: what it cannot draw, the transformer cannot reach)."""
    from eval.evaluate_demo import vae_roundtrip
    from training.detector import read_shot
    from training.world import make_shot, recorded_figure_scale, render_shot

    scale = recorded_figure_scale(DEMO_MODEL_DIR)
    for name, size, shape in (("tom", "close-up", "square"), ("leo", "medium", "diamond"), ("mara", "wide", "circle")):
        frames = render_shot(make_shot(name, "desert", size, "stays", figure_scale=scale), size=64, num_frames=17)
        with torch.no_grad():
            reading = read_shot(vae_roundtrip(pipe.vae, frames), scale)
        assert reading.coherent and reading.shape == shape, (name, size, reading.shape)


def test_pipeline_encodes_captions_exactly_as_training_did(pipe):
    from training.train_demo import encode_text
    from training.world import sample_scene

    scene = sample_scene(5, render=False)
    for text in [scene.global_caption, *scene.captions, ""]:
        ours = encode_text(pipe.tokenizer, pipe.text_encoder, text)
        theirs = pipe.encode_caption(text, max_sequence_length=None)
        assert ours.shape == theirs.shape and torch.equal(ours, theirs.float())
    assert pipe.tokenizer.unk_token_id not in pipe.tokenizer(scene.captions[0]).input_ids


def test_two_shot_render_shows_the_captioned_characters(pipe):
    """The functional test of the shipped weights: a fixed two-shot storyboard, 10 steps on the CPU (a few seconds),
    read back by the detector that reads real frames at 100%."""
    from eval.evaluate_demo import render_storyboard
    from training.detector import read_shot
    from training.world import global_caption, make_shot, recorded_figure_scale, shot_caption

    scale = recorded_figure_scale(DEMO_MODEL_DIR)  # the figure sizes the shipped model was trained to draw
    shots = [
        make_shot("mara", "snow", "medium", "stays", figure_scale=scale),
        make_shot("tom", "snow", "close-up", "moves left", figure_scale=scale),
    ]
    captions = [shot_caption(s) for s in shots]
    rendered = render_storyboard(pipe, captions, global_caption("snow", ["mara", "tom"]), seed=0, steps=10)
    assert len(rendered) == 2 and rendered[0].shape == (17, 64, 64, 3)
    for labels, frames in zip(shots, rendered, strict=True):
        reading = read_shot(frames, scale)
        assert reading.coherent, f"no coherent figure in the shot of {labels.character}"
        seen = (reading.location, reading.colour, reading.shape, reading.shot_size, reading.action)
        assert seen == (labels.location, labels.colour, labels.shape, labels.shot_size, labels.action)
