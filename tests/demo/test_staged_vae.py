"""The staged 4x autoencoder (assets/staged/vae_4x): the starting point of the next GPU session's `train_gpu vae`
and `all --init-vae` (docs/QUALITY.md section 4.1). Not part of the shipped model; the studio never loads it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eval.evaluate_demo import vae_roundtrip
from training.detector import read_shot
from training.world import FIGURE_SCALES, make_shot, render_shot

STAGED = Path(__file__).resolve().parents[2] / "assets" / "staged" / "vae_4x"


def test_staged_vae_is_a_small_4x_autoencoder_with_its_latent_statistics():
    from diffusers import AutoencoderKLWan

    files = list(STAGED.rglob("*.safetensors"))
    assert len(files) == 1 and files[0].stat().st_size < 8 * 2**20
    vae = AutoencoderKLWan.from_pretrained(STAGED, local_files_only=True, torch_dtype=torch.float32)
    assert vae.config.scale_factor_spatial == 4 and vae.config.z_dim == 16
    assert len(vae.config.latents_mean) == 16 and all(s > 0 for s in vae.config.latents_std)
    provenance = json.loads((STAGED / "training.json").read_text())
    assert provenance["gpu"]["vae_steps"] > 0 and provenance["cpu_decoder_steps"] > 0


def test_staged_vae_is_what_init_vae_starts_from_and_keeps_outlines():
    from training.train_vae import build_vae, load_vae_weights

    config, state = load_vae_weights(STAGED)
    vae = build_vae(0, config)
    vae.load_state_dict(state)  # strict: the config rebuilds exactly this layout
    vae.eval()
    scale = json.loads((STAGED / "training.json").read_text())["figure_scale"]  # the scale its decoder was tuned on
    assert scale in FIGURE_SCALES
    for name, size, shape in (("tom", "close-up", "square"), ("leo", "medium", "diamond"), ("mara", "wide", "circle")):
        frames = render_shot(make_shot(name, "desert", size, "stays", figure_scale=scale), size=64, num_frames=17)
        with torch.no_grad():
            reading = read_shot(vae_roundtrip(vae, frames), scale)
        assert reading.coherent and reading.shape == shape, (name, size, reading.shape)
