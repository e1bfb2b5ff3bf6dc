"""Device and dtype choice for the worker: CUDA bf16 > MPS fp16 > CPU fp32, each overridable by settings."""

from __future__ import annotations

import gc

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def select_device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The settings' `device` and `dtype` ("auto" or a name) as torch objects: CUDA bf16 > MPS fp16 > CPU fp32.

    The pipeline package decides (one rule for the worker, `render` and the pipeline tests); a bad name raises
    a ValueError that says what to use instead.
    """
    from pipelines.loading import select_device_and_dtype as pipelines_select

    return pipelines_select(device, dtype)


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
