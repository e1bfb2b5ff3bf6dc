"""ShotLayout: positions with shot offsets and gap, caption ownership, masks and rotary tables."""

from __future__ import annotations

import pytest
import torch

from pipelines import ShotLayout
from pipelines.layout import GLOBAL_OWNER


def test_positions_follow_shot_offsets_and_gap():
    layout = ShotLayout.build([2, 3, 1], grid_height=2, grid_width=3, caption_lengths=[4, 5, 6], gap=2)
    assert layout.time_offsets == (0, 4, 9)
    assert layout.num_video_tokens == (2 + 3 + 1) * 6
    pos = layout.video_positions
    # Shot 1 starts after shot 0's 2 frames and a gap of 2: its first token sits at (4, 0, 0).
    a, b = layout.token_spans[1]
    assert (a, b) == (12, 30)
    assert pos[a].tolist() == [4.0, 0.0, 0.0]
    # Row-major (frame, row, column) inside a shot, as WanTransformer3DModel flattens its latent.
    assert pos[a + 1].tolist() == [4.0, 0.0, 1.0]
    assert pos[a + 3].tolist() == [4.0, 1.0, 0.0]
    assert pos[a + 6].tolist() == [5.0, 0.0, 0.0]
    assert pos[b - 1].tolist() == [6.0, 1.0, 2.0]
    assert layout.video_shot.tolist() == [0] * 12 + [1] * 18 + [2] * 6


def test_captions_are_owned_and_anchored_inside_their_shot():
    layout = ShotLayout.build([3, 5], grid_height=1, grid_width=1, caption_lengths=[2, 3], global_length=4, gap=1)
    assert layout.text_owner.tolist() == [GLOBAL_OWNER] * 4 + [0, 0, 1, 1, 1]
    assert layout.caption_spans == ((4, 6), (6, 9))
    for shot in range(2):
        start = layout.time_offsets[shot]
        end = start + layout.latent_frames[shot] - 1
        a, b = layout.caption_spans[shot]
        times = layout.text_time[a:b]
        assert torch.all(times >= start) and torch.all(times <= end)
        assert torch.all(times == (start + end) / 2)


def test_rotary_tables_match_stock_wan_rope_for_one_shot(tiny_components):
    transformer = tiny_components["transformer"]
    rope = transformer.rope
    latent = torch.zeros(1, 16, 3, 4, 6)  # 3 latent frames, 2x3 tokens per frame after the 1x2x2 patch
    stock_cos, stock_sin = rope(latent)
    layout = ShotLayout.build([3], grid_height=2, grid_width=3, caption_lengths=[8])
    cos, sin = layout.rotary_tables(rope.t_dim, rope.h_dim, rope.w_dim)
    assert cos.shape == stock_cos.shape
    assert torch.equal(cos, stock_cos) and torch.equal(sin, stock_sin)


def test_rotary_tables_are_shifted_copies_between_shots():
    layout = ShotLayout.build([2, 2], grid_height=1, grid_width=2, caption_lengths=[1, 1], gap=3)
    alone = ShotLayout.build([2], grid_height=1, grid_width=2, caption_lengths=[1])
    cos, _ = layout.rotary_tables(4, 4, 4)
    alone_cos, _ = alone.rotary_tables(4, 4, 4)
    # Same row/column bands; the temporal band of shot 1 is that of frames 5, 6 (2 frames + gap 3).
    assert torch.equal(cos[:, 4:, :, 4:], alone_cos[..., 4:])
    shifted = ShotLayout.build([7], grid_height=1, grid_width=2, caption_lengths=[1]).rotary_tables(4, 4, 4)[0]
    assert torch.equal(cos[:, 4:, :, :4], shifted[:, 10:14, :, :4])


def test_masks_of_each_mode():
    layout = ShotLayout.build([2, 1, 2], grid_height=1, grid_width=2, caption_lengths=[2, 1, 3], global_length=2)
    shot = layout.video_shot
    full = layout.self_attention_mask("full")
    isolated = layout.self_attention_mask("isolated")
    sparse = layout.self_attention_mask("sparse")
    assert full.all()
    assert torch.equal(isolated, shot[:, None] == shot[None, :])
    # Sparse: own shot, plus the first latent frame (2 tokens) of every other shot.
    first_frame = torch.zeros(layout.num_video_tokens, dtype=torch.bool)
    for a, _ in layout.token_spans.values():
        first_frame[a : a + layout.tokens_per_frame] = True
    assert torch.equal(sparse, isolated | first_frame[None, :])
    assert sparse.sum() < full.sum() and sparse.sum() > isolated.sum()

    window = layout.cross_attention_mask("window")
    owner = layout.text_owner
    for s in range(layout.num_video_tokens):
        seen = owner[window[s]].unique().tolist()
        assert seen == sorted([GLOBAL_OWNER, int(shot[s])])
    assert layout.cross_attention_mask("mmrope").all()


def test_subset_keeps_scene_positions():
    layout = ShotLayout.build([2, 3, 1], grid_height=1, grid_width=1, caption_lengths=[1, 1, 1])
    sub = layout.subset([1])
    assert sub.num_video_tokens == 3
    assert sub.video_positions[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert sub.num_text_tokens == layout.num_text_tokens
    assert sub.video_shot.tolist() == [1, 1, 1]


def test_token_timesteps_per_shot():
    layout = ShotLayout.build([1, 2], grid_height=1, grid_width=2, caption_lengths=[1, 1])
    t = layout.token_timesteps(torch.tensor([[0.0, 500.0], [10.0, 20.0]]))
    assert t.shape == (2, 6)
    assert t[0].tolist() == [0.0, 0.0, 500.0, 500.0, 500.0, 500.0]
    assert t[1].tolist() == [10.0, 10.0, 20.0, 20.0, 20.0, 20.0]
    with pytest.raises(ValueError, match="one timestep per shot"):
        layout.token_timesteps([1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(latent_frames=[], caption_lengths=[]), "at least one shot"),
        (dict(latent_frames=[0], caption_lengths=[1]), "at least one latent frame"),
        (dict(latent_frames=[1, 1], caption_lengths=[1]), "one entry per shot"),
        (dict(latent_frames=[1], caption_lengths=[1], gap=-1), "gap"),
    ],
)
def test_bad_layouts_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShotLayout.build(grid_height=1, grid_width=1, **kwargs)
