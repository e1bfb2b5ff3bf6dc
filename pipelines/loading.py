"""Turn a preset name into a ready `MultiShotPipeline`: device and dtype, weights from disk only, offload.

Nothing is ever downloaded: real presets read a local folder or the Hugging Face cache with
`local_files_only=True`, and missing weights raise `ModelWeightsMissingError` naming the folder and files.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

import torch

from .registry import ModelPreset, get_preset

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL_DIR = REPO_ROOT / "assets" / "demo"
COMPONENTS = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")
EXPECTED_FILES = ("model_index.json",) + tuple(f"{name}/" for name in COMPONENTS)
OFFLOAD_MODES = ("none", "model", "sequential", "group")
# Only classes from these libraries are instantiated from a model_index.json (never arbitrary modules).
ALLOWED_LIBRARIES = ("diffusers", "transformers")

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


class ModelWeightsMissingError(ValueError):
    """A preset's weights are not on this machine; the message names the folder searched and the files expected."""


def select_device_and_dtype(
    device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"
) -> tuple[torch.device, torch.dtype]:
    """Pick the compute device and dtype: CUDA bf16 > MPS fp16 > CPU fp32 unless told otherwise."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif torch.backends.mps.is_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
    else:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device} was asked for but CUDA is not available here; use device='auto'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for but MPS is not available here; use device='auto'")
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype == "auto":
        if device.type == "cuda":
            resolved = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif device.type == "mps":
            resolved = torch.float16
        else:
            resolved = torch.float32
    else:
        resolved = _DTYPES.get(str(dtype).lower())
        if resolved is None:
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bf16', 'fp16' or 'fp32'")
    if resolved not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"dtype {resolved} is not supported; use bf16, fp16 or fp32")
    return device, resolved


def _missing_files(folder: Path) -> list[str]:
    return [name for name in EXPECTED_FILES if not (folder / name.rstrip("/")).exists()]


def _require_folder(folder: Path, preset: ModelPreset, how: str) -> None:
    missing = _missing_files(folder)
    if missing:
        raise ModelWeightsMissingError(
            f"weights for model preset {preset.name!r} are missing: searched {folder} ({how}); expected the "
            f"diffusers folder layout {', '.join(EXPECTED_FILES)} (missing: {', '.join(missing)})"
        )


def hf_cache_folder(repo_id: str) -> Path:
    """Where the Hugging Face cache keeps `repo_id` (it is looked up there, never downloaded)."""
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache:
        from huggingface_hub import constants

        cache = constants.HF_HUB_CACHE
    return Path(cache) / f"models--{repo_id.replace('/', '--')}"


def _resolve_local_folder(preset: ModelPreset, model_dir: str | os.PathLike | None) -> Path:
    if model_dir is not None:
        folder = Path(model_dir).expanduser()
        _require_folder(folder, preset, "model_dir")
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_folder = hf_cache_folder(preset.repo_id)
    try:
        folder = Path(snapshot_download(preset.repo_id, cache_dir=cache_folder.parent, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
        raise ModelWeightsMissingError(
            f"weights for model preset {preset.name!r} are missing: searched the Hugging Face cache at "
            f"{cache_folder} for {preset.repo_id} (nothing is downloaded at run time); put a diffusers folder "
            f"({', '.join(EXPECTED_FILES)}) there with `huggingface-cli download {preset.repo_id}`, or pass "
            f"model_dir=/path/to/folder"
        ) from err
    _require_folder(folder, preset, f"Hugging Face cache snapshot of {preset.repo_id}")
    return folder


def load_components_from_folder(folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> dict:
    """Load `tokenizer, text_encoder, vae, transformer, scheduler` from a diffusers folder, offline.

    The classes come from `model_index.json` (diffusers/transformers classes only). The VAE stays in float32,
    as Wan's authors recommend (decoding in half precision bands the output).
    """
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    components = {}
    for name in COMPONENTS:
        entry = index.get(name)
        if not entry or entry[0] is None:
            raise ModelWeightsMissingError(f"{folder / 'model_index.json'} names no {name!r} component")
        library, class_name = entry
        if library not in ALLOWED_LIBRARIES:
            raise ValueError(
                f"{folder / 'model_index.json'}: component {name!r} is from {library!r}; "
                f"only {ALLOWED_LIBRARIES} are loaded"
            )
        cls = getattr(importlib.import_module(library), class_name)
        path = folder / name
        if name == "tokenizer":
            components[name] = cls.from_pretrained(path, local_files_only=True)
        elif name == "scheduler":
            components[name] = cls.from_pretrained(path, local_files_only=True)
        else:
            model_dtype = torch.float32 if name == "vae" else dtype
            model = cls.from_pretrained(path, torch_dtype=model_dtype, local_files_only=True)
            components[name] = model.eval()
    return components


def _scheduler_with_shift(scheduler, flow_shift: float):
    """Set the preset's flow-matching shift on whichever flow scheduler the folder ships."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if isinstance(scheduler, UniPCMultistepScheduler):
        return UniPCMultistepScheduler.from_config(scheduler.config, flow_shift=flow_shift)
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, shift=flow_shift)
    return scheduler


def _wan_unipc(flow_shift: float):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=flow_shift,
        solver_order=2,
    )


def load_pipeline(
    preset_name: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    offload: str = "none",
    vae_tiling: bool = False,
    model_dir: str | os.PathLike | None = None,
    fp8_storage: bool = False,
):
    """Build the `MultiShotPipeline` of a preset, on `device`, ready to call.

    - "tiny": random weights built in code (`pipelines.tiny`);
    - "demo": the bundled diffusers folder `assets/demo/` (or `model_dir`);
    - real presets: `model_dir`, else the Hugging Face cache (offline); a UniPC flow-matching scheduler with the
      preset's `flow_shift`.
    `offload`: "none" (all on the device), "model" (each model moves to the device while it runs) or
    "sequential" (layer by layer: slowest, least memory) or "group" (diffusers' block-level group offload, prefetched
    on a CUDA stream: nearly the speed of "none" at a fraction of the memory). `vae_tiling` decodes in tiles to save
    memory. `fp8_storage` keeps the transformer's weights in float8 and computes in `dtype` (layerwise casting).
    """
    from .pipeline_multishot import MultiShotPipeline

    preset = get_preset(preset_name)
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    device, dtype = select_device_and_dtype(device, dtype)
    if offload != "none" and device.type == "cpu":
        raise ValueError(f"offload={offload!r} moves models between CPU and an accelerator; on CPU use 'none'")

    if preset.source == "code":
        from .tiny import build_tiny_components

        components = build_tiny_components()
        components["scheduler"] = _scheduler_with_shift(components["scheduler"], preset.flow_shift)
        for name in ("text_encoder", "transformer"):
            components[name] = components[name].to(dtype)
    elif preset.source == "bundled":
        folder = Path(model_dir) if model_dir is not None else DEMO_MODEL_DIR
        _require_folder(folder, preset, "the bundled demo model; it ships in assets/demo/")
        components = load_components_from_folder(folder, dtype)
        components["scheduler"] = _scheduler_with_shift(components["scheduler"], preset.flow_shift)
    else:
        folder = _resolve_local_folder(preset, model_dir)
        components = load_components_from_folder(folder, dtype)
        scheduler = components["scheduler"]
        from diffusers import UniPCMultistepScheduler

        if isinstance(scheduler, UniPCMultistepScheduler):
            components["scheduler"] = _scheduler_with_shift(scheduler, preset.flow_shift)
        else:
            components["scheduler"] = _wan_unipc(preset.flow_shift)

    pipe = MultiShotPipeline(
        **components,
        gap=preset.gap,
        cross_attention=preset.cross_attention,
        self_attention=preset.self_attention,
        regenerate_mode=preset.regenerate_mode,
    )
    pipe.preset = preset
    if vae_tiling:
        pipe.vae.enable_tiling()
    if fp8_storage:
        from .acceleration import store_in_fp8

        store_in_fp8(pipe, dtype)
    if offload == "group":
        from .acceleration import group_offload

        group_offload(pipe, device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
