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
    assert provenance["steps"] > 0 and "vae_4x" in provenance["latent_space"]
