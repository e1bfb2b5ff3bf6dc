"""Shared helpers of the adapter tests: reference pictures, a pipeline over tiny components, one-frame latents."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def reference_picture(colour=(230, 40, 40), size=48) -> Image.Image:
    """A character 'portrait': a coloured figure under a blue band on black."""
    array = np.zeros((size, size, 3), np.uint8)
    array[size // 6 : size * 5 // 6, size // 4 : size * 3 // 4] = colour
    array[: size // 6] = (40, 40, 200)
    return Image.fromarray(array)


def make_pipe(components):
    """The studio's pipeline class; diffusers' WanPipeline (same components, same LoRA mixin) until it lands."""
    from diffusers import WanPipeline

    return WanPipeline(**components)


def generate_latent(pipe, caption: str, seed: int = 1) -> torch.Tensor:
    """One 1-frame 32x32 generation, as clean latents [C, 1, h, w] (2 steps, no guidance: tiny preset)."""
    from diffusers import WanPipeline

    generator = torch.Generator().manual_seed(seed)
    if isinstance(pipe, WanPipeline):
        out = pipe(
            prompt=caption,
            num_frames=1,
            height=32,
            width=32,
            num_inference_steps=2,
            guidance_scale=1.0,
            max_sequence_length=16,
            output_type="latent",
            generator=generator,
        )
        return out.frames[0]
    from pipelines import ShotSpec

    out = pipe(
        shots=[ShotSpec(caption=caption, num_frames=1)],
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=1.0,
        max_sequence_length=16,
        output_type="latent",
        generator=generator,
    )
    latent = out.latents[0]
    return latent[0] if latent.dim() == 5 else latent
