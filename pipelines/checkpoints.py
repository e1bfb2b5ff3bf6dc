"""Single-file Wan transformer checkpoints: the files film-makers download (ComfyUI repackages, HoloCine experts).

A single file holds one transformer in Wan's original key names (`blocks.0.self_attn.q.weight`, ...), with or
without ComfyUI's `model.diffusion_model.` prefix, or in diffusers' names. It is loaded with diffusers'
`WanTransformer3DModel.from_single_file` against the diffusers config of the preset's folder (`transformer/`,
`transformer_2/`), offline. Before anything is built the file is checked, so a bad file is refused naming it:

- only `.safetensors` are read (a pickle can run code);
- a truncated download (the header promises more bytes than the file has);
- a file for another architecture (a VAE, a text encoder, a LoRA, an image-to-video model);
- a file for another model size (layer shapes that differ from the config's).

ComfyUI's fp8 files are dequantised to the run dtype: `*_fp8_e4m3fn` by a cast, `*_fp8_scaled` by multiplying each
weight by its `.scale_weight` (the `scaled_fp8` marker and `.scale_input` entries are dropped).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
# Key fragments that say what else a file may be, for the refusal message.
_OTHER_ARCHITECTURES = (
    ("lora_", "a LoRA adapter (load it as a character adapter, not as the model)"),
    ("lora_down", "a LoRA adapter (load it as a character adapter, not as the model)"),
    ("encoder.block.", "a T5 text encoder"),
    ("shared.weight", "a T5 text encoder"),
    ("decoder.conv_in", "a VAE"),
    ("encoder.conv1", "a VAE"),
    ("img_emb.", "an image-to-video Wan model (it has an image embedder); use a text-to-video checkpoint"),
    ("k_img.", "an image-to-video Wan model (it has image cross-attention); use a text-to-video checkpoint"),
    ("vace_blocks.", "a Wan VACE model"),
    ("double_blocks.", "a Flux/Hunyuan-style model, not Wan"),
    ("input_blocks.", "a Stable Diffusion UNet, not Wan"),
)
_FP8_DTYPES = tuple(getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name))


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file, why, and what to do."""


def read_safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a `.safetensors` file, after checking the file holds every byte it promises."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"{path}: only .safetensors checkpoints are read (a {path.suffix or 'suffix-less'} file may run code "
            "when loaded); download the .safetensors version of this model"
        )
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes); download it again")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 * 1024 * 1024):
            raise CheckpointError(f"{path} is not a safetensors file, or its header is cut off; download it again")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path} has a corrupt safetensors header; download it again") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} has a corrupt safetensors header; download it again")
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise CheckpointError(
            f"{path} is truncated: its header describes {expected} bytes but the file has {size} "
            f"({100 * size / expected:.0f}%); the download stopped early, download it again"
        )
    return header


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            return {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
    return state_dict


def _dequantise(state_dict: dict[str, torch.Tensor], dtype: torch.dtype, path: Path) -> dict[str, torch.Tensor]:
    """ComfyUI fp8 weights to `dtype`: scaled ones times their `.scale_weight`, plain fp8 by a cast."""
    scaled = "scaled_fp8" in state_dict or any(k.endswith(".scale_weight") for k in state_dict)
    out = {}
    for key, tensor in state_dict.items():
        if key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input")):
            continue
        if tensor.dtype in _FP8_DTYPES:
            value = tensor.to(torch.float32)
            scale = state_dict.get(key.removesuffix(".weight") + ".scale_weight") if scaled else None
            if scale is not None:
                scale = scale.to(torch.float32)
                if scale.numel() not in (1, value.shape[0]):
                    raise CheckpointError(
                        f"{path}: fp8 scale of {key} has shape {tuple(scale.shape)}, which fits neither the whole "
                        f"tensor nor its rows {tuple(value.shape)}; use the bf16/fp16 version of this checkpoint"
                    )
                value = value * (scale.reshape(-1, *([1] * (value.ndim - 1))) if scale.numel() > 1 else scale)
            tensor = value.to(dtype)
        out[key] = tensor  # other tensors keep their dtype: from_single_file casts them (fp32 modules stay fp32)
    if scaled:
        logger.info("dequantised the fp8-scaled weights of %s to %s", path.name, dtype)
    return out


def _describe_other(keys: list[str]) -> str | None:
    for fragment, what in _OTHER_ARCHITECTURES:
        if any(fragment in k for k in keys):
            return what
    return None


def is_original_wan_format(keys) -> bool:
    keys = set(keys)
    return "patch_embedding.weight" in keys and any(k.startswith("blocks.0.self_attn.") for k in keys)


def to_diffusers_keys(state_dict: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The transformer's weights in diffusers' names (diffusers' own `convert_wan_transformer_to_diffusers`)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    keys = list(state_dict)
    other = _describe_other(keys)
    if other is not None:
        raise CheckpointError(f"{path} is {other}, not a Wan text-to-video transformer")
    if "condition_embedder.time_embedder.linear_1.weight" in state_dict:
        return state_dict
    if not is_original_wan_format(keys):
        sample = ", ".join(sorted(keys)[:3])
        raise CheckpointError(
            f"{path} is not a Wan transformer checkpoint (its tensors are named like {sample}); expected Wan's "
            "original names (blocks.0.self_attn.q.weight, ...) or diffusers' (blocks.0.attn1.to_q.weight, ...)"
        )
    return convert_wan_transformer_to_diffusers(dict(state_dict))


def check_against_config(state_dict: dict[str, torch.Tensor], config: dict, path: Path) -> None:
    """Refuse a file whose tensors do not fit the model the config describes (another size, another model)."""
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        model = WanTransformer3DModel.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    width = config.get("num_attention_heads", 0) * config.get("attention_head_dim", 0)
    size = f"{config.get('num_layers')} blocks of {width}"
    file_blocks = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    query = state_dict.get("blocks.0.attn1.to_q.weight")
    described = f"{file_blocks} blocks" + (f" of {query.shape[0]}" if query is not None else "")
    wrong = [k for k, shape in expected.items() if k in state_dict and tuple(state_dict[k].shape) != shape]
    if wrong:
        # Name a layer a reader recognises (the first block's query) when it is among the mismatches.
        key = min(wrong, key=lambda k: k != "blocks.0.attn1.to_q.weight")
        raise CheckpointError(
            f"{path} is for another model size: {key} is {list(state_dict[key].shape)} in the file but "
            f"{list(expected[key])} in this preset's model ({size}; the file has {described}); use the checkpoint "
            "made for this preset"
        )
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        detail = f"lacks {', '.join(missing[:3])}" if missing else f"has extra {', '.join(unexpected[:3])}"
        more = " and more" if len(missing) > 3 or len(unexpected) > 3 else ""
        raise CheckpointError(
            f"{path} does not fit this preset's transformer ({size}; the file has {described}): it {detail}{more}; "
            "use the checkpoint made for this preset"
        )


def load_transformer_checkpoint(path: str | os.PathLike, config_folder: str | os.PathLike, dtype: torch.dtype):
    """`WanTransformer3DModel` from the single file `path`, configured by `config_folder/config.json`, offline."""
    from diffusers import WanTransformer3DModel
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path, config_folder = Path(path), Path(config_folder)
    read_safetensors_header(path)
    if not (config_folder / "config.json").is_file():
        raise CheckpointError(
            f"{path} needs the transformer's diffusers config {config_folder / 'config.json'} beside it (the small "
            "config.json of the model's diffusers repository); it is missing"
        )
    try:
        raw = load_file(str(path))
    except SafetensorError as error:
        raise CheckpointError(f"{path} cannot be read as safetensors ({error}); download it again") from None
    state_dict = _dequantise(_strip_prefix(raw), dtype, path)
    del raw
    state_dict = to_diffusers_keys(state_dict, path)
    config = WanTransformer3DModel.load_config(config_folder, local_files_only=True)
    check_against_config(state_dict, config, path)
    model = WanTransformer3DModel.from_single_file(
        state_dict,
        config=str(config_folder.parent),
        subfolder=config_folder.name,
        local_files_only=True,
        torch_dtype=dtype,
    )
    return model.eval()
