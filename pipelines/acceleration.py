"""Speed and memory settings applied to a loaded `MultiShotPipeline`, all through what diffusers provides.

- Step cache (`step_cache`): diffusers' cache hooks on the transformer, enabled with `transformer.enable_cache(...)`:
  `first-block` (FirstBlockCacheConfig: skip the remaining blocks when the first block's residual changed less
  than `cache_threshold`), `magcache` (MagCacheConfig: skip while the accumulated magnitude-ratio error stays under
  `cache_threshold`; needs ratios calibrated for the model, `MAG_RATIOS`), `taylorseer` (TaylorSeerCacheConfig on
  whole transformer blocks: a full pass every `cache_interval` steps, Taylor-extrapolated blocks in between). The
  pipeline names its passes with `cache_context("cond" / "uncond")`, so each pass keeps its own cache state.
- Attention backend (`attention_backend`): `transformer.set_attention_backend(...)`; the multi-shot processors
  (`pipelines.attention`) call diffusers' dispatcher with it. `*_hub` backends download kernels and are never offered.
- Regional compile (`compile`): `transformer.compile_repeated_blocks()` (torch.compile of each transformer block).
- VRAM profile (`vram_profile`): `none` (all on the device), `model` / `sequential` CPU offload, `group` (diffusers'
  block-level group offload, one block per group, prefetched on a CUDA stream), and `fp8` variants that store the
  transformer weights in float8 (`enable_layerwise_casting`) and compute in the pipeline's dtype.
- Accelerator LoRA (`load_accelerator`): a step-distillation LoRA (lightx2v, CausVid) converted by diffusers'
  `WanLoraLoaderMixin` and kept active on every shot, with the few-step defaults it is made for
  (`FEW_STEP_DEFAULTS`, `few_step_scheduler`).

A choice this machine cannot run (no CUDA, a package missing, no calibration for the model) raises
`AccelerationUnavailable` naming what to install or pick instead; nothing falls back silently.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

STEP_CACHES = ("off", "first-block", "magcache", "taylorseer")
# Backends a film-maker can pick. Every one runs locally; `*_hub` backends fetch kernels from the Hub at run time.
ATTENTION_BACKENDS = ("native", "flash", "_flash_3", "sage", "_native_cudnn")
# vram_profile -> (offload, fp8 storage). "default" keeps the worker's own `--offload` setting.
VRAM_PROFILES: dict[str, tuple[str | None, bool]] = {
    "default": (None, False),
    "none": ("none", False),
    "model": ("model", False),
    "sequential": ("sequential", False),
    "group": ("group", False),
    "fp8": ("none", True),
    "fp8-model": ("model", True),
    "fp8-group": ("group", True),
}
THRESHOLD_RANGE = (0.001, 1.0)
INTERVAL_RANGE = (2, 20)
DEFAULT_THRESHOLDS = {"first-block": 0.05, "magcache": 0.06}
DEFAULT_INTERVAL = 2  # measured on the demo model: 1.82x fewer passes, no score lost (docs/PERFORMANCE.md)
# Steps of full computation before TaylorSeer starts extrapolating (it needs two points for a first-order fit).
TAYLORSEER_WARMUP_STEPS = 3

# MagCache's per-step residual magnitude ratios, calibrated per model with `calibrate_mag_ratios` (20 steps, the
# preset's shift and guidance; diffusers interpolates them to other step counts). Models without an entry refuse
# magcache with a message naming the other caches.
MAG_RATIOS: dict[str, list[float]] = {
    # bench/step_cache.py --calibrate-magcache: 4 training-world scenes of 3 shots, 20 steps, guidance 2.
    "demo": [
        1.0,
        1.02133,
        0.97674,
        0.97708,
        0.97407,
        0.97216,
        0.9688,
        0.96639,
        0.96261,
        0.95788,
        0.95257,
        0.94629,
        0.93896,
        0.93039,
        0.92119,
        0.91106,
        0.90446,
        0.90613,
        0.93692,
        1.17415,
    ],  # fmt: skip
}

_BACKEND_PACKAGES = {
    "flash": "flash-attn (pip install flash-attn)",
    "_flash_3": "FlashAttention 3 (built from the flash-attention repository's hopper/ folder)",
    "sage": "sageattention (pip install sageattention)",
}


class AccelerationUnavailable(ValueError):
    """A speed setting this machine cannot run; the message names what to install or pick instead."""


@dataclass(frozen=True)
class Acceleration:
    """The speed/VRAM settings of one run. `cache_threshold` / `cache_interval` None: the cache's default."""

    step_cache: str = "off"
    cache_threshold: float | None = None
    cache_interval: int | None = None
    attention_backend: str = "native"
    compile: bool = False
    vram_profile: str = "default"

    def __post_init__(self) -> None:
        if self.step_cache not in STEP_CACHES:
            raise ValueError(f"step_cache must be one of {STEP_CACHES}, got {self.step_cache!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            hub = str(self.attention_backend).endswith("_hub")
            hint = " (hub backends download kernels at run time)" if hub else ""
            raise ValueError(
                f"attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}{hint}"
            )
        if self.vram_profile not in VRAM_PROFILES:
            raise ValueError(f"vram_profile must be one of {tuple(VRAM_PROFILES)}, got {self.vram_profile!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
        if self.cache_threshold is not None:
            low, high = THRESHOLD_RANGE
            if isinstance(self.cache_threshold, bool) or not isinstance(self.cache_threshold, int | float):
                raise ValueError(f"cache_threshold must be a number, got {self.cache_threshold!r}")
            if not low <= self.cache_threshold <= high:
                raise ValueError(f"cache_threshold must be between {low} and {high}, got {self.cache_threshold}")
        if self.cache_interval is not None:
            low, high = INTERVAL_RANGE
            if isinstance(self.cache_interval, bool) or not isinstance(self.cache_interval, int):
                raise ValueError(f"cache_interval must be a whole number of steps, got {self.cache_interval!r}")
            if not low <= self.cache_interval <= high:
                raise ValueError(f"cache_interval must be between {low} and {high} steps, got {self.cache_interval}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Acceleration:
        """Build from stored settings; unknown keys are an error that lists the known ones."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown speed setting(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(known))}")
        if isinstance(values.get("cache_threshold"), int) and not isinstance(values["cache_threshold"], bool):
            values["cache_threshold"] = float(values["cache_threshold"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, values: dict[str, Any] | None) -> Acceleration:
        """These settings with `values` (a partial dict, e.g. a project's) on top."""
        return Acceleration.from_dict({**self.to_dict(), **(values or {})})

    @property
    def threshold(self) -> float | None:
        """The threshold the cache runs with (first-block, magcache), defaults filled in."""
        if self.step_cache not in DEFAULT_THRESHOLDS:
            return None
        return self.cache_threshold if self.cache_threshold is not None else DEFAULT_THRESHOLDS[self.step_cache]

    @property
    def interval(self) -> int | None:
        """TaylorSeer's refresh interval in steps, default filled in."""
        if self.step_cache != "taylorseer":
            return None
        return self.cache_interval if self.cache_interval is not None else DEFAULT_INTERVAL

    @property
    def offload(self) -> str | None:
        """The offload mode of the VRAM profile (None: the worker's own setting)."""
        return VRAM_PROFILES[self.vram_profile][0]

    @property
    def fp8_storage(self) -> bool:
        return VRAM_PROFILES[self.vram_profile][1]

    def load_key(self, default_offload: str = "none") -> tuple:
        """What needs a fresh model load when it changes: (offload, fp8 storage, compile)."""
        return (self.offload or default_offload, self.fp8_storage, self.compile)

    def record(self) -> dict[str, Any]:
        """What a take's parameters keep: the settings as run, defaults filled in."""
        return {
            "step_cache": self.step_cache,
            "cache_threshold": self.threshold,
            "cache_interval": self.interval,
            "attention_backend": self.attention_backend,
            "compile": self.compile,
            "vram_profile": self.vram_profile,
        }


# ---------------------------------------------------------------------------------------------------------------------
# Availability


def _backend_problem(backend: str, device_type: str) -> str | None:
    if backend == "native":
        return None
    if device_type != "cuda":
        return f"attention backend {backend!r} needs a CUDA GPU (this worker runs on {device_type}); pick 'native'"
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except RuntimeError as error:
        package = _BACKEND_PACKAGES.get(backend)
        install = f"install {package}, or " if package else ""
        return f"attention backend {backend!r} is not usable here ({error}); {install}pick 'native'"
    return None


def check_available(acceleration: Acceleration, device_type: str, preset_name: str, default_offload: str = "none"):
    """Raise `AccelerationUnavailable` for any setting this machine (or model) cannot run; return None otherwise."""
    problems = []
    problem = _backend_problem(acceleration.attention_backend, device_type)
    if problem:
        problems.append(problem)
    if acceleration.step_cache == "magcache" and preset_name not in MAG_RATIOS:
        calibrated = ", ".join(sorted(MAG_RATIOS)) or "none"
        problems.append(
            f"step cache 'magcache' has no calibrated magnitude ratios for model {preset_name!r} (calibrated: "
            f"{calibrated}); pick 'first-block' or 'taylorseer', or calibrate with bench/multishot.py "
            "--calibrate-magcache"
        )
    offload = acceleration.offload or default_offload
    if offload != "none" and device_type == "cpu":
        problems.append(
            f"VRAM profile {acceleration.vram_profile!r} offloads to the CPU from a GPU, but this worker runs on the "
            "CPU; pick 'none' or 'default'"
        )
    if offload == "group" and device_type != "cuda":
        problems.append(f"VRAM profile {acceleration.vram_profile!r} (group offload) needs a CUDA GPU; pick 'model'")
    if acceleration.fp8_storage and device_type == "mps":
        problems.append(f"VRAM profile {acceleration.vram_profile!r} stores weights in float8, which MPS lacks")
    if acceleration.compile:
        if device_type != "cuda":
            problems.append(f"compile needs a CUDA GPU (this worker runs on {device_type}); turn compile off")
        elif importlib.util.find_spec("triton") is None:
            problems.append("compile needs triton (pip install triton); turn compile off")
    if problems:
        raise AccelerationUnavailable("; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------------
# Applying


def regeneration_share(latent_frames: list[int], regenerate: list[int] | None, mode: str | None) -> float:
    """Share of a run's video tokens that change from step to step: 1 for a scene, the regenerated shots' share when
    regenerating in `context` mode (the other shots sit clean at timestep 0; in `inpaint` they are re-noised every
    step and change like the regenerated ones)."""
    if not regenerate or mode != "context":
        return 1.0
    return sum(latent_frames[k] for k in regenerate) / sum(latent_frames)


def cache_config(acceleration: Acceleration, num_inference_steps: int, preset_name: str, share: float = 1.0):
    """The diffusers cache config for a run of `num_inference_steps`, or None when the cache is off.

    `share` (`regeneration_share`): first-block decides on the mean change of the first block's residual over the
    whole sequence, so tokens that do not change dilute it by their share; its threshold is scaled by `share` so
    a regenerated shot is skipped about as often as in a scene generation.
    """
    kind = acceleration.step_cache
    if kind == "off":
        return None
    if kind == "first-block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=acceleration.threshold * share)
    if kind == "magcache":
        from diffusers import MagCacheConfig

        ratios = MAG_RATIOS.get(preset_name)
        if ratios is None:
            raise AccelerationUnavailable(f"step cache 'magcache' has no calibrated ratios for model {preset_name!r}")
        return MagCacheConfig(
            threshold=acceleration.threshold, num_inference_steps=num_inference_steps, mag_ratios=list(ratios)
        )
    import torch
    from diffusers import TaylorSeerCacheConfig

    # Whole blocks are extrapolated (not only their attention), so a cached step skips the block stack entirely.
    return TaylorSeerCacheConfig(
        cache_interval=acceleration.interval,
        disable_cache_before_step=TAYLORSEER_WARMUP_STEPS,
        max_order=1,
        taylor_factors_dtype=torch.float32,
        cache_identifiers=[r"^blocks\.\d+$"],
    )


def _transformers(pipe) -> list:
    """The denoisers of a pipeline (`transformer`, and `transformer_2` of two-expert models)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def apply_step_cache(
    pipe, acceleration: Acceleration, num_inference_steps: int, preset_name: str, share: float = 1.0
) -> None:
    """Put the run's cache config on every denoiser (replacing another one), or take the cache off."""
    config = cache_config(acceleration, num_inference_steps, preset_name, share)
    key = None if config is None else repr(config)
    if getattr(pipe, "_step_cache_key", None) == key:
        return
    for transformer in _transformers(pipe):
        if transformer.is_cache_enabled:
            transformer.disable_cache()
        if config is not None:
            transformer.enable_cache(config)
    pipe._step_cache_key = key


def apply_attention_backend(pipe, backend: str) -> None:
    """Select the attention backend on every denoiser (the multi-shot processors pick it up from the stock ones)."""
    if getattr(pipe, "_attention_backend_name", "native") == backend:
        return
    logging.getLogger("diffusers.models.modeling_utils").setLevel(logging.ERROR)  # "experimental feature" notice
    for transformer in _transformers(pipe):
        transformer.set_attention_backend(backend)
    pipe._attention_backend_name = backend


def apply_runtime(
    pipe, acceleration: Acceleration, num_inference_steps: int, preset_name: str, share: float = 1.0
) -> None:
    """The settings that change on a loaded pipeline without reloading it: step cache and attention backend.
    `share`: see `regeneration_share`."""
    apply_attention_backend(pipe, acceleration.attention_backend)
    apply_step_cache(pipe, acceleration, num_inference_steps, preset_name, share)


def store_in_fp8(pipe, compute_dtype) -> None:
    """Keep each denoiser's weights in float8 (e4m3) and upcast layer by layer to `compute_dtype` to compute.

    Patch embedding, condition embedders and norms stay in `compute_dtype` (WanTransformer3DModel's
    `_skip_layerwise_casting_patterns`): they are small and precision-critical.
    """
    import torch

    for transformer in _transformers(pipe):
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)


def group_offload(pipe, device) -> None:
    """diffusers' block-level group offload of every model, one block per group, prefetched on a CUDA stream."""
    import torch

    device = torch.device(device)
    pipe.enable_group_offload(
        onload_device=device,
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=device.type == "cuda",
    )


def compile_blocks(pipe) -> None:
    """Regional compile: torch.compile of each repeated transformer block (`compile_repeated_blocks`)."""
    for transformer in _transformers(pipe):
        transformer.compile_repeated_blocks(fullgraph=False)
    pipe._compiled_blocks = True


def calibrate_mag_ratios(pipe, **call_kwargs) -> list[float]:
    """Run one generation with MagCache in calibration mode and return the conditional pass's ratios.

    `call_kwargs` are the pipeline call's (a representative scene at the steps to calibrate for). The cache is
    taken off again afterwards.
    """
    from diffusers import MagCacheConfig

    steps = call_kwargs.get("num_inference_steps", 50)
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level = _Collect(level=logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    transformer = pipe.transformer
    try:
        if transformer.is_cache_enabled:
            transformer.disable_cache()
        transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
        with contextlib.redirect_stdout(io.StringIO()):  # diffusers also prints the ratios; they are returned
            pipe(**call_kwargs)
    finally:
        transformer.disable_cache()
        pipe._step_cache_key = None
        logger.removeHandler(handler)
        logger.setLevel(level)
    results = [m for m in records if m.startswith("MagCache Calibration Results:")]
    if not results:
        raise RuntimeError("MagCache calibration reported no ratios; run the full number of steps")
    numbers = re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?|[-+]?\d+(?:[eE][-+]?\d+)?", results[0].split(":", 1)[1])
    return [round(float(n), 5) for n in numbers]


class BlockPassCounter:
    """Counts full passes through a transformer's block stack: calls of the last block's feed-forward, which a step
    cache skips (first-block, magcache and block-level taylorseer all bypass it on a cached step).

        with BlockPassCounter(pipe.transformer) as counter:
            pipe(...)
        counter.passes   # one per conditional or unconditional pass that ran every block
    """

    def __init__(self, transformer):
        self.module = transformer.blocks[-1].ffn
        self.passes = 0
        self._handle = None

    def _count(self, module, inputs, output) -> None:
        self.passes += 1

    def __enter__(self) -> BlockPassCounter:
        self._handle = self.module.register_forward_hook(self._count)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


# ---------------------------------------------------------------------------------------------------------------------
# Accelerator (step-distillation) LoRAs

ACCELERATOR_ADAPTER = "accelerator"


@dataclass(frozen=True)
class FewStepDefaults:
    """What lightx2v / CausVid-style step-distilled Wan LoRAs are made for: few Euler flow-matching steps at
    guidance 1 (the unconditional pass is skipped) and a larger shift."""

    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    flow_shift: float = 5.0


FEW_STEP_DEFAULTS = FewStepDefaults()


@dataclass
class AcceleratorLoad:
    """What `load_accelerator` put on the pipeline: the converted layers, and what diffusers does not carry."""

    adapter_name: str
    modules: list[str]
    norm_differences_skipped: list[str]  # full-weight norm differences (`blocks.0.norm3.diff`): not applied


def load_accelerator(pipe, lora, weight: float = 1.0, adapter_name: str = ACCELERATOR_ADAPTER) -> AcceleratorLoad:
    """Load a step-distillation LoRA on every denoiser, for every shot (never scoped to shots).

    `lora`: a path to a .safetensors file or a state dict, in any layout diffusers' `WanLoraLoaderMixin`
    converts (original Wan / ComfyUI keys with `lora_down`/`lora_up`, `diff_b` biases, time-embedding and head
    layers). Full-weight norm differences are not applied by diffusers' Wan LoRA loader; they are reported in the
    result instead of dropped unseen. Other loaded LoRAs stay active beside it.
    """
    import torch
    from safetensors.torch import load_file

    raw = load_file(str(lora)) if not isinstance(lora, dict) else dict(lora)
    skipped = sorted(k for k in raw if k.endswith(".diff") or ("norm" in k and k.endswith(".diff_b")))
    state = pipe.lora_state_dict({k: v for k, v in raw.items() if k not in skipped})
    state = {k: v for k, v in state.items() if "lora" in k}
    if any(k.endswith(".lora_B.bias") for k in state):
        # peft gives every layer of the adapter a bias once one has one: zeros where the file has none.
        for key in [k for k in state if k.endswith(".lora_B.weight")]:
            state.setdefault(key.removesuffix("weight") + "bias", torch.zeros(state[key].shape[0]))
    _check_fits(state, pipe.transformer)
    active = list(pipe.get_active_adapters()) if hasattr(pipe, "get_active_adapters") else []
    weights = _adapter_weights(pipe, active)
    pipe.load_lora_weights(state, adapter_name=adapter_name)
    if getattr(pipe, "transformer_2", None) is not None:
        pipe.load_lora_weights(state, adapter_name=adapter_name, load_into_transformer_2=True)
    names = [n for n in active if n != adapter_name] + [adapter_name]
    pipe.set_adapters(names, adapter_weights=[weights.get(n, 1.0) for n in names[:-1]] + [float(weight)])
    # Kept active for every scene by whoever swaps the character LoRAs (adapters.loading.apply_adapters).
    pipe.persistent_loras = {**(getattr(pipe, "persistent_loras", None) or {}), adapter_name: float(weight)}
    modules = sorted({k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in state})
    return AcceleratorLoad(adapter_name=adapter_name, modules=modules, norm_differences_skipped=skipped)


def _check_fits(state: dict, transformer) -> None:
    """Every LoRA layer must name a Linear of this transformer with its widths, else the LoRA is for another model."""
    import torch

    linears = {}
    for name, module in transformer.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, torch.nn.Linear):
            linears[name.replace(".base_layer", "")] = (base.in_features, base.out_features)
    if not state:
        raise ValueError("the accelerator file holds no LoRA layers diffusers can convert for a Wan transformer")
    for key, tensor in sorted(state.items()):
        module, part = key.removeprefix("transformer.").rsplit(".lora_", 1)
        if module not in linears:
            raise ValueError(f"the accelerator LoRA was made for another model: this one has no layer {module}")
        in_features, out_features = linears[module]
        expected = in_features if part == "A.weight" else out_features
        got = tensor.shape[-1] if part == "A.weight" else tensor.shape[0]
        if got != expected:
            raise ValueError(
                f"the accelerator LoRA was made for another model: layer {module} is {in_features} -> "
                f"{out_features} here, the LoRA's {part} has {tuple(tensor.shape)}; use one made for this preset"
            )


def _adapter_weights(pipe, names: list[str]) -> dict[str, float]:
    """The weights the named LoRAs are active with (peft keeps them on every LoRA layer's `scaling`)."""
    weights: dict[str, float] = {}
    for module in pipe.transformer.modules():
        scaling, rank = getattr(module, "scaling", None), getattr(module, "r", None)
        alpha = getattr(module, "lora_alpha", None)
        if not isinstance(scaling, dict) or not isinstance(rank, dict) or not isinstance(alpha, dict):
            continue
        for name in names:
            if name in scaling and name not in weights and rank.get(name):
                weights[name] = float(scaling[name] / (alpha[name] / rank[name]))
        if len(weights) == len(names):
            break
    return weights


def few_step_scheduler(pipe, flow_shift: float = FEW_STEP_DEFAULTS.flow_shift) -> None:
    """The scheduler step-distilled Wan LoRAs are trained for: Euler flow matching with `flow_shift`."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=flow_shift)
