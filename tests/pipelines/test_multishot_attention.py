"""Attention processors and rotary module on the stock WanTransformer3DModel, against dense references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipelines import ShotLayout, multishot_attention
from pipelines.attention import (
    MultiShotAttentionState,
    MultiShotCrossAttnProcessor,
    MultiShotRotaryPosEmbed,
    apply_rotary_emb,
)

TEXT_DIM = 32


class DenseReferenceProcessor:
    """Dense-mask attention straight from the layout's reference masks (what the block-wise processors must equal)."""

    def __init__(self, mask_fn):
        self.mask_fn = mask_fn

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(context).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = apply_rotary_emb(q, *rotary_emb), apply_rotary_emb(k, *rotary_emb)
        mask = self.mask_fn(encoder_hidden_states is None)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return attn.to_out[0](out.transpose(1, 2).flatten(2, 3))


def _scene(layout: ShotLayout, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 16, layout.num_video_frames, layout.grid_height * 2, layout.grid_width * 2, generator=g)
    text = torch.randn(1, layout.num_text_tokens, TEXT_DIM, generator=g)
    return latent, text


def _forward(transformer, latent, text, timestep=None):
    timestep = torch.tensor([500.0]) if timestep is None else timestep
    return transformer(hidden_states=latent, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]


LAYOUT = ShotLayout.build([2, 1, 3], grid_height=2, grid_width=2, caption_lengths=[3, 2, 4], global_length=2, gap=1)


@pytest.mark.parametrize("self_mode", ["full", "sparse", "isolated"])
@pytest.mark.parametrize("cross_mode", ["window", "full"])
def test_blockwise_processors_equal_dense_masked_attention(tiny_components, self_mode, cross_mode):
    transformer = tiny_components["transformer"]
    latent, text = _scene(LAYOUT)
    with torch.no_grad(), multishot_attention(transformer, LAYOUT, cross_mode, self_mode):
        blockwise = _forward(transformer, latent, text)
        # Swap in dense references under the same rotary module: the outputs must agree.
        self_mask = LAYOUT.self_attention_mask(self_mode)
        cross_mask = LAYOUT.cross_attention_mask(cross_mode)
        reference = DenseReferenceProcessor(lambda is_self: self_mask if is_self else cross_mask)
        stock = transformer.attn_processors
        transformer.set_attn_processor(reference)
        dense = _forward(transformer, latent, text)
        transformer.set_attn_processor(stock)
    assert (blockwise - dense).abs().max() < 1e-5


def test_mmrope_scores_rotated_captions_and_unrotated_global_tokens():
    layout = ShotLayout.build([2, 3], grid_height=1, grid_width=2, caption_lengths=[2, 3], global_length=2, gap=2)
    state = MultiShotAttentionState(layout, "mmrope", "full")
    state.rope_dims = (4, 4, 4)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, layout.num_video_tokens, 2, 12, generator=g)
    k = torch.randn(1, layout.num_text_tokens, 2, 12, generator=g)
    v = torch.randn(1, layout.num_text_tokens, 2, 12, generator=g)
    out = MultiShotCrossAttnProcessor(state)._mmrope(None, q, k, v)

    (v_cos, v_sin), (t_cos, t_sin) = layout.temporal_rotary_tables(4, 12)
    q_rot, k_rot = apply_rotary_emb(q, v_cos, v_sin), apply_rotary_emb(k, t_cos, t_sin)
    is_global = (layout.text_owner < 0)[None, :, None]
    scores = torch.where(
        is_global, torch.einsum("bshd,blhd->bslh", q, k), torch.einsum("bshd,blhd->bslh", q_rot, k_rot)
    ) / math.sqrt(12)
    expected = torch.einsum("bslh,blhd->bshd", scores.softmax(dim=2), v)
    assert (out - expected).abs().max() < 1e-5
    # Only the temporal band (first 4 channels) is rotated: height/width channels pass through unchanged.
    assert torch.equal(q_rot[..., 4:], q[..., 4:])
    # The rotation depends on time distance only: shifting the whole scene in time changes nothing.
    shifted = ShotLayout(layout.latent_frames, 1, 2, (5, 9), layout.caption_lengths, layout.global_length)
    shifted_state = MultiShotAttentionState(shifted, "mmrope", "full")
    shifted_state.rope_dims = (4, 4, 4)
    assert (MultiShotCrossAttnProcessor(shifted_state)._mmrope(None, q, k, v) - out).abs().max() < 1e-5


def test_context_manager_restores_the_stock_model(tiny_components):
    transformer = tiny_components["transformer"]
    stock_rope = transformer.rope
    stock_types = {type(p) for p in transformer.attn_processors.values()}
    latent, text = _scene(ShotLayout.build([2], 2, 2, caption_lengths=[5]))
    with torch.no_grad():
        before = _forward(transformer, latent, text)
        with pytest.raises(ValueError, match="does not match the shot layout"):
            with multishot_attention(transformer, ShotLayout.build([3], 2, 2, caption_lengths=[5])):
                assert isinstance(transformer.rope, MultiShotRotaryPosEmbed)
                _forward(transformer, latent, text)
        after = _forward(transformer, latent, text)
    assert transformer.rope is stock_rope
    assert {type(p) for p in transformer.attn_processors.values()} == stock_types
    assert torch.equal(before, after)


def test_training_forward_with_per_shot_timesteps(tiny_components):
    """How a model is trained natively multi-shot: per-token timesteps [B, S] from per-shot ones, with gradients."""
    transformer = tiny_components["transformer"]
    layout = ShotLayout.build([2, 1], grid_height=2, grid_width=2, caption_lengths=[4, 3])
    latent, text = _scene(layout, seed=1)
    latent = latent.expand(2, -1, -1, -1, -1)
    text = text.expand(2, -1, -1)
    with multishot_attention(transformer, layout, "mmrope", "full"):
        same = layout.token_timesteps(torch.tensor([[300.0, 300.0], [700.0, 700.0]]))
        with torch.no_grad():
            per_token = _forward(transformer, latent, text, same)
            scalar = _forward(transformer, latent, text, torch.tensor([300.0, 700.0]))
        assert (per_token - scalar).abs().max() < 1e-4  # equal timesteps reduce to the scalar form

        per_shot = layout.token_timesteps(torch.tensor([[0.0, 900.0], [450.0, 50.0]]))
        assert per_shot.shape == (2, layout.num_video_tokens)
        transformer.zero_grad()
        out = _forward(transformer, latent, text, per_shot)
        out.pow(2).mean().backward()
        grad = transformer.blocks[0].attn2.to_q.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        transformer.zero_grad()
