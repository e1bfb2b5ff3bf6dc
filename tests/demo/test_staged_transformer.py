"""The staged 4x transformer (assets/staged/transformer_4x): what the next GPU session's `train_gpu all
--init-transformer` goes on from, in the staged 4x autoencoder's latent space (docs/QUALITY.md section 4.2). Not part
of the shipped model; the studio never loads it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

STAGED = Path(__file__).resolve().parents[2] / "assets" / "staged" / "transformer_4x"


def test_staged_transformer_is_the_4x_layout_in_half_precision_and_loads_as_float32():
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    from training.train_demo import transformer_config
    from training.train_vae import WEIGHTS_DTYPE

    files = list(STAGED.rglob("*.safetensors"))
    assert len(files) == 1 and files[0].stat().st_size < 16 * 2**20
    assert {value.dtype for value in load_file(files[0]).values()} == {WEIGHTS_DTYPE}
    model = WanTransformer3DModel.from_pretrained(
        STAGED / "transformer", local_files_only=True, torch_dtype=torch.float32
    )
    expected = transformer_config(patch=4, heads=8, ffn_dim=640)
    for key in ("num_attention_heads", "attention_head_dim", "num_layers", "ffn_dim", "in_channels", "text_dim"):
        assert model.config[key] == expected[key], key
    assert tuple(model.config.patch_size) == (1, 4, 4)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    provenance = json.loads((STAGED / "training.json").read_text())
    assert "vae_4x" in provenance["latent_space"]
    assert provenance["steps"] == sum(provenance["steps_by_session"].values())


def test_staged_transformer_predicts_in_the_staged_autoencoders_latent_space():
    """What `--init-transformer` relies on: the transformer reads and writes latents of the staged VAE's channel
    count, one shot's latent grid gives the 80 tokens training used, and the prediction is finite."""
    from diffusers import WanTransformer3DModel

    vae_config = json.loads((STAGED.parent / "vae_4x" / "config.json").read_text())
    model = WanTransformer3DModel.from_pretrained(
        STAGED / "transformer", local_files_only=True, torch_dtype=torch.float32
    )
    z_dim = vae_config["z_dim"]
    assert model.config.in_channels == model.config.out_channels == z_dim
    # a 17-frame 64x64 shot through the staged VAE, then the transformer's patches: the 80 tokens training used
    frames = (17 - 1) // vae_config["scale_factor_temporal"] + 1
    side = 64 // vae_config["scale_factor_spatial"]
    _, patch_h, patch_w = model.config.patch_size
    assert frames * (side // patch_h) * (side // patch_w) == 80
    latents = torch.randn(1, z_dim, frames, side, side, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 4, model.config.text_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(latents, timestep=torch.tensor([500]), encoder_hidden_states=text).sample
    assert out.shape == latents.shape and torch.isfinite(out).all()
