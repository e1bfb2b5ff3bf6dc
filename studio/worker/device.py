"""Device and dtype choice for the worker: CUDA bf16 > MPS fp16 > CPU fp32, each overridable by settings."""

from __future__ import annotations

import gc

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def select_device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Resolve the settings' `device` and `dtype` ("auto" or a name) to torch objects.

    Uses the pipeline package's choice when it provides one, so the worker and `python -m studio render` agree
    with what the pipeline tests run on; the fallback below follows DESIGN.md section 6.
    """
    try:
        from pipelines import select_device_and_dtype as pipelines_select
    except ImportError:
        pipelines_select = None
    if pipelines_select is not None:
        return pipelines_select(device, dtype)

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device auto or cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but this machine has no MPS; use --device auto or cpu")
    if dtype == "auto":
        dtype = {"cuda": "bf16", "mps": "fp16"}.get(device, "fp32")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}")
    return torch.device(device), DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def free_device_memory(device: torch.device | str | None = None) -> None:
    """Return cached allocator blocks to the driver after dropping a pipeline or after an out-of-memory error."""
    gc.collect()
    kind = torch.device(device).type if device is not None else None
    if kind in (None, "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if (
        kind in (None, "mps")
        and getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        torch.mps.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; MPS and some kernels raise a RuntimeError that only says so in text."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "mps backend out of memory" in text)
