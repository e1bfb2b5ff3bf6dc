"""HoloCine (github yihao-meng/HoloCine): multi-shot fine-tunes of Wan2.2 T2V-A14B's two experts, run with the
inference conventions of their code (`diffsynth/prompters/wan_prompter.py`, `diffsynth/models/wan_video_dit.py`,
`diffsynth/pipelines/wan_video_holocine.py`, `HoloCine_inference_*.py`), on diffusers' stock Wan transformer.

- Text: one T5 pass over the structured prompt
  `[global caption] G This scene contains N shots. [per shot caption] s1 [shot cut] s2 ... [shot cut] sN`,
  padded to 512. Token spans come from the character offsets: the global span runs from `[global caption]` to
  just before `[per shot caption]`; shot 0 from `[per shot caption]` to the end of the first `[shot cut]` (each
  `[shot cut]` belongs to the shot before it), shot k from there to the end of the next one, the last shot to the
  end of the text. A token with an empty offset (the appended `</s>`, padding) belongs to no span; a span is
  `[first token, last token + 1)`.
- Video: the scene is ONE latent video with continuous RoPE time (gap 0); shot k covers latent frames
  `[T_k, T_k + n_k)`, i.e. HoloCine's pixel cut frames `4 T_k - 3` mapped back by their `(f - 1) // 4 + 1`. The
  scene is decoded at once (only the scene's first frame is a causal-VAE image frame) and cut at those frames.
- Cross-attention (conditional pass only; the negative prompt is attended unmasked): a video token of shot k sees
  the global span and its own span, both with their end index INCLUDED (their mask writes `g0:g1+1`,
  `s0:s1+1`), and every position after the last span's end + 1 (the padding).
- Self-attention: `full` is dense; `sparse` (their `attention_per_batch_with_shots`, `per_g = h * w`) gives shot k
  its own tokens plus a pool of the first latent frame of every shot, its own included again (so those keys count
  twice in its softmax).
- Sampling: Euler flow matching with sigmas `linspace(1, 0, steps + 1)[:-1]` shifted by 5, the high-noise expert
  for timesteps >= 875, guidance 5.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.wan.pipeline_wan import prompt_clean

from .attention import _attend, _check_video_length, _out, _project, _take, multishot_attention
from .layout import ShotLayout
from .pipeline_multishot import MultiShotPipeline
from .registry import HOLOCINE_NEGATIVE_PROMPT as NEGATIVE_PROMPT  # noqa: F401 (re-exported)

GLOBAL_MARK, SHOTS_MARK, CUT_MARK = "[global caption]", "[per shot caption]", "[shot cut]"
TEXT_LENGTH = 512  # HoloCine's WanPrompter(text_len=512)
MAX_SCENE_FRAMES = 241  # the longest scene of their inference scripts (61 latent frames)


# ---------------------------------------------------------------------------------------------------------------
# Conventions (pure functions; the tests check them against values written by hand from HoloCine's code)


def structured_prompt(global_caption: str | None, shot_captions: Sequence[str]) -> str:
    """HoloCine's prompt for a scene (their `prepare_multishot_inputs`): the shot count sentence is appended to
    the global caption unless it already says it."""
    scene = (global_caption or "").strip()
    if "This scene contains" not in scene:
        scene = f"{scene} This scene contains {len(shot_captions)} shots.".strip()
    return f"{GLOBAL_MARK} {scene} {SHOTS_MARK} {f' {CUT_MARK} '.join(shot_captions)}"


@dataclass(frozen=True)
class TextSpans:
    """Token spans of a structured prompt, `[start, end)` as HoloCine's prompter returns them."""

    global_span: tuple[int, int] | None
    shot_spans: tuple[tuple[int, int], ...]


def char_spans(text: str) -> list[tuple[int, int, int]]:
    """`(owner, start, end)` character spans: owner -1 for the global caption, k for shot k."""
    spans = []
    global_match, shots_match = re.search(re.escape(GLOBAL_MARK), text), re.search(re.escape(SHOTS_MARK), text)
    if global_match:
        spans.append((-1, global_match.start(), shots_match.start() if shots_match else len(text)))
    if shots_match:
        start, shot = shots_match.start(), 0
        for cut in re.finditer(re.escape(CUT_MARK), text):
            spans.append((shot, start, cut.end()))
            start, shot = cut.end(), shot + 1
        if start < len(text):
            spans.append((shot, start, len(text)))
    return spans


def text_spans(text: str, offsets: Sequence[tuple[int, int]]) -> TextSpans:
    """Token spans from the tokenizer's character offsets, by HoloCine's rule: a token belongs to the first span
    it overlaps; tokens with an empty offset belong to none; a span is [first, last + 1)."""
    spans = char_spans(text)
    owners = []
    for token_start, token_end in offsets:
        owner = -2
        if token_start != token_end:
            for span_owner, start, end in spans:
                if not (token_end <= start or token_start >= end):
                    owner = span_owner
                    break
        owners.append(owner)
    owners = np.asarray(owners)
    global_positions = np.nonzero(owners == -1)[0]
    global_span = (int(global_positions.min()), int(global_positions.max()) + 1) if len(global_positions) else None
    shot_spans = []
    for shot in range(int(owners.max()) + 1 if len(owners) else 0):
        positions = np.nonzero(owners == shot)[0]
        if len(positions):
            shot_spans.append((int(positions.min()), int(positions.max()) + 1))
    return TextSpans(global_span, tuple(shot_spans))


def latent_shot_indices(shot_cut_frames: Sequence[int], num_frames: int) -> list[int]:
    """Shot index of every latent frame from pixel cut frames (their `WanVideoUnit_ShotEmbedder`)."""
    num_latent = (num_frames - 1) // 4 + 1
    cuts = [0]
    for frame in sorted(shot_cut_frames):
        if frame > 0:
            latent = (frame - 1) // 4 + 1
            if latent < num_latent:
                cuts.append(latent)
    cuts = sorted(set(cuts)) + [num_latent]
    indices = [0] * num_latent
    for shot, (start, end) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        indices[start:end] = [shot] * (end - start)
    return indices


def scene_frames(latent_frames: Sequence[int]) -> tuple[int, list[int]]:
    """(num_frames, shot_cut_frames) in HoloCine's terms for shots of `latent_frames` latent frames laid end to
    end: the scene video has `4 (N - 1) + 1` frames and shot k starts at pixel frame `4 T_k - 3`."""
    starts = np.cumsum([0, *latent_frames[:-1]]).tolist()
    return 4 * (sum(latent_frames) - 1) + 1, [4 * t - 3 for t in starts[1:]]


def cross_attention_keys(spans: TextSpans, text_length: int) -> list[list[int]]:
    """Text positions each shot's video tokens see under HoloCine's mask (inclusive span ends, the padding)."""
    if spans.global_span is None:
        return [list(range(text_length)) for _ in spans.shot_spans]
    g0, g1 = spans.global_span
    max_end = max([g1] + [end for _, end in spans.shot_spans])
    allowed_global = set(range(g0, min(g1 + 1, text_length)))
    padding = set(range(max_end + 1, text_length))
    return [sorted(allowed_global | set(range(s0, min(s1 + 1, text_length))) | padding) for s0, s1 in spans.shot_spans]


def sparse_self_attention_keys(token_spans: Sequence[tuple[int, int]], tokens_per_frame: int) -> list[list[int]]:
    """Video tokens each shot attends to in HoloCine's sparse self-attention: its own, then the pool of every
    shot's first `tokens_per_frame` tokens (their `firstk` representatives), its own first frame included again."""
    pool = [i for a, b in token_spans for i in range(a, min(a + tokens_per_frame, b))]
    return [list(range(a, b)) + pool for a, b in token_spans]


# ---------------------------------------------------------------------------------------------------------------
# Attention processors


class HoloCineAttentionState:
    """What HoloCine's processors read: the per-shot text keys of the conditional pass and the video key sets."""

    def __init__(self, multishot_state, text_keys: list[torch.Tensor], sparse: bool):
        self.multishot = multishot_state  # layout (conditional or unconditional pass), set by the pipeline
        self.text_keys = text_keys
        self.sparse = sparse
        self._video_keys: dict = {}
        self._text_keys: dict = {}

    def text_keys_on(self, device) -> list[torch.Tensor]:
        """The per-shot text keys on `device`, copied there once (not once per layer and shot)."""
        key = str(device)
        if key not in self._text_keys:
            self._text_keys[key] = [k.to(device) for k in self.text_keys]
        return self._text_keys[key]

    def video_keys(self, device) -> list[torch.Tensor]:
        layout = self.multishot.layout
        key = (id(layout), str(device))
        if key not in self._video_keys:
            spans = [layout.token_spans[s] for s in layout.video_shots]
            keys = sparse_self_attention_keys(spans, layout.tokens_per_frame)
            self._video_keys = {key: [torch.tensor(k, dtype=torch.long, device=device) for k in keys]}
        return self._video_keys[key]


class HoloCineSelfAttnProcessor:
    """Dense self-attention (`full`), or HoloCine's per-shot sparse pattern."""

    _attention_backend = None

    def __init__(self, state: HoloCineAttentionState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from .attention import apply_rotary_emb

        _check_video_length(self.state.multishot, hidden_states)
        query, key, value = _project(attn, hidden_states, hidden_states)
        if rotary_emb is not None:
            query = apply_rotary_emb(query, *rotary_emb)
            key = apply_rotary_emb(key, *rotary_emb)
        layout = self.state.multishot.layout
        if not self.state.sparse:
            return _out(attn, _attend(query, key, value, self._attention_backend), query)
        outs = []
        for shot, keys in zip(layout.video_shots, self.state.video_keys(query.device), strict=True):
            a, b = layout.token_spans[shot]
            outs.append(_attend(query[:, a:b], _take(key, keys), _take(value, keys), self._attention_backend))
        return _out(attn, torch.cat(outs, dim=1), query)


class HoloCineCrossAttnProcessor:
    """Per-shot window cross-attention with HoloCine's key sets; the negative prompt pass is unmasked."""

    _attention_backend = None

    def __init__(self, state: HoloCineAttentionState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        _check_video_length(self.state.multishot, hidden_states)
        layout = self.state.multishot.layout
        query, key, value = _project(attn, hidden_states, encoder_hidden_states)
        if not layout.has_captions:  # the unconditional pass: HoloCine drops the mask for the negative prompt
            return _out(attn, _attend(query, key, value, self._attention_backend), query)
        outs = []
        text_keys = self.state.text_keys_on(query.device)
        for shot in layout.video_shots:
            a, b = layout.token_spans[shot]
            keys = text_keys[shot]
            outs.append(_attend(query[:, a:b], _take(key, keys), _take(value, keys), self._attention_backend))
        return _out(attn, torch.cat(outs, dim=1), query)


@contextlib.contextmanager
def holocine_attention(
    transformer, layout: ShotLayout, text_keys: list[torch.Tensor], sparse: bool
) -> Iterator[HoloCineAttentionState]:
    """`multishot_attention` (continuous RoPE over the scene's layout) with HoloCine's processors on top; the
    stock modules come back on exit."""
    with multishot_attention(transformer, layout, "full", "full") as state:
        holo = HoloCineAttentionState(state, text_keys, sparse)
        backend = next((getattr(p, "_attention_backend", None) for p in transformer.attn_processors.values()), None)
        self_proc, cross_proc = HoloCineSelfAttnProcessor(holo), HoloCineCrossAttnProcessor(holo)
        self_proc._attention_backend = cross_proc._attention_backend = backend
        names = transformer.attn_processors
        transformer.set_attn_processor({n: cross_proc if ".attn2." in f".{n}" else self_proc for n in names})
        yield state


# ---------------------------------------------------------------------------------------------------------------
# Scheduler and pipeline


class HoloCineFlowScheduler(FlowMatchEulerDiscreteScheduler):
    """Euler flow matching with HoloCine's sigmas: `linspace(1, 0, steps + 1)[:-1]`, shifted (their
    `FlowMatchScheduler(shift=5, sigma_min=0.0, extra_one_step=True)`), ending at sigma 0."""

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        if sigmas is None and timesteps is None and num_inference_steps is not None:
            sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1].tolist()
            num_inference_steps = None
        return super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)


class HoloCinePipeline(MultiShotPipeline):
    r"""`MultiShotPipeline` with HoloCine's conventions (module docstring): one structured prompt, one continuous
    scene latent decoded at once, HoloCine's cross-attention mask and sparse self-attention.

    `cross_attention` must be "window" (their mask); `self_attention` "full" (holocine-full) or "sparse"
    (holocine-sparse). Regeneration is `inpaint` (two experts).
    """

    def check_inputs(self, shots, global_caption, negative_prompt, height, width, num_inference_steps, *rest) -> None:
        super().check_inputs(shots, global_caption, negative_prompt, height, width, num_inference_steps, *rest)
        cross_attention, self_attention = rest[0], rest[1]
        if cross_attention != "window":
            raise ValueError(
                f"HoloCine was trained with its window cross-attention; use 'window', not {cross_attention!r}"
            )
        if self_attention not in ("full", "sparse"):
            raise ValueError(f"HoloCine runs 'full' or 'sparse' self-attention, not {self_attention!r}")
        latent = [(s.num_frames - 1) // self.vae_scale_factor_temporal + 1 for s in shots]
        frames, _ = scene_frames(latent)
        if frames > MAX_SCENE_FRAMES:
            raise ValueError(
                f"the scene is {frames} frames as one HoloCine video (shots of {[s.num_frames for s in shots]} "
                f"frames), over the {MAX_SCENE_FRAMES} HoloCine generates at once; shorten shots or split the scene"
            )

    def scene_prompt(self, shots, global_caption) -> str:
        return prompt_clean(structured_prompt(global_caption, [prompt_clean(s.caption) for s in shots]))

    def _scene_text(self, shots, global_caption, max_sequence_length, device):
        length = max_sequence_length or TEXT_LENGTH
        text = self.scene_prompt(shots, global_caption)
        encoded = self.tokenizer(
            [text], padding="max_length", max_length=length, truncation=True, return_offsets_mapping=True
        )
        spans = text_spans(text, [tuple(o) for o in encoded["offset_mapping"][0]])
        if spans.global_span is None or len(spans.shot_spans) != len(shots):
            raise ValueError(
                f"the scene's prompt does not fit HoloCine's {length} text tokens: {len(spans.shot_spans)} of "
                f"{len(shots)} shot captions survive truncation; shorten the captions or the scene caption"
            )
        embeds = self.encode_caption(text, length, device)
        self._holocine_text_keys = [torch.tensor(k, dtype=torch.long) for k in cross_attention_keys(spans, length)]
        self._holocine_spans = spans
        # The layout's text part: the global span, then each shot's span (the last one up to the end of the padded
        # text), so the sequence length checks and per-shot LoRA scopes see the same owners HoloCine's mask does.
        starts = [s0 for s0, _ in spans.shot_spans] + [length]
        caption_lengths = [starts[k + 1] - starts[k] for k in range(len(shots))]
        return embeds, starts[0], caption_lengths

    def _attention_context(self, expert, layout, cross_attention, self_attention):
        keys = getattr(self, "_holocine_text_keys", None)
        return holocine_attention(expert, layout, keys, sparse=self_attention == "sparse")

    def _decode_shots(self, shot_latents, shots, output_type):
        """Decode the scene as one video and cut it where the shots start (4 T_k - 3)."""
        latent = torch.cat(shot_latents, dim=2)
        frames = self.decode_latents(latent, output_type)
        out, start = [], 0
        for k, (lat, shot) in enumerate(zip(shot_latents, shots, strict=True)):
            n = lat.shape[2]
            first = 0 if k == 0 else 4 * start - 3
            out.append(frames[first : first + shot.num_frames])
            start += n
        return out

    def __call__(self, shots, global_caption=None, *args, **kwargs):
        out = super().__call__(shots, global_caption, *args, **kwargs)
        out.parameters["prompt"] = self.scene_prompt(list(shots), global_caption)  # the text HoloCine saw
        out.parameters["conventions"] = "holocine"
        return out
