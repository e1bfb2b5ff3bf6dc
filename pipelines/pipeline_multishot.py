"""Multi-shot text-to-video generation with MM-RoPE on the stock Wan components (docs/ARCHITECTURE.md, "Generation
pipeline").

One scene is one denoising run: the shots' latents are concatenated in time, every caption is encoded on its own,
and `multishot_attention` makes the stock `WanTransformer3DModel` see shot boundaries (RoPE offsets, caption
windows or MM-RoPE, sparse/isolated self-attention). Single shots are regenerated against the clean latents of
their neighbours' current takes, which come back untouched, bit for bit.
"""

from __future__ import annotations

import contextlib
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from diffusers.utils import BaseOutput, replace_example_docstring
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor
from diffusers.video_processor import VideoProcessor

from .adapter_scope import lora_layers, scoped_loras
from .attention import multishot_attention
from .layout import ShotLayout
from .registry import CROSS_ATTENTION_MODES, REGENERATE_MODES, SELF_ATTENTION_MODES, is_valid_frame_count

OUTPUT_TYPES = ("np", "pil", "latent")
CONTEXT_WITH_TWO_EXPERTS = (
    "regenerate_mode='context' is refused for two-expert Wan2.2 models: it feeds the kept shots at timestep 0 and the "
    "regenerated one at t in one pass, but each step runs a single expert chosen by t (high-noise or low-noise), and "
    "neither was trained on clean context tokens; use regenerate_mode='inpaint'"
)
# Captions kept encoded (only their real tokens: ~100 x 4096 bf16 = 0.8 MB each for UMT5-XXL, padding is added on
# use); a storyboard rarely has more distinct captions in flight.
TEXT_CACHE_SIZE = 128

EXAMPLE_DOC_STRING = """
    Examples:
        ```python
        >>> import torch
        >>> from diffusers.utils import export_to_video
        >>> from pipelines import MultiShotPipeline, ShotSpec
        >>> from pipelines.tiny import build_tiny_components

        >>> # Tiny random-weight Wan components built in code; for real weights use pipelines.load_pipeline("demo").
        >>> pipe = MultiShotPipeline(**build_tiny_components(), cross_attention="window", self_attention="sparse")
        >>> out = pipe(
        ...     shots=[
        ...         ShotSpec(caption="wide shot, the lighthouse at night", num_frames=9),
        ...         ShotSpec(caption="close-up, mara lights the lamp", num_frames=5),
        ...     ],
        ...     global_caption="a stormy coast",
        ...     height=32,
        ...     width=32,
        ...     num_inference_steps=2,
        ...     max_sequence_length=16,
        ...     generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)],
        ... )
        >>> [frames.shape for frames in out.shots]
        [(9, 32, 32, 3), (5, 32, 32, 3)]
        >>> [tuple(latent.shape) for latent in out.latents]
        [(1, 16, 3, 4, 4), (1, 16, 2, 4, 4)]
        >>> path = export_to_video(out.shots[0], "shot_1.mp4", fps=16)
        ```
"""


def _as_index(value) -> int | None:
    """An int-like shot index (int, numpy integer, 0-d tensor), else None."""
    try:
        return operator.index(value)
    except TypeError:
        return None


@dataclass
class ShotSpec:
    """One shot of a scene: its caption (trigger tokens already substituted) and length in frames (4n+1)."""

    caption: str
    num_frames: int = 17


@dataclass
class MultiShotOutput(BaseOutput):
    """What one scene generation returns (a diffusers `BaseOutput`: `out.shots`, `out["shots"]` or `out[0]`).

    shots: one `[F, H, W, 3]` float array in [0, 1] per shot ("np"), a list of PIL images ("pil"), or the
        `[1, C, n, h, w]` latent ("latent"). Empty when the run was interrupted.
    latents: one clean `[1, C, n, h, w]` float32 CPU latent per shot, to keep with the take for regeneration
        (after an interrupt: the partially denoised latents).
    layout: the scene's `ShotLayout` (conditional text).
    parameters: the resolved settings as run (modes, gap, captions as sent, ...), for the take's record.
    interrupted: True when `pipe._interrupt` stopped the loop early.

    With `return_dict=False` the pipeline returns the same fields as a tuple, in this order.
    """

    shots: list
    latents: list[torch.Tensor]
    layout: ShotLayout
    parameters: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


class MultiShotPipeline(DiffusionPipeline, WanLoraLoaderMixin):
    r"""Multi-shot Wan text-to-video: a scene of shots, each with its caption, generated jointly.

    Args:
        tokenizer, text_encoder, vae, transformer, scheduler: the standard Wan components, so
            `MultiShotPipeline(**wan_pipe.components)` works.
        transformer_2, boundary_ratio: Wan2.2 A14B's low-noise expert and the fraction of the training timesteps
            at which it takes over, as in diffusers' `WanPipeline`: `transformer` (the high-noise expert) runs the
            steps with `t >= boundary_ratio * num_train_timesteps`, `transformer_2` the others.
        gap: empty latent frames of RoPE time between shots (0 reproduces stock continuous RoPE).
        cross_attention, self_attention, regenerate_mode: defaults used when a call passes `None`
            (`load_pipeline` fills them from the model preset).
    """

    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer_2"]
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    _lora_loadable_modules = ["transformer", "transformer_2"]

    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae,
        transformer,
        scheduler,
        transformer_2=None,
        boundary_ratio: float | None = None,
        gap: int = 0,
        cross_attention: str = "window",
        self_attention: str = "full",
        regenerate_mode: str = "inpaint",
    ):
        super().__init__()
        if (transformer_2 is None) != (boundary_ratio is None):
            raise ValueError(
                "a two-expert Wan2.2 model needs both transformer_2 (the low-noise expert) and boundary_ratio "
                f"(got transformer_2={'set' if transformer_2 is not None else None}, boundary_ratio={boundary_ratio})"
            )
        if boundary_ratio is not None and not 0.0 < boundary_ratio < 1.0:
            raise ValueError(f"boundary_ratio must be between 0 and 1, got {boundary_ratio}")
        if transformer_2 is not None and regenerate_mode == "context":
            raise ValueError(CONTEXT_WITH_TWO_EXPERTS)
        if gap < 0:
            raise ValueError(f"gap must be 0 or more latent frames, got {gap}")
        for name, value, allowed in (
            ("cross_attention", cross_attention, CROSS_ATTENTION_MODES),
            ("self_attention", self_attention, SELF_ATTENTION_MODES),
            ("regenerate_mode", regenerate_mode, REGENERATE_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            transformer=transformer,
            scheduler=scheduler,
            transformer_2=transformer_2,
        )
        self.register_to_config(
            gap=gap,
            cross_attention=cross_attention,
            self_attention=self_attention,
            regenerate_mode=regenerate_mode,
            boundary_ratio=boundary_ratio,
        )
        self.vae_scale_factor_temporal = self.vae.config.scale_factor_temporal if getattr(self, "vae", None) else 4
        self.vae_scale_factor_spatial = self.vae.config.scale_factor_spatial if getattr(self, "vae", None) else 8
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor_spatial)
        self._text_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._guidance_scale = 1.0
        self._guidance_scale_2 = None
        self._interrupt = False
        self._num_timesteps = 0
        self._current_timestep = None
        self._current_layout: ShotLayout | None = None

    # ------------------------------------------------------------------ properties (diffusers conventions)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_scale_2(self) -> float | None:
        return self._guidance_scale_2

    @property
    def do_classifier_free_guidance(self) -> bool:
        # Both experts' passes share one decision, as WanPipeline's: the unconditional pass runs when the
        # high-noise guidance asks for it (a low-noise scale of 1.0 then leaves the prediction conditional).
        return self._guidance_scale > 1.0

    @property
    def experts(self) -> list:
        """The transformers that denoise: `[transformer]`, or `[transformer, transformer_2]` for Wan2.2 A14B."""
        return [self.transformer] + ([self.transformer_2] if getattr(self, "transformer_2", None) is not None else [])

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def current_timestep(self):
        return self._current_timestep

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def current_layout(self) -> ShotLayout | None:
        """Layout of the run in progress (the callback uses it to split `latents` per shot)."""
        return self._current_layout

    @property
    def resolution_multiple(self) -> int:
        return self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    # ------------------------------------------------------------------ text

    def _text_model_key(self) -> tuple:
        # A new adapter embedding resizes the token table (new weight object, more tokens), changing this key.
        encoder = self.text_encoder
        weight = encoder.get_input_embeddings().weight
        name = getattr(encoder.config, "_name_or_path", "") or type(encoder).__name__
        return (name, id(encoder), id(weight), tuple(weight.shape), len(self.tokenizer), str(weight.dtype))

    def clear_text_cache(self) -> None:
        """Forget encoded captions (call after changing text-encoder weights in place)."""
        self._text_cache.clear()

    @torch.no_grad()
    def encode_caption(self, text: str, max_sequence_length: int | None, device: torch.device | None = None):
        """`[n, D]` embedding of one caption, cached by (model, text, length).

        With `max_sequence_length` it is tokenized, encoded and zero-padded exactly as `WanPipeline` does
        (`n = max_sequence_length`); with `None` it is encoded unpadded and trimmed to its real length.
        """
        key = (self._text_model_key(), text, max_sequence_length)
        cached = self._text_cache.get(key)
        if cached is None:
            cleaned = prompt_clean(text)
            unpadded = max_sequence_length is None
            inputs = self.tokenizer(
                [cleaned],
                padding=False if unpadded else "max_length",
                max_length=self.tokenizer.model_max_length if unpadded else max_sequence_length,
                truncation=True,
                add_special_tokens=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            ids, mask = inputs.input_ids, inputs.attention_mask
            seq_len = int(mask.gt(0).sum())
            model_device = get_module_execution_device(self.text_encoder)
            hidden = self.text_encoder(ids.to(model_device), mask.to(model_device)).last_hidden_state[0, :seq_len]
            cached = hidden.detach().clone()  # a copy, so the padded encoder output is not kept alive
            self._text_cache[key] = cached
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        else:
            self._text_cache.move_to_end(key)
        if max_sequence_length is not None and cached.shape[0] < max_sequence_length:
            # Zero rows after the real tokens, as WanPipeline pads (the model attends to them: real Wan weights
            # were trained on this zero-padded context).
            cached = torch.cat([cached, cached.new_zeros(max_sequence_length - cached.shape[0], cached.shape[1])])
        return cached if device is None else cached.to(device)

    # ------------------------------------------------------------------ checks

    def _check_adapter_shots(self, adapter_shots: dict[str, Sequence[int]] | None, num_shots: int) -> None:
        for name, indices in (adapter_shots or {}).items():
            if not any(lora_layers(expert, name) for expert in self.experts):
                raise ValueError(
                    f"adapter_shots names {name!r}, which is not a LoRA loaded on the transformer (or it was fused); "
                    "load it with load_lora_weights(..., adapter_name=...) first"
                )
            bad = [k for k in indices if not isinstance(k, int) or not 0 <= k < num_shots]
            if bad:
                raise ValueError(f"adapter_shots[{name!r}] has {bad}; shot indices run from 0 to {num_shots - 1}")

    def check_inputs(
        self,
        shots,
        global_caption,
        negative_prompt,
        height,
        width,
        num_inference_steps,
        cross_attention,
        self_attention,
        generator,
        max_sequence_length,
        regenerate,
        context_latents,
        regenerate_mode,
        output_type,
    ) -> None:
        """Raise a ValueError that says what to change for any input the pipeline cannot run."""
        if not shots:
            raise ValueError("a scene needs at least one shot; pass shots=[ShotSpec(caption=..., num_frames=17), ...]")
        for i, shot in enumerate(shots):
            if not isinstance(shot, ShotSpec):
                raise ValueError(f"shot {i} is a {type(shot).__name__}; pass ShotSpec(caption=..., num_frames=...)")
            if not isinstance(shot.caption, str) or not shot.caption.strip():
                raise ValueError(f"shot {i} has an empty caption; describe what the shot shows")
            if not isinstance(shot.num_frames, int) or not is_valid_frame_count(shot.num_frames):
                n = shot.num_frames
                hint = (
                    f" (e.g. {(n - 1) // 4 * 4 + 1} or {(n - 1) // 4 * 4 + 5})" if isinstance(n, int) and n > 1 else ""
                )
                raise ValueError(f"shot {i} has {n!r} frames; Wan shots need 4n+1 frames{hint}")
        if global_caption is not None and (not isinstance(global_caption, str) or not global_caption.strip()):
            raise ValueError("global_caption is empty; pass None for no scene caption")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}")
        multiple = self.resolution_multiple
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(
                f"height and width must be positive multiples of {multiple} for this model, got {height}x{width} "
                f"(try {max(multiple, height // multiple * multiple)}x{max(multiple, width // multiple * multiple)})"
            )
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if cross_attention not in CROSS_ATTENTION_MODES:
            raise ValueError(f"cross_attention must be one of {CROSS_ATTENTION_MODES}, got {cross_attention!r}")
        if self_attention not in SELF_ATTENTION_MODES:
            raise ValueError(f"self_attention must be one of {SELF_ATTENTION_MODES}, got {self_attention!r}")
        if isinstance(generator, list) and len(generator) != len(shots):
            raise ValueError(f"got {len(generator)} generators for {len(shots)} shots; pass one, or one per shot")
        if max_sequence_length is not None and (not isinstance(max_sequence_length, int) or max_sequence_length < 1):
            raise ValueError(f"max_sequence_length must be a positive integer or None, got {max_sequence_length!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if regenerate_mode not in REGENERATE_MODES:
            raise ValueError(f"regenerate_mode must be one of {REGENERATE_MODES}, got {regenerate_mode!r}")
        if regenerate is not None and regenerate_mode == "context" and len(self.experts) > 1:
            raise ValueError(CONTEXT_WITH_TWO_EXPERTS)
        if regenerate is None:
            if context_latents is not None:
                raise ValueError("context_latents were given without regenerate=[shot indices]")
            return
        given = list(regenerate)
        if not given:
            raise ValueError("regenerate is empty; pass the indices of the shots to make anew, or None")
        regenerate = [_as_index(k) for k in given]
        for k, value in zip(regenerate, given, strict=True):
            if k is None or not 0 <= k < len(shots):
                raise ValueError(
                    f"regenerate index {value!r} is out of range for {len(shots)} shots (0..{len(shots) - 1})"
                )
        if len(set(regenerate)) != len(regenerate):
            raise ValueError(f"regenerate lists a shot twice: {regenerate}")
        if context_latents is None or len(context_latents) != len(shots):
            got = "none" if context_latents is None else len(context_latents)
            raise ValueError(f"regeneration needs context_latents, one per shot ({len(shots)}), got {got}")
        channels = self.transformer.config.in_channels
        h, w = height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial
        for k, (shot, lat) in enumerate(zip(shots, context_latents, strict=True)):
            if k in regenerate:
                continue
            n = (shot.num_frames - 1) // self.vae_scale_factor_temporal + 1
            expected = (channels, n, h, w)
            if not isinstance(lat, torch.Tensor):
                raise ValueError(f"context_latents[{k}] is missing; shot {k} is kept, so pass its clean latent")
            shape = tuple(lat.shape[1:]) if lat.ndim == 5 and lat.shape[0] == 1 else tuple(lat.shape)
            if shape != expected:
                raise ValueError(
                    f"context_latents[{k}] has shape {tuple(lat.shape)}, expected {(1, *expected)} for a "
                    f"{shot.num_frames}-frame shot at {width}x{height}; regenerate with the take's own settings"
                )

    def _scene_text(self, shots, global_caption, max_sequence_length, device):
        """The conditional text `[global; caption_1; ...; caption_K]` as `([L, D], global_length, caption_lengths)`,
        each caption encoded on its own."""
        caption_embeds = [self.encode_caption(s.caption, max_sequence_length, device) for s in shots]
        global_embeds = [self.encode_caption(global_caption, max_sequence_length, device)] if global_caption else []
        global_length = global_embeds[0].shape[0] if global_embeds else 0
        return torch.cat(global_embeds + caption_embeds), global_length, [e.shape[0] for e in caption_embeds]

    def _attention_context(self, expert, layout: ShotLayout, cross_attention: str, self_attention: str):
        """The multi-shot attention of one expert for the run (yields the state whose layout the passes switch)."""
        return multishot_attention(expert, layout, cross_attention, self_attention)

    def _decode_shots(self, shot_latents: list[torch.Tensor], shots: Sequence[ShotSpec], output_type: str) -> list:
        """Decode shot by shot: each shot's first latent frame is its own image frame for the causal VAE."""
        return [self.decode_latents(lat, output_type) for lat in shot_latents]

    def _expert_at(self, t, guidance_scale: float, guidance_scale_2: float | None):
        """The transformer and guidance scale of timestep `t`: the high-noise expert at and above the boundary
        timestep (`boundary_ratio * num_train_timesteps`, as `WanPipeline` draws it), the low-noise one below."""
        boundary_ratio = self.config.boundary_ratio
        if boundary_ratio is None or t >= boundary_ratio * self.scheduler.config.num_train_timesteps:
            return self.transformer, guidance_scale
        return self.transformer_2, guidance_scale_2

    # ------------------------------------------------------------------ latents

    def _shot_noise(self, shape, generator, device) -> torch.Tensor:
        return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)

    def decode_latents(self, latents: torch.Tensor, output_type: str = "np"):
        """Decode one shot's `[1, C, n, h, w]` latent to frames (the shot's first latent frame is its image frame)."""
        vae_device = get_module_execution_device(self.vae)
        latents = latents.to(vae_device, dtype=self.vae.dtype)
        z = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
        video = self.vae.decode(latents / inv_std + mean, return_dict=False)[0]
        frames = self.video_processor.postprocess_video(video, output_type=output_type)
        return frames[0]

    @torch.no_grad()
    def preview_frame(self, latents: torch.Tensor, shot: int = 0) -> np.ndarray:
        """A cheap preview during denoising: the first frame of `shot`, decoded from the current scene latent.

        Returns an `[H, W, 3]` uint8 array. `latents` is the callback's `latents` (the run's video sequence).
        """
        layout = self._current_layout
        if layout is None:
            raise RuntimeError("preview_frame is only available during a run (call it from callback_on_step_end)")
        if shot not in layout.frame_spans:
            raise ValueError(f"shot {shot} is not being denoised in this run (shots {list(layout.frame_spans)})")
        a, _ = layout.frame_spans[shot]
        frame = self.decode_latents(latents[:, :, a : a + 1].float(), output_type="np")[0]
        return (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        shots: Sequence[ShotSpec],
        global_caption: str | None = None,
        negative_prompt: str | None = None,
        height: int = 480,
        width: int = 832,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        cross_attention: str | None = None,
        self_attention: str | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        max_sequence_length: int | None = 512,
        regenerate: Sequence[int] | None = None,
        context_latents: Sequence[torch.Tensor | None] | None = None,
        regenerate_mode: str | None = None,
        output_type: str = "np",
        guidance_scale_2: float | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        adapter_shots: dict[str, Sequence[int]] | None = None,
        return_dict: bool = True,
    ) -> MultiShotOutput | tuple:
        r"""Generate a scene (or regenerate some of its shots).

        Args:
            shots: the scene's shots in order.
            global_caption: scene caption seen by every shot (never tied to one shot's time).
            negative_prompt: what no shot should show; one global text of the unconditional pass.
            cross_attention: "mmrope" | "window" | "full" (None: the pipeline's default).
            self_attention: "full" | "sparse" | "isolated" (None: the pipeline's default).
            generator: one generator for the scene (shots drawn in order) or one per shot.
            max_sequence_length: each caption padded/truncated to this as stock `WanPipeline` does; None = trimmed.
            regenerate: indices of shots to make anew; the others come from `context_latents`.
            context_latents: per-shot clean latents of the current takes (`[1, C, n, h, w]` or `[C, n, h, w]`;
                entries of regenerated shots are ignored and may be None).
            regenerate_mode: "inpaint" (any model) | "context" (per-token timesteps); None = pipeline default.
            guidance_scale_2: guidance of the low-noise expert (`transformer_2`); None = `guidance_scale`, as
                `WanPipeline` does. Only for two-expert pipelines.
            callback_on_step_end: `fn(pipe, step, timestep, callback_kwargs) -> dict`, a diffusers
                `PipelineCallback` or `MultiPipelineCallbacks`, called after every step; tensors it returns (e.g.
                `latents`) replace the run's. `callback_kwargs["latents"]` is the run's video latent (split it with
                `pipe.current_layout`). Set `pipe._interrupt = True` to stop before the next step.
            callback_on_step_end_tensor_inputs: the tensors the callback gets, of `pipe._callback_tensor_inputs`
                (default `["latents"]`); a `PipelineCallback` brings its own `tensor_inputs`.
            adapter_shots: loaded LoRA adapter name -> the shots (indices) it may change; its delta is masked out
                of every other shot's tokens (`pipelines.adapter_scope`). None: every LoRA acts on the whole scene.
            return_dict: return a `MultiShotOutput` (default) or a plain tuple of its fields.

        Examples:

        Returns:
            `MultiShotOutput`, or with `return_dict=False` the tuple `(shots, latents, layout, parameters,
            interrupted)`.
        """
        cross_attention = cross_attention or self.config.cross_attention
        self_attention = self_attention or self.config.self_attention
        regenerate_mode = regenerate_mode or self.config.regenerate_mode
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        for name in tensor_inputs:
            if name not in self._callback_tensor_inputs:
                raise ValueError(
                    f"callback tensor {name!r} is not one of {self._callback_tensor_inputs}; "
                    "change callback_on_step_end_tensor_inputs"
                )
        shots = list(shots or [])
        self.check_inputs(
            shots,
            global_caption,
            negative_prompt,
            height,
            width,
            num_inference_steps,
            cross_attention,
            self_attention,
            generator,
            max_sequence_length,
            regenerate,
            context_latents,
            regenerate_mode,
            output_type,
        )
        self._check_adapter_shots(adapter_shots, len(shots))
        if guidance_scale_2 is not None and self.config.boundary_ratio is None:
            raise ValueError("guidance_scale_2 is the low-noise expert's guidance; this model has one expert")
        if self.config.boundary_ratio is not None and guidance_scale_2 is None:
            guidance_scale_2 = guidance_scale
        self._guidance_scale = guidance_scale
        self._guidance_scale_2 = guidance_scale_2
        self._interrupt = False
        self._current_timestep = None
        device = self._execution_device
        num_shots = len(shots)
        transformer_dtype = self.transformer.dtype

        # 1. Text: [global; caption_1; ...; caption_K] for the conditional pass, the negative prompt alone (global,
        # seen by every shot) for the unconditional one: it describes what no shot should show.
        prompt_embeds, global_length, caption_lengths = self._scene_text(
            shots, global_caption, max_sequence_length, device
        )
        prompt_embeds = prompt_embeds.unsqueeze(0).to(transformer_dtype)
        negative_prompt_embeds = None
        if self.do_classifier_free_guidance:
            negative = self.encode_caption(negative_prompt or "", max_sequence_length, device)
            negative_prompt_embeds = negative.unsqueeze(0).to(transformer_dtype)

        # 2. Layout of the scene, and of the run (isolated regeneration denoises only the regenerated shots).
        p_t, p_h, p_w = self.transformer.config.patch_size
        latent_frames = [(s.num_frames - 1) // self.vae_scale_factor_temporal + 1 for s in shots]
        lat_h, lat_w = height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial
        if any(n % p_t for n in latent_frames):
            raise ValueError(f"latent frames {latent_frames} must be multiples of the temporal patch size {p_t}")
        layout = ShotLayout.build(
            [n // p_t for n in latent_frames],
            lat_h // p_h,
            lat_w // p_w,
            caption_lengths=caption_lengths,
            global_length=global_length,
            gap=self.config.gap,
        )
        regenerating = regenerate is not None
        regen = sorted(_as_index(k) for k in regenerate) if regenerating else list(range(num_shots))
        active = regen if regenerating and self_attention == "isolated" else list(range(num_shots))
        context_shots = [k for k in active if k not in regen]
        run_layout = layout.subset(active) if len(active) < num_shots else layout
        uncond_layout = (
            run_layout.with_text([0] * num_shots, negative_prompt_embeds.shape[1])
            if negative_prompt_embeds is not None
            else None
        )
        self._current_layout = run_layout

        # 3. Noise, drawn per shot in order (one generator per shot makes each shot reproducible on its own).
        channels = self.transformer.config.in_channels
        noise = []
        for k, n in enumerate(latent_frames):
            gen = generator[k] if isinstance(generator, list) else generator
            noise.append(self._shot_noise((1, channels, n, lat_h, lat_w), gen, device))
        clean: dict[int, torch.Tensor] = {}
        if regenerating:
            for k in range(num_shots):
                if k not in regen:
                    lat = context_latents[k]
                    clean[k] = (lat if lat.ndim == 5 else lat.unsqueeze(0)).to(device, torch.float32)
        latents = torch.cat([noise[k] for k in active], dim=2)
        frame_spans = {k: (a * p_t, b * p_t) for k, (a, b) in run_layout.frame_spans.items()}

        # 4. Denoising. A step cache starts empty: a run that raised never reached the reset at its end.
        for expert in self.experts:
            expert._reset_stateful_cache()
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        self.scheduler.set_begin_index(0)
        use_context = regenerating and regenerate_mode == "context" and bool(context_shots)
        use_inpaint = regenerating and regenerate_mode == "inpaint" and bool(context_shots)
        interrupted = False

        with contextlib.ExitStack() as stack:
            # One multi-shot state per expert, switched together between the conditional and unconditional passes.
            states = [
                stack.enter_context(self._attention_context(expert, run_layout, cross_attention, self_attention))
                for expert in self.experts
            ]
            state = states[0]
            for expert in self.experts:
                stack.enter_context(scoped_loras(expert, adapter_shots or {}, lambda: state.layout))
            progress_bar = stack.enter_context(self.progress_bar(total=len(timesteps)))
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    interrupted = True
                    break
                self._current_timestep = t
                if use_inpaint:
                    # Context shots re-enter at the current noise level: (1 - sigma) x0 + sigma eps (flow matching).
                    sigma = self.scheduler.sigmas[i].to(device=device, dtype=torch.float32)
                    for k in context_shots:
                        a, b = frame_spans[k]
                        latents[:, :, a:b] = (1.0 - sigma) * clean[k] + sigma * noise[k]
                if use_context:
                    for k in context_shots:
                        a, b = frame_spans[k]
                        latents[:, :, a:b] = clean[k]
                    shot_t = torch.tensor([float(t) if k in regen else 0.0 for k in range(num_shots)], device=device)
                    timestep = run_layout.token_timesteps(shot_t).to(device)
                else:
                    timestep = t.expand(latents.shape[0])

                current_model, current_guidance_scale = self._expert_at(t, guidance_scale, guidance_scale_2)
                latent_model_input = latents.to(transformer_dtype)
                # diffusers' cache hooks (FirstBlockCache, MagCache, ...) keep one state per named pass, as
                # WanPipeline names them.
                cache_context_kwargs = {
                    "step_index": i,
                    "sigma": float(self.scheduler.sigmas[i]),
                    "num_inference_steps": self._num_timesteps,
                }
                for s in states:
                    s.layout = run_layout
                with current_model.cache_context("cond", **cache_context_kwargs):
                    noise_pred = current_model(
                        hidden_states=latent_model_input,
                        timestep=timestep,
                        encoder_hidden_states=prompt_embeds,
                        attention_kwargs=attention_kwargs,
                        return_dict=False,
                    )[0]
                if self.do_classifier_free_guidance:
                    for s in states:
                        s.layout = uncond_layout
                    with current_model.cache_context("uncond", **cache_context_kwargs):
                        noise_uncond = current_model(
                            hidden_states=latent_model_input,
                            timestep=timestep,
                            encoder_hidden_states=negative_prompt_embeds,
                            attention_kwargs=attention_kwargs,
                            return_dict=False,
                        )[0]
                    noise_pred = noise_uncond + current_guidance_scale * (noise_pred - noise_uncond)
                    for s in states:
                        s.layout = run_layout

                latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]

                if callback_on_step_end is not None:
                    local = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    outputs = callback_on_step_end(self, i, t, {k: local[k] for k in tensor_inputs}) or {}
                    latents = outputs.pop("latents", latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                progress_bar.update()
        self._current_timestep = None

        # 5. Per-shot clean latents: context shots exactly as given, the others from the run.
        shot_latents: list[torch.Tensor] = []
        for k in range(num_shots):
            if k in clean:
                shot_latents.append(clean[k])
            else:
                a, b = frame_spans[k]
                shot_latents.append(latents[:, :, a:b])
        parameters = {
            "captions": [prompt_clean(s.caption) for s in shots],
            "num_frames": [s.num_frames for s in shots],
            "global_caption": global_caption,
            "negative_prompt": negative_prompt,
            "height": height,
            "width": width,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "guidance_scale_2": guidance_scale_2,
            "boundary_ratio": self.config.boundary_ratio,
            "cross_attention": cross_attention,
            "self_attention": self_attention,
            "gap": self.config.gap,
            "max_sequence_length": max_sequence_length,
            "regenerate": regen if regenerating else None,
            "regenerate_mode": regenerate_mode if regenerating else None,
        }
        kept = [lat.detach().to("cpu", torch.float32).clone() for lat in shot_latents]
        if interrupted:
            self._current_layout = None
            self.maybe_free_model_hooks()
            if not return_dict:
                return ([], kept, layout, parameters, True)
            return MultiShotOutput([], kept, layout, parameters, interrupted=True)

        # 6. Decode (shot by shot: each shot's first latent frame is its own image frame for the causal VAE).
        if output_type == "latent":
            outputs = [lat.clone() for lat in kept]
        else:
            outputs = self._decode_shots(shot_latents, shots, output_type)
        self._current_layout = None
        self.maybe_free_model_hooks()
        if not return_dict:
            return (outputs, kept, layout, parameters, False)
        return MultiShotOutput(outputs, kept, layout, parameters)
