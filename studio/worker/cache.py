"""Warm pipelines for one worker, keyed by (preset, dtype, adapters).

Loading a real Wan model takes tens of seconds and most of the device's memory, so the worker keeps the last
pipeline loaded between jobs. It keeps ONE base model at a time: a job on another preset (or dtype) drops the old
one and frees the allocator before loading, because two 14B models never fit one card. Jobs that only differ in
their character adapters reuse the loaded base model and swap the adapters on it, which costs milliseconds
instead of a reload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from studio.worker.device import dtype_name, free_device_memory

logger = logging.getLogger(__name__)

AdapterKey = tuple  # ((adapter_id, version), ...) sorted, as recorded in the take's parameters


@dataclass
class CacheStats:
    hits: int = 0
    loads: int = 0
    adapter_swaps: int = 0
    last_load_s: float = 0.0


def default_loader(
    preset: str,
    device: torch.device,
    dtype: torch.dtype,
    offload: str,
    vae_tiling: bool,
    model_root: Path | None,
    fp8_storage: bool = False,
):
    """Load through the pipeline package. Real presets are looked for in `model_root/<preset>/`, a folder named
    after their Hugging Face repo under `model_root`, then the HF cache (`pipelines.loading.find_model`)."""
    from pipelines import load_pipeline

    return load_pipeline(
        preset,
        device=device,
        dtype=dtype,
        offload=offload,
        vae_tiling=vae_tiling,
        model_root=model_root,
        fp8_storage=fp8_storage,
    )


def default_adapter_loader(pipe, adapters: AdapterKey, context: Any) -> None:
    """Put exactly `adapters` on `pipe` (removing others); `context` (the services) gives the adapter weights."""
    if not adapters and not getattr(pipe, "_studio_adapters", ()):
        return
    from studio.characters.runtime import apply_adapters  # character area; imported only when adapters are used

    apply_adapters(pipe, adapters, context)


class PipelineCache:
    def __init__(
        self,
        device: torch.device,
        dtype: torch.dtype,
        offload: str = "none",
        vae_tiling: bool = False,
        model_root: Path | None = None,
        loader: Callable | None = None,
        adapter_loader: Callable | None = None,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload = offload
        self.vae_tiling = vae_tiling
        self.model_root = model_root
        self.loader = loader or default_loader
        self.adapter_loader = adapter_loader or default_adapter_loader
        self.stats = CacheStats()
        self._key: tuple | None = None
        self._load_key: tuple | None = None  # (offload, fp8 storage, compile, accelerator) it was loaded with
        self._pipe = None

    @property
    def key(self) -> tuple | None:
        """(preset, dtype name, adapters) of the loaded pipeline, or None."""
        return self._key

    def get(self, preset: str, adapters: AdapterKey = (), context: Any = None, acceleration=None, accelerator=None):
        """The pipeline for `preset` with `adapters` applied, loading or swapping only what differs.

        `acceleration` (`pipelines.acceleration.Acceleration`): its VRAM profile and compile need a fresh load when
        they change; step cache and attention backend are set per run (`apply_runtime`) on the loaded pipeline.
        `accelerator`: path of a step-distillation LoRA loaded for every shot, with its few-step scheduler (a
        different one, or none, loads the model again: the LoRA and scheduler are part of the loaded model).
        """
        pipe = self._get(preset, tuple(adapters), context, acceleration, accelerator)
        if acceleration is None and (
            getattr(pipe, "_step_cache_key", None) is not None
            or getattr(pipe, "_attention_backend_name", "native") != "native"
        ):
            # A caller without speed settings (adapter training) gets the plain model: cache hooks expect a
            # denoising loop's cache context, and training runs on the default attention.
            from pipelines.acceleration import Acceleration, apply_runtime

            apply_runtime(pipe, Acceleration(), 1, preset)
        return pipe

    def _get(self, preset: str, adapters: AdapterKey, context: Any, acceleration, accelerator):
        key = (preset, dtype_name(self.dtype), adapters)
        load_key = acceleration.load_key(self.offload) if acceleration is not None else (self.offload, False, False)
        load_key = (*load_key, str(accelerator) if accelerator is not None else None)
        if self._load_key != load_key:
            self.clear()
        if self._key == key:
            self.stats.hits += 1
            return self._pipe
        if self._key is not None and self._key[:2] == key[:2]:
            self.adapter_loader(self._pipe, adapters, context)
            self._pipe._studio_adapters = adapters
            self._key = key
            self.stats.adapter_swaps += 1
            return self._pipe
        self.clear()
        started = time.perf_counter()
        offload, fp8_storage, compile_blocks, accelerator_path = load_key
        logger.info("loading pipeline %s (%s) on %s, offload=%s", preset, key[1], self.device, offload)
        extra = {"fp8_storage": True} if fp8_storage else {}
        pipe = self.loader(preset, self.device, self.dtype, offload, self.vae_tiling, self.model_root, **extra)
        if accelerator_path is not None:
            from pipelines.acceleration import few_step_scheduler, load_accelerator

            pipe.accelerator_load = load_accelerator(pipe, accelerator_path)
            few_step_scheduler(pipe)
        if compile_blocks:
            from pipelines.acceleration import compile_blocks as compile_repeated_blocks

            compile_repeated_blocks(pipe)
        self._load_key = load_key
        if adapters:
            self.adapter_loader(pipe, adapters, context)
        pipe._studio_adapters = adapters
        self._pipe, self._key = pipe, key
        self.stats.loads += 1
        self.stats.last_load_s = time.perf_counter() - started
        return pipe

    def clear(self) -> None:
        """Drop the loaded pipeline and give its memory back (preset change, out-of-memory, shutdown)."""
        if self._pipe is None:
            return
        self._pipe, self._key, self._load_key = None, None, None
        free_device_memory(self.device)
