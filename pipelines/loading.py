"""Turn a preset name into a ready `MultiShotPipeline`: device and dtype, weights from disk only, offload.

Nothing is ever downloaded: real presets read a local folder or the Hugging Face cache with
`local_files_only=True`, and missing weights raise `ModelWeightsMissingError` naming the folder and files.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass, field
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


# ---------------------------------------------------------------------------------------------------------------
# Finding a preset's weights: MODEL_DIR/<preset>/, a folder named after its Hugging Face repo, the HF cache.


class ModelFolderError(ValueError):
    """A folder holds another kind of model than the preset (e.g. two experts where one is expected)."""


@dataclass
class ModelLocation:
    """Where a preset's weights are: the diffusers folder, and single-file experts that replace its weights."""

    folder: Path
    checkpoints: dict[str, Path] = field(default_factory=dict)  # "transformer" / "transformer_2" -> .safetensors
    how: str = ""


def expert_components(preset: ModelPreset) -> tuple[str, ...]:
    return ("transformer", "transformer_2") if preset.num_experts == 2 else ("transformer",)


def _has_diffusers_weights(component_dir: Path) -> bool:
    if not (component_dir / "config.json").is_file():
        return False
    return any(component_dir.glob("diffusion_pytorch_model*.safetensors")) or any(
        component_dir.glob("*.safetensors.index.json")
    )


def _single_files(folder: Path) -> list[Path]:
    """`.safetensors` beside the diffusers config that are not diffusers' own weight shards."""
    found = []
    for where in (folder, folder / "transformer", folder / "transformer_2"):
        if where.is_dir():
            files = sorted(where.glob("*.safetensors"))
            found += [p for p in files if not p.name.startswith("diffusion_pytorch_model")]
    return found


def _expert_files(preset: ModelPreset, files: list[Path], where: Path) -> dict[str, Path]:
    """Assign single files to experts: the preset's named files first, else one file (one expert) or a
    high-noise/low-noise pair by name (two experts). Ambiguity is an error naming the files."""
    experts = expert_components(preset)
    by_name = {p.name: p for p in files}
    if preset.checkpoint_files and all(name in by_name for name in preset.checkpoint_files):
        return dict(zip(experts, (by_name[name] for name in preset.checkpoint_files), strict=True))
    if preset.checkpoints_required or not files:
        return {}
    if len(experts) == 1:
        if len(files) > 1:
            raise ModelFolderError(
                f"{where} holds several transformer checkpoints ({', '.join(p.name for p in files)}); keep one "
                f"there, or pass the one to use with --model-dir {where}/FILE.safetensors"
            )
        return {"transformer": files[0]}
    high = [p for p in files if "high" in p.name.lower()]
    low = [p for p in files if "low" in p.name.lower()]
    if len(high) <= 1 and len(low) <= 1 and len(high) + len(low) == len(files):
        # A pair, or half of one: the expert without a file is reported missing by the caller.
        return {c: group[0] for c, group in (("transformer", high), ("transformer_2", low)) if group}
    raise ModelFolderError(
        f"{where}: a two-expert model needs one high-noise and one low-noise checkpoint (file names containing "
        f"'high' and 'low'), found {', '.join(p.name for p in files)}"
    )


def _partner_file(path: Path) -> Path | None:
    """The other expert of a high/low pair named alike (`..._high_noise_...` <-> `..._low_noise_...`)."""
    name = path.name
    for a, b in (("high", "low"), ("low", "high"), ("HIGH", "LOW"), ("LOW", "HIGH")):
        if a in name:
            other = path.with_name(name.replace(a, b, 1))
            return other if other.is_file() else None
    return None


def index_experts(folder: Path) -> int:
    """How many transformers a diffusers folder's model_index.json names (Wan2.2 A14B names transformer_2)."""
    index = json.loads((folder / "model_index.json").read_text())
    entry = index.get("transformer_2")
    return 2 if entry and entry[0] is not None else 1


def _check_kind(folder: Path, preset: ModelPreset) -> None:
    if not (folder / "model_index.json").is_file():
        return
    experts = index_experts(folder)
    if experts == preset.num_experts:
        return
    if experts == 2:
        raise ModelFolderError(
            f"{folder} holds a two-expert Wan2.2 A14B model (its model_index.json names transformer_2); preset "
            f"{preset.name!r} runs one transformer and would use only the high-noise expert: choose the preset "
            "'wan2.2-t2v-a14b' (or a HoloCine preset) for this folder"
        )
    raise ModelFolderError(
        f"{folder} holds a one-transformer model (its model_index.json names no transformer_2); preset "
        f"{preset.name!r} needs Wan2.2 A14B's two experts (transformer/ and transformer_2/, or a high-noise and a "
        "low-noise checkpoint file)"
    )


def _inspect(
    folder: Path, preset: ModelPreset, explicit_file: Path | None = None, extra_dirs: tuple[Path, ...] = ()
) -> tuple[ModelLocation | None, str]:
    """(location, '') when `folder` has everything the preset needs, else (None, what is missing there)."""
    if not folder.is_dir():
        return None, "not found"
    _check_kind(folder, preset)
    missing = [
        n
        for n in ("model_index.json", "tokenizer/", "text_encoder/", "vae/", "scheduler/")
        if not (folder / n.rstrip("/")).exists()
    ]
    if explicit_file is not None:
        checkpoints = {"transformer": explicit_file}
        if preset.num_experts == 2:
            partner = _partner_file(explicit_file)
            if partner is None:
                raise ModelFolderError(
                    f"{explicit_file}: preset {preset.name!r} has two experts; put the other expert's file (same "
                    "name with 'high' and 'low' swapped) beside it"
                )
            high, low = sorted([explicit_file, partner], key=lambda p: "low" in p.name.lower())
            checkpoints = {"transformer": high, "transformer_2": low}
    else:
        extra = [p for d in extra_dirs if d.is_dir() for p in sorted(d.glob("*.safetensors"))]
        checkpoints = _expert_files(preset, _single_files(folder) + extra, folder)
    for component in expert_components(preset):
        if component in checkpoints:
            if not (folder / component / "config.json").is_file():
                missing.append(f"{component}/config.json (the config {checkpoints[component].name} is loaded with)")
        elif preset.checkpoints_required:
            missing.append(preset.checkpoint_files[expert_components(preset).index(component)])
        elif not _has_diffusers_weights(folder / component):
            named = (
                preset.checkpoint_files[expert_components(preset).index(component)] if preset.checkpoint_files else ""
            )
            missing.append(f"{component}/" + (f" (or {named})" if named else ""))
    if missing:
        return None, "missing: " + ", ".join(missing)
    return ModelLocation(folder, checkpoints), ""


def expected_layout(preset: ModelPreset) -> str:
    """The files a preset's folder must hold, in words (the missing-weights message and the model list)."""
    components = ["model_index.json", "tokenizer/", "text_encoder/", "vae/", "scheduler/"]
    experts = [f"{c}/" for c in expert_components(preset)]
    names = ", ".join(preset.checkpoint_files) or "one .safetensors file"
    if preset.checkpoints_required:
        configs = ", ".join(c + "config.json" for c in experts)
        return f"the diffusers folder of {preset.repo_id} ({', '.join(components)}, {configs}) and the files {names}"
    return (
        f"the diffusers folder of {preset.repo_id} ({', '.join(components + experts)}); instead of the weights in "
        f"{' and '.join(experts)} the folder may hold single-file checkpoints ({names}) beside "
        f"{' and '.join(c + 'config.json' for c in experts)}"
    )


def candidate_folders(preset: ModelPreset, model_root: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """Folders searched for a preset under the model root, in order: `<root>/<preset>/`, `<root>/<repo name>/`."""
    if model_root is None:
        return []
    root = Path(model_root).expanduser()
    names = [preset.name] + ([preset.repo_id.split("/")[-1]] if preset.repo_id else []) + list(preset.also_in)
    return [(root / name, "model folder") for name in dict.fromkeys(names)]


def checkpoint_folders(preset: ModelPreset, model_root: str | os.PathLike | None) -> tuple[Path, ...]:
    """Folders under the model root searched for the preset's named checkpoint files (beside its diffusers folder
    too)."""
    if model_root is None:
        return ()
    return tuple(Path(model_root).expanduser() / name for name in preset.checkpoint_dirs)


def find_model(
    preset: ModelPreset,
    model_dir: str | os.PathLike | None = None,
    model_root: str | os.PathLike | None = None,
) -> ModelLocation:
    """Where `preset`'s weights are on this machine, or `ModelWeightsMissingError` listing every place searched.

    `model_dir`: this preset's folder, or one of its `.safetensors` transformer checkpoints (its folder is then
    the diffusers folder); nothing else is searched. Otherwise `model_root/<preset>/`, `model_root/<repo name>/`
    (what `huggingface-cli download --local-dir` makes) and the Hugging Face cache, offline.
    """
    searched: list[str] = []
    if model_dir is None and model_root is not None and Path(model_root).expanduser().is_file():
        model_dir = model_root  # STUDIO_MODEL_DIR naming one checkpoint file: that file, in its folder
    if model_dir is not None:
        path = Path(model_dir).expanduser()
        if path.is_file():
            folder = path.parent.parent if path.parent.name in ("transformer", "transformer_2") else path.parent
            location, problem = _inspect(folder, preset, explicit_file=path)
            searched.append(f"{folder} (folder of {path.name}): {problem}")
        else:
            location, problem = _inspect(path, preset)
            searched.append(f"{path}: {problem}")
        if location is not None:
            location.how = "model_dir"
            return location
    else:
        extra_dirs = checkpoint_folders(preset, model_root)
        for folder, how in candidate_folders(preset, model_root):
            location, problem = _inspect(folder, preset, extra_dirs=extra_dirs)
            if location is not None:
                location.how = how
                return location
            searched.append(f"{folder}: {problem}")
        if preset.repo_id:
            location, problem = _hf_cache_location(preset, extra_dirs)
            if location is not None:
                return location
            searched.append(f"the Hugging Face cache {hf_cache_folder(preset.repo_id)}: {problem}")
    download = ""
    if preset.repo_id:
        # A fine-tune's base folder goes under its repo name, where every preset on that base finds it; its own
        # transformer weights are not used, so they need not be downloaded.
        name = preset.repo_id.split("/")[-1] if preset.checkpoints_required else preset.name
        target = Path(model_root) / name if model_root is not None else f"MODEL_DIR/{name}"
        skip = ' --exclude "transformer*/diffusion_pytorch_model*"' if preset.checkpoints_required else ""
        download = f"`huggingface-cli download {preset.repo_id} --local-dir {target}{skip}`"
    raise ModelWeightsMissingError(
        f"weights for model preset {preset.name!r} are missing (nothing is downloaded at run time). Searched: "
        + "; ".join(searched)
        + f". Expected in one of them: {expected_layout(preset)}."
        + (f" Get the folder with {download}." if download else "")
        + (f" {preset.downloads}" if preset.downloads else "")
    )


def _hf_cache_location(preset: ModelPreset, extra_dirs: tuple[Path, ...] = ()) -> tuple[ModelLocation | None, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_folder = hf_cache_folder(preset.repo_id)
    try:
        folder = Path(snapshot_download(preset.repo_id, cache_dir=cache_folder.parent, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        return None, f"no snapshot of {preset.repo_id}"
    location, problem = _inspect(folder, preset, extra_dirs=extra_dirs)
    if location is not None:
        location.how = f"Hugging Face cache snapshot of {preset.repo_id}"
    return location, problem


def load_components_from_folder(
    folder: str | os.PathLike, dtype: torch.dtype = torch.float32, checkpoints: dict[str, Path] | None = None
) -> dict:
    """Load `tokenizer, text_encoder, vae, transformer, scheduler` (and Wan2.2 A14B's `transformer_2` and
    `boundary_ratio`) from a diffusers folder, offline; `checkpoints` replaces experts' weights by single files.

    The classes come from `model_index.json` (diffusers/transformers classes only). The VAE stays in float32,
    as Wan's authors recommend (decoding in half precision bands the output).
    """
    from .checkpoints import load_transformer_checkpoint

    folder = Path(folder)
    checkpoints = checkpoints or {}
    index = json.loads((folder / "model_index.json").read_text())
    names = list(COMPONENTS)
    if index_experts(folder) == 2 or "transformer_2" in checkpoints:
        names.append("transformer_2")
    components = {}
    for name in names:
        if name in checkpoints:
            logger.info("loading %s from the single file %s", name, checkpoints[name])
            components[name] = load_transformer_checkpoint(checkpoints[name], folder / name, dtype)
            continue
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
        if name in ("tokenizer", "scheduler"):
            components[name] = cls.from_pretrained(path, local_files_only=True)
        else:
            model_dtype = torch.float32 if name == "vae" else dtype
            model = cls.from_pretrained(path, torch_dtype=model_dtype, local_files_only=True, use_safetensors=True)
            components[name] = model.eval()
    if "transformer_2" in components:
        components["boundary_ratio"] = index.get("boundary_ratio")
    return components


def _scheduler_with_shift(scheduler, flow_shift: float):
    """Set a flow-matching shift on whichever flow scheduler the folder ships."""
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


def _local_scheduler(scheduler, preset: ModelPreset, flow_shift: float | None, folder: Path):
    """The scheduler a local preset runs: the folder's own UniPC flow scheduler with its own shift, unless the
    project sets a shift (`flow_shift`) or the preset's shift is part of the model (`force_flow_shift`). A folder
    that ships another scheduler gets Wan's UniPC flow scheduler, and the log says so."""
    from diffusers import UniPCMultistepScheduler

    if not isinstance(scheduler, UniPCMultistepScheduler) or not scheduler.config.get("use_flow_sigmas"):
        shift = flow_shift if flow_shift is not None else preset.flow_shift
        logger.warning(
            "%s ships %s; preset %s runs Wan's UniPC flow-matching scheduler (flow_shift %s) instead",
            folder / "scheduler",
            type(scheduler).__name__,
            preset.name,
            shift,
        )
        return _wan_unipc(shift)
    own = scheduler.config.get("flow_shift")
    shift = flow_shift if flow_shift is not None else (preset.flow_shift if preset.force_flow_shift else own)
    if shift != own:
        reason = "the project's" if flow_shift is not None else f"preset {preset.name}'s"
        logger.info("flow_shift %s (%s) replaces the folder's %s", shift, reason, own)
        return _scheduler_with_shift(scheduler, shift)
    return scheduler


def load_pipeline(
    preset_name: str,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    offload: str = "none",
    vae_tiling: bool = False,
    model_dir: str | os.PathLike | None = None,
    model_root: str | os.PathLike | None = None,
    flow_shift: float | None = None,
    fp8_storage: bool = False,
):
    """Build the `MultiShotPipeline` of a preset, on `device`, ready to call.

    - "tiny": random weights built in code (`pipelines.tiny`);
    - "demo": the bundled diffusers folder `assets/demo/` (or `model_dir`);
    - real presets: found by `find_model` (`model_dir`, else `model_root/<preset>/`, `model_root/<repo name>/`,
      the Hugging Face cache; offline), single-file checkpoints included; the folder's UniPC scheduler keeps its
      own `flow_shift` unless `flow_shift` is given.
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
        components["scheduler"] = _scheduler_with_shift(components["scheduler"], flow_shift or preset.flow_shift)
        for name in ("text_encoder", "transformer"):
            components[name] = components[name].to(dtype)
    elif preset.source == "bundled":
        folder = Path(model_dir) if model_dir is not None else DEMO_MODEL_DIR
        _require_folder(folder, preset, "the bundled demo model; it ships in assets/demo/")
        components = load_components_from_folder(folder, dtype)
        components["scheduler"] = _scheduler_with_shift(components["scheduler"], flow_shift or preset.flow_shift)
    else:
        location = find_model(preset, model_dir=model_dir, model_root=model_root)
        logger.info("preset %s: weights from %s (%s)", preset.name, location.folder, location.how)
        components = load_components_from_folder(location.folder, dtype, location.checkpoints)
        components["scheduler"] = _local_scheduler(components["scheduler"], preset, flow_shift, location.folder)
        if preset.num_experts == 2 and components.get("boundary_ratio") is None:
            components["boundary_ratio"] = preset.boundary_ratio

    if preset.pipeline == "holocine":
        from .holocine import HoloCineFlowScheduler, HoloCinePipeline

        pipeline_class = HoloCinePipeline
        # HoloCine's own sampler (Euler, its sigma schedule, shift 5) replaces the base folder's UniPC.
        components["scheduler"] = HoloCineFlowScheduler(shift=preset.flow_shift if flow_shift is None else flow_shift)
        logger.info("preset %s samples with HoloCine's Euler schedule (shift %s)", preset.name, preset.flow_shift)
    else:
        pipeline_class = MultiShotPipeline
    pipe = pipeline_class(
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
