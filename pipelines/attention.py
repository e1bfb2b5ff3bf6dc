"""Multi-shot attention on the stock `WanTransformer3DModel`: a rotary module and two attention processors.

Nothing of the model is copied. `multishot_attention(transformer, layout, ...)` swaps `transformer.rope` for
`MultiShotRotaryPosEmbed` and sets `MultiShotSelfAttnProcessor` on every `attn1` and `MultiShotCrossAttnProcessor`
on every `attn2`, all reading one shared `MultiShotAttentionState`; leaving the context restores the stock modules.
Pipelines call it around their denoising loop; training code calls it around its forward passes.

The modes are described in docs/ARCHITECTURE.md, "Attention modes". Self-attention: `full` is one attention call
over the scene; `sparse` and `isolated` are one call per shot against that shot's key set (never a dense boolean
mask over the scene, whose size grows with the square of the scene length). Cross-attention: `full` one call over
every caption; `window` one call per shot against `[global; caption_k]`; `mmrope` one call in which shot captions
are scored with the temporally rotated query and the global caption with the unrotated one (see `_mmrope`), with
the softmax scale of the original head size.
Every attention call goes through diffusers' dispatcher (`dispatch_attention_fn`) with the backend chosen by
`transformer.set_attention_backend(...)`, so flash, sage or cuDNN attention applies to multi-shot scenes too.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from .layout import ShotLayout
from .registry import CROSS_ATTENTION_MODES, SELF_ATTENTION_MODES


class MultiShotAttentionState:
    """What the rotary module and processors of one transformer read: the layout and the attention modes.

    The pipeline swaps `layout` between the conditional and unconditional passes (their text sequences differ);
    the video part must stay what the transformer is given.
    """

    def __init__(self, layout: ShotLayout, cross_attention: str = "window", self_attention: str = "full"):
        if cross_attention not in CROSS_ATTENTION_MODES:
            raise ValueError(f"cross_attention must be one of {CROSS_ATTENTION_MODES}, got {cross_attention!r}")
        if self_attention not in SELF_ATTENTION_MODES:
            raise ValueError(f"self_attention must be one of {SELF_ATTENTION_MODES}, got {self_attention!r}")
        self.layout = layout
        self.cross_attention = cross_attention
        self.self_attention = self_attention
        self.theta = 10000.0  # WanRotaryPosEmbed's default; diffusers' Wan configs never change it
        self.rope_dims: tuple[int, int, int] | None = None  # (t, h, w) bands of a head, set by the rotary module


def apply_rotary_emb(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved-pair rotation, as `WanAttnProcessor` writes it, so one shot matches it bit for bit."""
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend=None) -> torch.Tensor:
    """Attention over `[B, S, H, D]` tensors through diffusers' dispatcher (honours the selected backend)."""
    return dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, backend=backend)


def _take(x: torch.Tensor, keys: tuple[int, int] | torch.Tensor) -> torch.Tensor:
    """Tokens `keys` (a span or an index tensor) of a `[B, S, H, D]` tensor along S."""
    if isinstance(keys, tuple):
        return x[:, keys[0] : keys[1]]
    return x.index_select(1, keys)


def _project(attn, hidden_states: torch.Tensor, context: torch.Tensor):
    query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
    key = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
    value = attn.to_v(context).unflatten(2, (attn.heads, -1))
    return query, key, value


def _out(attn, hidden_states: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    hidden_states = hidden_states.flatten(2, 3).type_as(like)
    return attn.to_out[1](attn.to_out[0](hidden_states))


def _check_video_length(state: MultiShotAttentionState, hidden_states: torch.Tensor) -> None:
    if hidden_states.shape[1] != state.layout.num_video_tokens:
        raise ValueError(
            f"the transformer got {hidden_states.shape[1]} video tokens but the shot layout has "
            f"{state.layout.num_video_tokens}; build the layout from the same frames and resolution as the latent"
        )


class MultiShotSelfAttnProcessor:
    """Video self-attention over a multi-shot scene (`full` | `sparse` | `isolated`)."""

    _attention_backend = None  # set by `transformer.set_attention_backend(...)`, as on diffusers' processors

    def __init__(self, state: MultiShotAttentionState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attention_mask is not None:
            raise ValueError("multi-shot self-attention takes its structure from the layout, not an attention_mask")
        _check_video_length(self.state, hidden_states)
        query, key, value = _project(attn, hidden_states, hidden_states)
        if rotary_emb is not None:
            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *rotary_emb)

        layout, mode = self.state.layout, self.state.self_attention
        if mode == "full" or len(layout.video_shots) == 1 and mode == "sparse":
            out = _attend(query, key, value, self._attention_backend)
        else:
            # One call per shot against its own key set: cost grows with the shots, not the scene squared.
            outs = []
            for shot, keys in layout.self_attention_keys(mode, query.device).items():
                a, b = layout.token_spans[shot]
                outs.append(_attend(query[:, a:b], _take(key, keys), _take(value, keys), self._attention_backend))
            out = torch.cat(outs, dim=1)
        return _out(attn, out, query)


class MultiShotCrossAttnProcessor:
    """Video-to-text cross-attention over per-shot captions (`mmrope` | `window` | `full`)."""

    _attention_backend = None

    def __init__(self, state: MultiShotAttentionState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attn.add_k_proj is not None:
            raise NotImplementedError("image-conditioned Wan models (added K/V projections) are not supported")
        if attention_mask is not None:
            raise ValueError("multi-shot cross-attention takes its structure from the layout, not an attention_mask")
        layout, mode = self.state.layout, self.state.cross_attention
        _check_video_length(self.state, hidden_states)
        if encoder_hidden_states.shape[1] != layout.num_text_tokens:
            raise ValueError(
                f"the transformer got {encoder_hidden_states.shape[1]} text tokens but the shot layout has "
                f"{layout.num_text_tokens} (global {layout.global_length} + captions {layout.caption_lengths})"
            )
        query, key, value = _project(attn, hidden_states, encoder_hidden_states)

        if mode == "full" or not layout.has_captions:
            # Every caption for every shot; a text of global tokens only (the negative prompt) is the same in any mode.
            out = _attend(query, key, value, self._attention_backend)
        elif mode == "window":
            outs = []
            for shot, (a, b) in layout.token_spans.items():
                keys = layout.window_text_keys(shot, query.device)
                outs.append(_attend(query[:, a:b], _take(key, keys), _take(value, keys), self._attention_backend))
            out = torch.cat(outs, dim=1)
        else:
            out = self._mmrope(attn, query, key, value)
        return _out(attn, out, query)

    def _mmrope(self, attn, query, key, value):
        layout = self.state.layout
        head_dim = query.shape[-1]
        rope = self.state.rope_dims
        t_dim = rope[0] if rope else head_dim - 4 * (head_dim // 6)  # WanRotaryPosEmbed's split
        (v_cos, v_sin), (t_cos, t_sin) = layout.temporal_rotary_tables(t_dim, head_dim, query.device, self.state.theta)
        query_rot = apply_rotary_emb(query, v_cos, v_sin)
        key_rot = apply_rotary_emb(key, t_cos, t_sin)
        if layout.global_length == 0:
            return _attend(query_rot, key_rot, value, self._attention_backend)
        # Global tokens are scored with the unrotated query so they favour no shot, shot captions with the rotated
        # one, in one softmax: only the temporal band (first t_dim channels) differs between the two, so
        #   query [q_rot_t, q_hw, q_t]  .  caption key [k_rot_t, k_hw, 0]  = q_rot . k_rot
        #                                  global key  [0,       k_hw, k_t] = q . k
        # which costs head_dim + t_dim channels instead of the 2 * head_dim of [q_rot | q] . [k_rot | 0] / [0 | k].
        is_global = layout.global_text_mask(key.device)[None, :, None, None]
        extra = [query[..., :t_dim]]
        key_extra = [key[..., :t_dim].masked_fill(~is_global, 0.0)]
        pad = -(head_dim + t_dim) % 8  # fused attention kernels want head sizes in multiples of 8
        if pad:
            extra.append(query.new_zeros(*query.shape[:-1], pad))
            key_extra.append(key.new_zeros(*key.shape[:-1], pad))
        key_first = torch.cat([key_rot[..., :t_dim].masked_fill(is_global, 0.0), key_rot[..., t_dim:]], dim=-1)
        query_cat = torch.cat([query_rot, *extra], dim=-1)
        key_cat = torch.cat([key_first, *key_extra], dim=-1)
        backend = self._attention_backend
        value_in = value
        if backend is not None and str(getattr(backend, "value", backend)) != "native":
            # Fused kernels (flash, sage, cudnn) want one head size for query, key and value: zero value channels
            # add nothing to the output, which is cut back to the original head size.
            value_in = torch.cat([value, value.new_zeros(*value.shape[:-1], query_cat.shape[-1] - head_dim)], dim=-1)
        out = dispatch_attention_fn(
            query_cat, key_cat, value_in, attn_mask=None, scale=1.0 / math.sqrt(head_dim), backend=backend
        )
        return out[..., :head_dim]


class MultiShotRotaryPosEmbed(torch.nn.Module):
    """Stands in for `WanRotaryPosEmbed`: 3D RoPE tables of the layout's video tokens, shot offsets included."""

    def __init__(self, state: MultiShotAttentionState, stock_rope: torch.nn.Module):
        super().__init__()
        self.state = state
        self.t_dim, self.h_dim, self.w_dim = stock_rope.t_dim, stock_rope.h_dim, stock_rope.w_dim
        self.patch_size = stock_rope.patch_size
        state.rope_dims = (self.t_dim, self.h_dim, self.w_dim)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.patch_size
        layout = self.state.layout
        if (frames // p_t, height // p_h, width // p_w) != (
            layout.num_video_frames,
            layout.grid_height,
            layout.grid_width,
        ):
            raise ValueError(
                f"latent of {frames} frames at {height}x{width} does not match the shot layout "
                f"({layout.num_video_frames} frames of {layout.grid_height}x{layout.grid_width} tokens, patch "
                f"{self.patch_size})"
            )
        return layout.rotary_tables(self.t_dim, self.h_dim, self.w_dim, hidden_states.device, self.state.theta)


@contextlib.contextmanager
def multishot_attention(
    transformer,
    layout: ShotLayout,
    cross_attention: str = "window",
    self_attention: str = "full",
) -> Iterator[MultiShotAttentionState]:
    """Run `transformer` (a stock `WanTransformer3DModel`) as a multi-shot model inside the block.

    Yields the shared state; set `state.layout` to switch text layouts between calls (same video part).
    The stock rotary module and processors come back on exit, also after an exception.

    A training forward pass (K shots of n_k latent frames, one layout for the whole batch):

        layout = ShotLayout.build([n_1, ..., n_K], h // p_h, w // p_w, caption_lengths=[L_1, ..., L_K],
                                  global_length=L_g, gap=0)
        with multishot_attention(transformer, layout, "mmrope", "full") as state:
            pred = transformer(
                hidden_states=x_t,            # [B, C, n_1 + ... + n_K, h, w]: shots concatenated in time
                timestep=layout.token_timesteps(t_shot),  # t_shot [B, K] in [0, 1000] -> [B, S] per video token
                encoder_hidden_states=text,   # [B, L_g + L_1 + ... + L_K, text_dim]: [global; caption_1; ...]
            ).sample                          # [B, C, sum n_k, h, w]
            state.layout = layout.with_text([0] * K, L_neg)  # e.g. a caption-dropout batch: negative text only
    """
    state = MultiShotAttentionState(layout, cross_attention, self_attention)
    stock_rope = transformer.rope
    if isinstance(stock_rope, MultiShotRotaryPosEmbed):
        raise RuntimeError("multishot_attention is already active on this transformer; nesting is not supported")
    stock_processors = transformer.attn_processors
    self_proc, cross_proc = MultiShotSelfAttnProcessor(state), MultiShotCrossAttnProcessor(state)
    # Keep an attention backend chosen on the stock processors (e.g. flash), for the calls that go through diffusers.
    backend = next((getattr(p, "_attention_backend", None) for p in stock_processors.values()), None)
    self_proc._attention_backend = cross_proc._attention_backend = backend
    processors = {name: (cross_proc if ".attn2." in f".{name}" else self_proc) for name in stock_processors}
    # The stock rope is kept off the module tree while swapped out, so state dicts and offload hooks see no change.
    transformer.rope = MultiShotRotaryPosEmbed(state, stock_rope)
    transformer.set_attn_processor(dict(processors))
    try:
        yield state
    finally:
        transformer.rope = stock_rope
        transformer.set_attn_processor(dict(stock_processors))
