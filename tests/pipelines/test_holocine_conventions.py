"""HoloCine's inference conventions, with the expected values written by hand from the rules of their code
(wan_prompter.encode_prompt, WanVideoUnit_ShotEmbedder, model_fn_wan_video's mask, attention_per_batch_with_shots).

The tiny word tokenizer splits words and punctuation, so every token below can be counted by eye:
  [ global caption ] a lighthouse at night This scene contains 3 shots . [ per shot caption ] ...
"""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.holocine import (
    HoloCineAttentionState,
    HoloCineCrossAttnProcessor,
    HoloCineSelfAttnProcessor,
    cross_attention_keys,
    latent_shot_indices,
    scene_frames,
    sparse_self_attention_keys,
    structured_prompt,
    text_spans,
)
from pipelines.layout import ShotLayout
from pipelines.tiny import build_word_tokenizer

THREE = ("a lighthouse at night", ["mara climbs", "mara lights the lamp", "the sea"])
SIX = ("a forest at night", ["mara walks", "tom runs", "the dog sits", "a cat", "the moon", "rain"])


def _spans(global_caption, shots, length):
    text = structured_prompt(global_caption, shots)
    encoded = build_word_tokenizer()(
        [text], padding="max_length", max_length=length, truncation=True, return_offsets_mapping=True
    )
    return text, text_spans(text, [tuple(o) for o in encoded["offset_mapping"][0]])


def r(a: int, b: int) -> list[int]:
    """Positions a..b, both included (written as HoloCine's mask writes its spans)."""
    return list(range(a, b + 1))


def test_structured_prompt_is_theirs():
    text = structured_prompt(*THREE)
    assert text == (
        "[global caption] a lighthouse at night This scene contains 3 shots. [per shot caption] mara climbs "
        "[shot cut] mara lights the lamp [shot cut] the sea"
    )
    # A scene caption that already counts its shots is left as written.
    assert structured_prompt("This scene contains 2 shots.", ["a", "b"]).startswith(
        "[global caption] This scene contains 2 shots. [per shot caption] a [shot cut] b"
    )


def test_three_shot_spans_and_mask():
    # Tokens: 0-13 "[ global caption ] a lighthouse at night This scene contains 3 shots ."
    #         14-24 "[ per shot caption ] mara climbs [ shot cut ]"   (the cut belongs to the shot before it)
    #         25-32 "mara lights the lamp [ shot cut ]"
    #         33-34 "the sea", 35 "</s>" (empty offset: no span), 36-47 padding
    _, spans = _spans(*THREE, length=48)
    assert spans.global_span == (0, 14)
    assert spans.shot_spans == ((14, 25), (25, 33), (33, 35))
    keys = cross_attention_keys(spans, 48)
    # Inclusive ends: the global span reaches token 14, shot 0 token 25, shot 1 token 33, shot 2 token 35 (</s>);
    # everything after the last end + 1 (36..47) is padding, seen by every shot.
    assert keys[0] == r(0, 25) + r(36, 47)
    assert keys[1] == r(0, 14) + r(25, 33) + r(36, 47)
    assert keys[2] == r(0, 14) + r(33, 47)
    # Exactly as long as the text: no padding positions, </s> seen by the last shot only (its inclusive end).
    _, exact = _spans(*THREE, length=36)
    assert cross_attention_keys(exact, 36) == [r(0, 25), r(0, 14) + r(25, 33), r(0, 14) + r(33, 35)]


def test_six_shot_spans_and_mask():
    # 0-13 global; shot 0: 14-24 "[ per shot caption ] mara walks [ shot cut ]"; shot 1: 25-30 "tom runs [ shot
    # cut ]"; shot 2: 31-37 "the dog sits [ shot cut ]"; shot 3: 38-43 "a cat [ shot cut ]"; shot 4: 44-49 "the
    # moon [ shot cut ]"; shot 5: 50 "rain"; 51 "</s>"; 52-63 padding.
    _, spans = _spans(*SIX, length=64)
    assert spans.global_span == (0, 14)
    assert spans.shot_spans == ((14, 25), (25, 31), (31, 38), (38, 44), (44, 50), (50, 51))
    keys = cross_attention_keys(spans, 64)
    pad = r(52, 63)
    assert keys == [
        r(0, 25) + pad,
        r(0, 14) + r(25, 31) + pad,
        r(0, 14) + r(31, 38) + pad,
        r(0, 14) + r(38, 44) + pad,
        r(0, 14) + r(44, 50) + pad,
        r(0, 14) + r(50, 63),
    ]


def test_latent_shot_boundaries():
    # Storyboard shots of 17, 9 and 13 frames: 5, 3 and 4 latent frames end to end, continuous time.
    frames, cuts = scene_frames([5, 3, 4])
    assert (frames, cuts) == (45, [17, 29])  # 4 (12 - 1) + 1 frames; shots start at 4 T_k - 3
    assert latent_shot_indices(cuts, frames) == [0] * 5 + [1] * 3 + [2] * 4
    # Their sparse script's example: 241 frames cut at 37, 73, 113, 169, 205 -> latents 10, 19, 29, 43, 52 of 61.
    assert latent_shot_indices([37, 73, 113, 169, 205], 241) == (
        [0] * 10 + [1] * 9 + [2] * 10 + [3] * 14 + [4] * 9 + [5] * 9
    )


def test_sparse_key_sets_count_the_own_first_frame_twice():
    # Shots of 2, 1 and 3 latent frames on a 2x2 token grid: token spans (0, 8), (8, 12), (12, 24).
    pool = r(0, 3) + r(8, 11) + r(12, 15)
    assert sparse_self_attention_keys([(0, 8), (8, 12), (12, 24)], 4) == [
        r(0, 7) + pool,
        r(8, 11) + pool,
        r(12, 23) + pool,
    ]


@pytest.fixture(scope="module")
def blocks():
    from pipelines.tiny import build_tiny_components

    transformer = build_tiny_components()["transformer"]
    return transformer.blocks[0]


def _qkv(attn, hidden, context):
    q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    v = attn.to_v(context).unflatten(2, (attn.heads, -1)).transpose(1, 2)
    return q, k, v


def _out(attn, x):
    return attn.to_out[1](attn.to_out[0](x.transpose(1, 2).flatten(2, 3)))


def test_cross_attention_equals_their_additive_mask(blocks):
    """Their mask: a -1e4 bias on every text position a shot may not see, one dense SDPA."""
    attn = blocks.attn2
    _, spans = _spans(*THREE, length=48)
    layout = ShotLayout.build([2, 1, 1], 2, 2, caption_lengths=[11, 8, 15], global_length=14)
    torch.manual_seed(0)
    hidden, context = torch.randn(1, layout.num_video_tokens, 24), torch.randn(1, 48, 24)
    state = HoloCineAttentionState(
        type("S", (), {"layout": layout})(),
        [torch.tensor(k) for k in cross_attention_keys(spans, 48)],
        sparse=False,
    )
    got = HoloCineCrossAttnProcessor(state)(attn, hidden, context)
    allow = torch.zeros(layout.num_video_tokens, 48, dtype=torch.bool)
    for shot, keys in enumerate(cross_attention_keys(spans, 48)):
        a, b = layout.token_spans[shot]
        allow[a:b, keys] = True
    bias = torch.zeros(allow.shape).masked_fill(~allow, -1e4)
    q, k, v = _qkv(attn, hidden, context)
    expected = _out(attn, torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The unconditional pass (negative prompt, no shot captions in the layout) is attended unmasked.
    state.multishot.layout = layout.with_text([0, 0, 0], 48)
    unmasked = _out(attn, torch.nn.functional.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(
        HoloCineCrossAttnProcessor(state)(attn, hidden, context), unmasked, atol=1e-5, rtol=1e-5
    )


def test_sparse_self_attention_equals_their_per_shot_softmax(blocks):
    attn = blocks.attn1
    layout = ShotLayout.build([2, 1, 3], 2, 2, caption_lengths=[1, 1, 1])
    torch.manual_seed(1)
    hidden = torch.randn(1, layout.num_video_tokens, 24)
    state = HoloCineAttentionState(type("S", (), {"layout": layout})(), [], sparse=True)
    got = HoloCineSelfAttnProcessor(state)(attn, hidden)
    q, k, v = _qkv(attn, hidden, hidden)
    outs = []
    for shot, keys in enumerate(sparse_self_attention_keys([(0, 8), (8, 12), (12, 24)], 4)):
        a, b = layout.token_spans[shot]
        kk, vv = k[:, :, keys], v[:, :, keys]  # duplicated pool keys stay duplicated, as in their varlen call
        weights = torch.softmax(q[:, :, a:b] @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        outs.append(weights @ vv)
    torch.testing.assert_close(got, _out(attn, torch.cat(outs, dim=2)), atol=1e-5, rtol=1e-5)
