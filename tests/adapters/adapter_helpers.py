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


def make_pipe(components, stock: bool = False):
    """The studio's `MultiShotPipeline` over `components` (or diffusers' stock `WanPipeline` with `stock=True`:
    same components, same LoRA mixin)."""
    if stock:
        from diffusers import WanPipeline

        return WanPipeline(**components)
    from pipelines import MultiShotPipeline

    return MultiShotPipeline(**components, cross_attention="full")


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
    return out.latents[0][0]


def random_lora_state(
    transformer, rank: int = 2, seed: int = 0, scale: float = 0.5, ffn: bool = False
) -> dict[str, torch.Tensor]:
    """A diffusers-layout LoRA with random A and B on every attention projection of `transformer` (and, with
    `ffn`, on the feed-forward layers of every block)."""
    generator = torch.Generator().manual_seed(seed)
    targets = ("to_q", "to_k", "to_v", "to_out.0") + (("ffn.net.0.proj", "ffn.net.2") if ffn else ())
    state = {}
    for name, module in transformer.named_modules():
        if name.startswith("blocks.") and name.endswith(targets) and isinstance(module, torch.nn.Linear):
            a = torch.randn(rank, module.in_features, generator=generator) * scale
            b = torch.randn(module.out_features, rank, generator=generator) * scale
            state[f"transformer.{name}.lora_A.weight"] = a
            state[f"transformer.{name}.lora_B.weight"] = b
    return state


def to_wan_original_layout(state: dict[str, torch.Tensor], alpha_over_rank: float = 2.0) -> dict[str, torch.Tensor]:
    """The same LoRA as the original Wan / ComfyUI community files write it: `diffusion_model.` prefix,
    self_attn/cross_attn with q/k/v/o, lora_down/lora_up and an `.alpha` (the up matrix divided to compensate)."""
    names = {"attn1": "self_attn", "attn2": "cross_attn"}
    projections = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
    out = {}
    for key, tensor in state.items():
        module, part = key.removeprefix("transformer.").rsplit(".lora_", 1)
        block, index, attn, proj = module.split(".", 3)
        base = f"diffusion_model.{block}.{index}.{names[attn]}.{projections[proj]}"
        if part.startswith("A"):
            out[f"{base}.lora_down.weight"] = tensor.clone()
            out[f"{base}.alpha"] = torch.tensor(float(tensor.shape[0]) * alpha_over_rank)
        else:
            out[f"{base}.lora_up.weight"] = tensor / alpha_over_rank
    return out


def to_musubi_layout(state: dict[str, torch.Tensor], alpha_over_rank: float = 0.5) -> dict[str, torch.Tensor]:
    """The same LoRA as musubi-tuner / kohya write it: `lora_unet_blocks_N_self_attn_q.lora_down.weight`, `ffn_0`,
    `.alpha` per module (the up matrix scaled to compensate). Needs attention and feed-forward layers."""
    names = {"attn1": "self_attn", "attn2": "cross_attn"}
    projections = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
    feed_forward = {"ffn.net.0.proj": "ffn_0", "ffn.net.2": "ffn_2"}
    out = {}
    for key, tensor in state.items():
        module, part = key.removeprefix("transformer.").rsplit(".lora_", 1)
        _, index, rest = module.split(".", 2)
        if rest in feed_forward:
            base = f"lora_unet_blocks_{index}_{feed_forward[rest]}"
        else:
            attn, proj = rest.split(".", 1)
            base = f"lora_unet_blocks_{index}_{names[attn]}_{projections[proj]}"
        if part.startswith("A"):
            out[f"{base}.lora_down.weight"] = tensor.clone()
            out[f"{base}.alpha"] = torch.tensor(float(tensor.shape[0]) * alpha_over_rank)
        else:
            out[f"{base}.lora_up.weight"] = tensor / alpha_over_rank
    return out
