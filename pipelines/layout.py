"""The token layout of one multi-shot scene: where every video and text token sits, and who owns it.

Everything position- or mask-shaped in the multi-shot pipeline derives from a `ShotLayout` and nothing else:
the 3D rotary tables of self-attention, the temporal rotation of MM-RoPE cross-attention, the caption windows,
the sparse inter-shot key sets and the per-token timesteps of `context` regeneration.

Conventions (docs/ARCHITECTURE.md, "ShotLayout"):
- the scene's video tokens are the shots' patch tokens concatenated in time order, each shot row-major
  (frame, row, column), exactly as `WanTransformer3DModel` flattens a `[B, C, F, H, W]` latent;
- a video token of shot k at latent frame f, row y, column x sits at `(T_k + f, y, x)` with
  `T_k = sum_{j<k} (n_j + gap)`;
- the text tokens are `[global; caption_1; ...; caption_K]`; a caption's tokens carry one temporal coordinate,
  the centre of its shot's span (so a caption is as near to its shot's last frame as to its first); global
  tokens carry none (owner -1).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

GLOBAL_OWNER = -1  # owner id of global caption tokens (seen by every shot, tied to no time)


@dataclass(frozen=True)
class ShotLayout:
    """Token layout of a scene.

    Args:
        latent_frames: latent frames `n_k` of every shot of the scene (all K shots, even those not in `video_shots`).
        grid_height, grid_width: video tokens per latent frame along height and width (latent size / patch size).
        time_offsets: first temporal position `T_k` of every shot; `ShotLayout.build` fills it from `gap`.
        caption_lengths: text tokens of caption k (0 when the shot's caption is not in the text sequence,
            e.g. the unconditional pass of classifier-free guidance).
        global_length: text tokens of the global caption (0 when there is none).
        video_shots: shots whose tokens are in the video sequence, in order (default: all). Regenerating with
            `isolated` self-attention runs only the regenerated shots, at their scene positions.
    """

    latent_frames: tuple[int, ...]
    grid_height: int
    grid_width: int
    time_offsets: tuple[int, ...]
    caption_lengths: tuple[int, ...]
    global_length: int = 0
    video_shots: tuple[int, ...] | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)
    # Tables of the video part only, shared with `with_text` copies (both CFG passes use one set of rotary tables).
    _video_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        k = len(self.latent_frames)
        if k == 0:
            raise ValueError("a scene needs at least one shot")
        if any(n < 1 for n in self.latent_frames):
            raise ValueError(f"every shot needs at least one latent frame, got {self.latent_frames}")
        if len(self.time_offsets) != k or len(self.caption_lengths) != k:
            raise ValueError(
                f"time_offsets ({len(self.time_offsets)}) and caption_lengths ({len(self.caption_lengths)}) "
                f"need one entry per shot ({k})"
            )
        if self.grid_height < 1 or self.grid_width < 1:
            raise ValueError(f"the token grid must be at least 1x1, got {self.grid_height}x{self.grid_width}")
        if self.video_shots is None:
            object.__setattr__(self, "video_shots", tuple(range(k)))
        if not self.video_shots or any(not 0 <= s < k for s in self.video_shots):
            raise ValueError(f"video_shots must name shots 0..{k - 1}, got {self.video_shots}")
        if list(self.video_shots) != sorted(set(self.video_shots)):
            raise ValueError(f"video_shots must be increasing and unique, got {self.video_shots}")

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(
        cls,
        latent_frames: list[int] | tuple[int, ...],
        grid_height: int,
        grid_width: int,
        caption_lengths: list[int] | tuple[int, ...],
        global_length: int = 0,
        gap: int = 0,
    ) -> ShotLayout:
        """Lay shots end to end in RoPE time, `gap` empty latent frames between neighbours."""
        if gap < 0:
            raise ValueError(f"gap must be 0 or more latent frames, got {gap}")
        offsets, t = [], 0
        for n in latent_frames:
            offsets.append(t)
            t += n + gap
        return cls(
            latent_frames=tuple(int(n) for n in latent_frames),
            grid_height=int(grid_height),
            grid_width=int(grid_width),
            time_offsets=tuple(offsets),
            caption_lengths=tuple(int(n) for n in caption_lengths),
            global_length=int(global_length),
        )

    @classmethod
    def from_video(
        cls,
        num_frames: list[int] | tuple[int, ...],
        height: int,
        width: int,
        caption_lengths: list[int] | tuple[int, ...],
        global_length: int = 0,
        gap: int = 0,
        vae_scale_temporal: int = 4,
        vae_scale_spatial: int = 8,
        patch_size: tuple[int, int, int] = (1, 2, 2),
    ) -> ShotLayout:
        """Layout from pixel-space shot lengths (4n+1 frames) and resolution, for a Wan VAE and transformer."""
        p_t, p_h, p_w = patch_size
        latent = [(f - 1) // vae_scale_temporal + 1 for f in num_frames]
        if any(n % p_t for n in latent):
            raise ValueError(f"latent frames {latent} must be multiples of the temporal patch size {p_t}")
        return cls.build(
            [n // p_t for n in latent],
            height // vae_scale_spatial // p_h,
            width // vae_scale_spatial // p_w,
            caption_lengths,
            global_length,
            gap,
        )

    def with_text(self, caption_lengths: list[int] | tuple[int, ...], global_length: int = 0) -> ShotLayout:
        """The same video layout with another text sequence (e.g. the negative prompt as one global caption)."""
        other = replace(self, caption_lengths=tuple(caption_lengths), global_length=int(global_length))
        object.__setattr__(other, "_video_cache", self._video_cache)
        return other

    def subset(self, shots: list[int] | tuple[int, ...]) -> ShotLayout:
        """Keep only `shots` in the video sequence, at their scene positions; the text sequence is unchanged."""
        return replace(self, video_shots=tuple(sorted(shots)))

    # ------------------------------------------------------------------ sizes and spans

    @property
    def num_shots(self) -> int:
        return len(self.latent_frames)

    @property
    def tokens_per_frame(self) -> int:
        return self.grid_height * self.grid_width

    @property
    def num_video_frames(self) -> int:
        """Latent frames in the video sequence (the `F` of the transformer's `[B, C, F, H, W]` input)."""
        return sum(self.latent_frames[s] for s in self.video_shots)

    @property
    def num_video_tokens(self) -> int:
        return self.num_video_frames * self.tokens_per_frame

    @property
    def num_text_tokens(self) -> int:
        return self.global_length + sum(self.caption_lengths)

    @cached_property
    def frame_spans(self) -> dict[int, tuple[int, int]]:
        """Shot -> (first, end) latent frame in the video sequence, for the shots in it."""
        spans, f = {}, 0
        for s in self.video_shots:
            spans[s] = (f, f + self.latent_frames[s])
            f += self.latent_frames[s]
        return spans

    @cached_property
    def token_spans(self) -> dict[int, tuple[int, int]]:
        """Shot -> (start, end) video token indices, for the shots in the video sequence."""
        tpf = self.tokens_per_frame
        return {s: (a * tpf, b * tpf) for s, (a, b) in self.frame_spans.items()}

    @cached_property
    def global_span(self) -> tuple[int, int]:
        return (0, self.global_length)

    @cached_property
    def caption_spans(self) -> tuple[tuple[int, int], ...]:
        """Caption k -> (start, end) text token indices (empty span when caption k is absent)."""
        spans, t = [], self.global_length
        for n in self.caption_lengths:
            spans.append((t, t + n))
            t += n
        return tuple(spans)

    @property
    def has_captions(self) -> bool:
        return sum(self.caption_lengths) > 0

    def caption_time(self, shot: int) -> float:
        """Temporal RoPE coordinate of caption `shot`: the centre of its shot's span."""
        return self.time_offsets[shot] + (self.latent_frames[shot] - 1) / 2.0

    # ------------------------------------------------------------------ per-token tables

    @cached_property
    def video_shot(self) -> torch.Tensor:
        """[S] long: shot index of every video token."""
        return torch.cat(
            [
                torch.full((self.latent_frames[s] * self.tokens_per_frame,), s, dtype=torch.long)
                for s in self.video_shots
            ]
        )

    @cached_property
    def video_positions(self) -> torch.Tensor:
        """[S, 3] float64: (t, h, w) RoPE position of every video token."""
        parts = []
        for s in self.video_shots:
            t = torch.arange(self.latent_frames[s], dtype=torch.float64) + self.time_offsets[s]
            h = torch.arange(self.grid_height, dtype=torch.float64)
            w = torch.arange(self.grid_width, dtype=torch.float64)
            grid = torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1)
            parts.append(grid.reshape(-1, 3))
        return torch.cat(parts)

    @cached_property
    def text_owner(self) -> torch.Tensor:
        """[L] long: owner of every text token, -1 for the global caption, k for caption k."""
        owners = [torch.full((self.global_length,), GLOBAL_OWNER, dtype=torch.long)]
        owners += [torch.full((n,), k, dtype=torch.long) for k, n in enumerate(self.caption_lengths)]
        return torch.cat(owners)

    @cached_property
    def text_time(self) -> torch.Tensor:
        """[L] float64: temporal RoPE coordinate of every text token (0 for global tokens, which are never rotated)."""
        times = [torch.zeros(self.global_length, dtype=torch.float64)]
        times += [
            torch.full((n,), self.caption_time(k), dtype=torch.float64) for k, n in enumerate(self.caption_lengths)
        ]
        return torch.cat(times)

    def global_text_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[L] bool on `device` (cached): True for global caption tokens."""
        key = ("global_mask", str(device))
        if key not in self._cache:
            self._cache[key] = (self.text_owner == GLOBAL_OWNER).to(device)
        return self._cache[key]

    def token_timesteps(self, shot_timesteps: torch.Tensor | list[float]) -> torch.Tensor:
        """Per-shot timesteps `[K]` or `[B, K]` -> per-video-token timesteps `[B, S]` for the transformer.

        Wan's transformer takes `timestep` of shape `[B, S]` (one value per video token); this is how `context`
        regeneration (0 for context shots) and per-shot-timestep training feed it.
        """
        t = torch.as_tensor(shot_timesteps)
        if t.ndim == 1:
            t = t.unsqueeze(0)
        if t.shape[-1] != self.num_shots:
            raise ValueError(f"need one timestep per shot ({self.num_shots}), got shape {tuple(t.shape)}")
        # The index is cached per device: a fresh host-to-device copy would make every training step wait for the GPU.
        key = ("video_shot", str(t.device))
        if key not in self._video_cache:
            self._video_cache[key] = self.video_shot.to(t.device)
        return t[:, self._video_cache[key]]

    # ------------------------------------------------------------------ attention structure

    def self_attention_keys(
        self, mode: str, device: torch.device | str = "cpu"
    ) -> dict[int, tuple[int, int] | torch.Tensor]:
        """Shot -> the video tokens its queries attend to under self-attention `mode` ("sparse" | "isolated").

        A (start, end) span when the keys are contiguous, else a long index tensor on `device` (cached, so the
        attention layers never copy indices to the device). `full` has no per-shot keys.
        """
        key = ("self_keys", mode, str(device))
        if key in self._video_cache:
            return self._video_cache[key]
        if mode == "isolated":
            keys = dict(self.token_spans)
        elif mode == "sparse":
            # HoloCine's inter-shot pattern: a shot sees itself whole and the first latent frame of every other shot.
            tpf = self.tokens_per_frame
            keys = {}
            for s, (a, b) in self.token_spans.items():
                others = [torch.arange(oa, oa + tpf) for o, (oa, _) in self.token_spans.items() if o != s]
                keys[s] = (a, b) if not others else torch.cat([torch.arange(a, b)] + others).to(device)
        else:
            raise ValueError(f"self_attention_keys is for 'sparse' or 'isolated', got {mode!r}")
        self._video_cache[key] = keys
        return keys

    def window_text_keys(self, shot: int, device: torch.device | str = "cpu") -> tuple[int, int] | torch.Tensor:
        """Text tokens shot `shot` sees under `window` cross-attention: the global caption and its own caption."""
        a, b = self.caption_spans[shot]
        if self.global_length == 0:
            return (a, b)
        if a == b:
            return self.global_span
        key = ("window_keys", shot, str(device))
        if key not in self._cache:
            self._cache[key] = torch.cat([torch.arange(0, self.global_length), torch.arange(a, b)]).to(device)
        return self._cache[key]

    def self_attention_mask(self, mode: str) -> torch.Tensor:
        """[S, S] bool, True where a query may attend a key. Reference only: the processors never build it."""
        n = self.num_video_tokens
        if mode == "full":
            return torch.ones(n, n, dtype=torch.bool)
        mask = torch.zeros(n, n, dtype=torch.bool)
        for s, keys in self.self_attention_keys(mode).items():
            a, b = self.token_spans[s]
            if isinstance(keys, tuple):
                mask[a:b, keys[0] : keys[1]] = True
            else:
                mask[a:b, keys] = True
        return mask

    def cross_attention_mask(self, mode: str) -> torch.Tensor:
        """[S, L] bool, True where a video token may attend a text token (`window` hides other shots' captions)."""
        if mode in ("full", "mmrope"):
            return torch.ones(self.num_video_tokens, self.num_text_tokens, dtype=torch.bool)
        if mode != "window":
            raise ValueError(f"unknown cross-attention mode {mode!r}")
        owner = self.text_owner
        return (owner.unsqueeze(0) == GLOBAL_OWNER) | (owner.unsqueeze(0) == self.video_shot.unsqueeze(1))

    # ------------------------------------------------------------------ rotary tables

    def rotary_tables(
        self, t_dim: int, h_dim: int, w_dim: int, device: torch.device | str = "cpu", theta: float = 10000.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """3D RoPE `(cos, sin)` of every video token, `[1, S, 1, t_dim + h_dim + w_dim]` float32.

        Same values and layout as `WanRotaryPosEmbed` gives for one continuous video when `gap=0` and one shot.
        """
        key = ("rotary", t_dim, h_dim, w_dim, str(device), theta)
        if key not in self._video_cache:
            pos = self.video_positions
            cos_parts, sin_parts = [], []
            for axis, dim in enumerate((t_dim, h_dim, w_dim)):
                cos, sin = _rope_1d(dim, pos[:, axis], theta)
                cos_parts.append(cos)
                sin_parts.append(sin)
            cos = torch.cat(cos_parts, dim=-1)[None, :, None, :].to(device)
            sin = torch.cat(sin_parts, dim=-1)[None, :, None, :].to(device)
            self._video_cache[key] = (cos, sin)
        return self._video_cache[key]

    def temporal_rotary_tables(
        self, t_dim: int, head_dim: int, device: torch.device | str = "cpu", theta: float = 10000.0
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """MM-RoPE tables rotating the temporal band only: `((video_cos, video_sin), (text_cos, text_sin))`.

        Shapes `[1, S, 1, head_dim]` and `[1, L, 1, head_dim]`; the height and width bands are the identity
        (cos 1, sin 0), so a video-caption score depends on their distance in time only.
        """
        key = ("temporal", t_dim, head_dim, str(device), theta)
        if key not in self._cache:
            tables = []
            for times in (self.video_positions[:, 0], self.text_time):
                cos_t, sin_t = _rope_1d(t_dim, times, theta)
                rest = head_dim - t_dim
                cos = torch.cat([cos_t, torch.ones(len(times), rest)], dim=-1)[None, :, None, :].to(device)
                sin = torch.cat([sin_t, torch.zeros(len(times), rest)], dim=-1)[None, :, None, :].to(device)
                tables.append((cos, sin))
            self._cache[key] = tuple(tables)
        return self._cache[key]

    # ------------------------------------------------------------------ latents

    def split_latents(self, latents: torch.Tensor) -> list[torch.Tensor]:
        """`[B, C, F, H, W]` video-sequence latent -> one `[B, C, n_k, H, W]` latent per shot in `video_shots`."""
        if latents.shape[2] != self.num_video_frames:
            raise ValueError(f"latent has {latents.shape[2]} frames, the layout {self.num_video_frames}")
        return [latents[:, :, a:b] for a, b in self.frame_spans.values()]


def _rope_1d(dim: int, positions: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin `[N, dim]` float32, interleaved per pair, computed in float64 like `get_1d_rotary_pos_embed`."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.outer(positions.to(torch.float64), freqs)
    return angles.cos().repeat_interleave(2, dim=1).float(), angles.sin().repeat_interleave(2, dim=1).float()
