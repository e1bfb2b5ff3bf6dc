"""Import existing Wan LoRA files as character adapters: `.safetensors` only, checked before anything is stored.

Accepted key layouts (all normalised to diffusers' `transformer.blocks.N.attn1.to_q.lora_A.weight`):
- diffusers: `transformer.blocks.N.attn1.to_q.lora_A.weight` (what `save_lora_weights` and Shotline write);
- original Wan / ComfyUI: `diffusion_model.blocks.N.self_attn.q.lora_A.weight` (or `lora_down`/`lora_up`, with
  optional `.alpha`), also without the `diffusion_model.` prefix;
- musubi-tuner / kohya: `lora_unet_blocks_N_self_attn_q.lora_down.weight` with `.alpha`;
- bare peft: `base_model.model.blocks.N.attn1.to_q.lora_A.weight` or `blocks.N.attn1.to_q.lora_A.weight`.
Refused with a clear `AdapterImportError`: pickles (`.pt`, `.pth`, `.ckpt`, `.bin`, `.pkl`, or pickle/zip bytes
under any name), broken safetensors headers, files with no LoRA tensors, and LoRAs whose layers do not exist in
the target transformer or have other shapes (an adapter for another model).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adapters.common import SHOTLINE_METADATA_KEY

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
# Layers outside the per-token stream: the time embedding acts on the timestep every shot shares, so a character
# LoRA there would change every shot (pipelines.adapter_scope masks per token). Step-distillation ("accelerator")
# LoRAs such as lightx2v and CausVid train these on purpose.
SHARED_LAYER_PREFIXES = ("condition_embedder.time_embedder.", "condition_embedder.time_proj")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
MAX_HEADER_DEPTH = 8  # tensors -> entry -> shape is 3 levels; metadata is 2
_PICKLE_ADVICE = (
    "pickles can run code when loaded, so only .safetensors adapters are accepted: convert it with "
    "safetensors.torch.save_file first"
)
_SAFETENSORS_DTYPES = frozenset(
    ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "F8_E4M3", "F8_E5M2")
)


class AdapterImportError(ValueError):
    """An adapter file that cannot be imported; the message says why and what to do instead."""


@dataclass
class ImportedLora:
    state_dict: dict[str, torch.Tensor]  # diffusers layout, `transformer.`-prefixed
    layout: str  # which layout the file came in
    rank: int
    modules: list[str]  # transformer module names the LoRA touches
    source_metadata: dict = field(default_factory=dict)  # the file's safetensors header metadata
    peft_metadata: dict | None = None  # `lora_adapter_metadata`, when the file carried it
    # full-weight differences of norm layers (`blocks.0.norm3.diff`): diffusers' Wan LoRA loader carries none of them
    norm_differences: list[str] = field(default_factory=list)

    @property
    def shared_modules(self) -> list[str]:
        """Modules the LoRA touches that act on what every shot shares (the time embedding)."""
        return [m for m in self.modules if m.startswith(SHARED_LAYER_PREFIXES)]

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


def _is_pickle(data: bytes) -> bool:
    """A pickle's opening (PROTO opcode 0x80 with protocol 2-5) or torch.save's zip container."""
    return (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) or data[:4] == b"PK\x03\x04"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _nested_deeper_than(value: object, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def check_safetensors_bytes(data: bytes, filename: str = "adapter") -> dict:
    """Validate the safetensors container as the format defines it and return the header.

    The file is an 8-byte little-endian header length N (1..MAX_HEADER_BYTES, within the file), N bytes of UTF-8
    JSON starting with '{' (an object at most MAX_HEADER_DEPTH levels deep), then the tensor data the header's
    offsets point into. Only bytes that are not a safetensors file are sniffed for pickles, so a valid file is
    accepted whatever its header length's bytes are.
    """
    name = Path(filename).name
    if len(data) < 8:
        if _is_pickle(data):
            raise AdapterImportError(f"{name} is a PyTorch pickle, not safetensors; {_PICKLE_ADVICE}")
        raise AdapterImportError(f"{name} is not a safetensors file: it is only {len(data)} bytes long")
    (header_len,) = struct.unpack("<Q", data[:8])
    if not (0 < header_len <= MAX_HEADER_BYTES and 8 + header_len <= len(data) and data[8:9] == b"{"):
        if _is_pickle(data):
            raise AdapterImportError(f"{name} is a PyTorch pickle, not safetensors; {_PICKLE_ADVICE}")
        raise AdapterImportError(
            f"{name} has a corrupt safetensors header (declared length {header_len}, file {len(data)} bytes): "
            "the file is damaged or not safetensors; download or export it again"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except RecursionError:
        header = None  # nested past the interpreter's limit: refused below like any header too deep
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AdapterImportError(
            f"{name} has a corrupt safetensors header ({error.__class__.__name__}); download or export it again"
        ) from None
    if header is None or _nested_deeper_than(header, MAX_HEADER_DEPTH):
        raise AdapterImportError(
            f"{name} has a corrupt safetensors header: its JSON is nested deeper than {MAX_HEADER_DEPTH} levels "
            "(a real header has 3); download or export it again"
        )
    if not isinstance(header, dict):
        raise AdapterImportError(f"{name} has a corrupt safetensors header (not a JSON object)")
    body = len(data) - 8 - header_len
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise AdapterImportError(
                    f"{name} has a corrupt safetensors header: __metadata__ must map text to text"
                )
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise AdapterImportError(
                f"{name} has a corrupt safetensors header: bad entry for tensor {key!r}"
            ) from None
        if (
            dtype not in _SAFETENSORS_DTYPES
            or not isinstance(shape, list)
            or not all(_is_count(d) for d in shape)
            or not (_is_count(start) and _is_count(end))
        ):
            raise AdapterImportError(f"{name} has a corrupt safetensors header: bad dtype/shape for tensor {key!r}")
        if not start <= end <= body:
            raise AdapterImportError(
                f"{name} is truncated or corrupt: tensor {key!r} lies outside the file's data; download it again"
            )
    return header


def _load_tensors(data: bytes, filename: str) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    header = check_safetensors_bytes(data, filename)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise AdapterImportError(f"{Path(filename).name} could not be read as safetensors: {error}") from None
    return tensors, dict(header.get("__metadata__") or {})


def _to_diffusers_layout(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    from diffusers import WanPipeline

    keys = list(tensors)
    if all(k.startswith("transformer.") for k in keys):
        return dict(tensors), "diffusers"
    if any(k.startswith("diffusion_model.") for k in keys):
        layout, converted = "wan-original", tensors
    elif any(k.startswith("lora_unet_") for k in keys):
        layout, converted = "musubi", tensors
    elif any(k.startswith("base_model.model.") for k in keys):
        stripped = {k.removeprefix("base_model.model."): v for k, v in tensors.items()}
        return {f"transformer.{k}": v for k, v in stripped.items()}, "peft"
    elif any(k.startswith("blocks.") for k in keys):
        if any(".self_attn." in k or ".cross_attn." in k for k in keys):
            layout, converted = "wan-original", {f"diffusion_model.{k}": v for k, v in tensors.items()}
        else:
            return {f"transformer.{k}": v for k, v in tensors.items()}, "peft"
    else:
        raise AdapterImportError(
            "no Wan LoRA layers found (expected keys like 'diffusion_model.blocks.0.self_attn.q.lora_A.weight' or "
            "'transformer.blocks.0.attn1.to_q.lora_A.weight'): this is not a Wan LoRA"
        )
    try:
        state = WanPipeline.lora_state_dict(dict(converted))
    except Exception as error:  # diffusers' converters raise assorted errors on unexpected keys
        raise AdapterImportError(f"the {layout} LoRA layout could not be converted: {error}") from None
    return state, layout


_MODULE_RE = re.compile(r"^transformer\.(?P<module>.+)\.lora_(?P<part>A|B)\.(?P<param>weight|bias)$")


def expected_linear_shapes(transformer_or_config) -> dict[str, tuple[int, int]]:
    """`{module_name: (in_features, out_features)}` for every Linear of a Wan transformer: from the module itself,
    or from its config alone (built on the meta device, so checking a 14B adapter costs no memory)."""
    if isinstance(transformer_or_config, torch.nn.Module):
        model = transformer_or_config
    else:
        from accelerate import init_empty_weights
        from diffusers import WanTransformer3DModel

        with init_empty_weights():
            model = WanTransformer3DModel.from_config(dict(transformer_or_config))
    shapes = {}
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", module)  # a transformer that already carries peft layers
        if isinstance(base, torch.nn.Linear):
            shapes[name.replace(".base_layer", "")] = (base.in_features, base.out_features)
    return shapes


def check_compatibility(state_dict: dict[str, torch.Tensor], transformer_or_config) -> tuple[int, list[str]]:
    """Every LoRA layer must name a Linear of the transformer with matching widths; return (rank, modules)."""
    shapes = expected_linear_shapes(transformer_or_config)
    num_blocks = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    modules, ranks, unknown = set(), set(), []
    for key, tensor in sorted(state_dict.items()):
        match = _MODULE_RE.match(key)
        if not match:
            raise AdapterImportError(f"unexpected tensor {key!r}: only LoRA A/B matrices are supported")
        module, part, param = match["module"], match["part"], match["param"]
        if module not in shapes:
            unknown.append(module)
            continue
        in_features, out_features = shapes[module]
        if param == "bias":
            expected = (out_features,)
            ok = part == "B" and tuple(tensor.shape) == expected
        elif part == "A":
            ok = tensor.dim() == 2 and tensor.shape[1] == in_features
            ranks.add(int(tensor.shape[0]))
        else:
            ok = tensor.dim() == 2 and tensor.shape[0] == out_features
            ranks.add(int(tensor.shape[1]))
        if not ok:
            raise AdapterImportError(
                f"this LoRA was made for another model: layer {module} has shape {tuple(tensor.shape)} but the "
                f"model's layer is {in_features} -> {out_features}; use a LoRA trained for this model preset"
            )
        modules.add(module)
    if unknown:
        example = sorted(unknown)[0]
        raise AdapterImportError(
            f"this LoRA was made for another model: {len(unknown)} of its layers (e.g. {example}) do not exist in "
            f"this model ({num_blocks} blocks); use a LoRA trained for this model preset"
        )
    if not modules:
        raise AdapterImportError("the file holds no LoRA layers")
    if len(ranks) > 1:
        # peft supports per-module ranks (rank_pattern); record the largest as the adapter's rank.
        pass
    return max(ranks) if ranks else 0, sorted(modules)


def inspect_lora(data: bytes | str | Path, filename: str | None = None, transformer_or_config=None) -> ImportedLora:
    """Read, validate and normalise a LoRA file; with `transformer_or_config`, also check it fits that model."""
    if isinstance(data, str | Path):
        filename = filename or Path(data).name
        path = Path(data)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise AdapterImportError(
                f"{path.name}: {path.suffix} files are pickles that can run code when loaded; only .safetensors "
                "adapters are accepted"
            )
        data = path.read_bytes()
    filename = filename or "adapter.safetensors"
    suffix = Path(filename).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise AdapterImportError(
            f"{Path(filename).name}: {suffix} files are pickles that can run code when loaded; only .safetensors "
            "adapters are accepted"
        )
    if suffix != ".safetensors":
        raise AdapterImportError(f"{Path(filename).name}: only .safetensors adapter files are accepted")
    tensors, metadata = _load_tensors(bytes(data), filename)
    if not tensors:
        raise AdapterImportError(f"{Path(filename).name} holds no tensors")
    if not any("lora" in k for k in tensors):
        raise AdapterImportError(
            f"{Path(filename).name} holds no LoRA tensors (no 'lora_A'/'lora_down' keys): it may be a full model "
            "checkpoint, not an adapter"
        )
    norm_differences = sorted(k for k in tensors if k.endswith(".diff") or ("norm" in k and k.endswith(".diff_b")))
    state, layout = _to_diffusers_layout(tensors)
    state = {k: v for k, v in state.items() if "lora" in k}
    if any(k.endswith(".lora_B.bias") for k in state):
        # peft gives every layer of an adapter a bias once one has it (`diff_b`); a layer without one gets zeros,
        # which is what it had, instead of an uninitialised tensor.
        for key in [k for k in state if k.endswith(".lora_B.weight")]:
            bias = key.removesuffix("weight") + "bias"
            if bias not in state:
                state[bias] = state[key].new_zeros(state[key].shape[0])
    peft_metadata = None
    if "lora_adapter_metadata" in metadata:
        try:
            peft_metadata = json.loads(metadata["lora_adapter_metadata"])
        except json.JSONDecodeError:
            raise AdapterImportError(f"{Path(filename).name} has unreadable LoRA metadata in its header") from None
    if transformer_or_config is not None:
        rank, modules = check_compatibility(state, transformer_or_config)
    else:
        modules = sorted({m["module"] for k in state if (m := _MODULE_RE.match(k))})
        rank = max((int(v.shape[0]) for k, v in state.items() if ".lora_A." in k), default=0)
    return ImportedLora(
        state_dict=state,
        layout=layout,
        rank=rank,
        modules=modules,
        source_metadata=metadata,
        peft_metadata=peft_metadata,
        norm_differences=norm_differences,
    )


def normalised_lora_bytes(imported: ImportedLora, info: dict) -> bytes:
    """The imported LoRA re-written in diffusers layout (what the studio stores and the loader reads), keeping
    the file's own peft metadata (rank/alpha) when it had one."""
    from safetensors.torch import save

    metadata = {"format": "pt", SHOTLINE_METADATA_KEY: json.dumps(info, sort_keys=True)}
    if imported.peft_metadata and imported.layout == "diffusers":
        metadata["lora_adapter_metadata"] = json.dumps(imported.peft_metadata, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in imported.state_dict.items()}
    return save(tensors, metadata=metadata)


def refuse_unscoped_layers(imported: ImportedLora, name: str) -> None:
    """A character's LoRA must act per token, so that it changes only its character's shots: refuse one that
    changes the time embedding (shared by every shot) or carries norm-weight differences (which diffusers does not
    load), instead of leaking it into the other shots or dropping part of it silently."""
    if imported.shared_modules:
        raise AdapterImportError(
            f"{name} changes {imported.shared_modules[0]}, the time embedding every shot shares, so it cannot be "
            "limited to this character's shots; a step-distillation LoRA (lightx2v, CausVid) belongs to the whole "
            "film, not a character; for a character use a LoRA of the attention and feed-forward layers"
        )
    if imported.norm_differences:
        raise AdapterImportError(
            f"{name} carries {len(imported.norm_differences)} full-weight norm difference(s) (e.g. "
            f"{imported.norm_differences[0]}), which diffusers' Wan LoRA loader does not apply; a character LoRA "
            "must be LoRA matrices (and biases) only"
        )


def import_lora(
    data: bytes | str | Path,
    transformer_or_config,
    filename: str | None = None,
    trigger: str | None = None,
    trigger_text: str | None = None,
    preset: str | None = None,
) -> tuple[bytes, ImportedLora]:
    """Validate a LoRA file against the target model and return (normalised .safetensors bytes, what was found).

    `trigger_text` is the word(s) the LoRA's author trained it to answer to; captions get it in place of the
    character's trigger (default: the trigger without brackets).
    """
    from adapters.common import trigger_text as default_trigger_text

    imported = inspect_lora(data, filename, transformer_or_config)
    refuse_unscoped_layers(imported, Path(filename or "adapter.safetensors").name)
    info = {
        "kind": "imported",
        "layout": imported.layout,
        "rank": imported.rank,
        "modules": len(imported.modules),
        "source_file": Path(filename or (str(data) if isinstance(data, str | Path) else "adapter")).name,
        "trigger": trigger,
        "trigger_text": trigger_text or (default_trigger_text(trigger) if trigger else None),
        "preset": preset,
    }
    return normalised_lora_bytes(imported, info), imported
