"""Accelerator (step-distillation) LoRAs: loaded for every shot through diffusers' Wan LoRA conversion, beside
character LoRAs that stay scoped to their shots; few-step defaults at guidance 1 skip the unconditional pass."""

from __future__ import annotations

import torch

from pipelines import MultiShotPipeline, ShotSpec
from pipelines.acceleration import FEW_STEP_DEFAULTS, BlockPassCounter, few_step_scheduler, load_accelerator
from pipelines.tiny import build_tiny_components

SHOTS = [ShotSpec("wide shot, mara climbs the stairs", 5), ShotSpec("the sea under a stormy sky", 5)]


def lightx2v_style(transformer, seed=0) -> dict[str, torch.Tensor]:
    """Original Wan keys as lightx2v / CausVid ship them: lora_down/up, diff_b biases, time embedding, head,
    and full-weight norm differences."""
    g = torch.Generator().manual_seed(seed)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    state = {}
    for b in range(len(transformer.blocks)):
        for attn, proj in (("self_attn", "q"), ("self_attn", "o"), ("cross_attn", "k"), ("cross_attn", "v")):
            key = f"diffusion_model.blocks.{b}.{attn}.{proj}"
            state[f"{key}.lora_down.weight"] = torch.randn(2, dim, generator=g) * 0.5
            state[f"{key}.lora_up.weight"] = torch.randn(dim, 2, generator=g) * 0.5
            state[f"{key}.diff_b"] = torch.randn(dim, generator=g) * 0.1
        state[f"diffusion_model.blocks.{b}.norm3.diff"] = torch.randn(dim, generator=g) * 0.1
    state["diffusion_model.time_embedding.0.lora_down.weight"] = torch.randn(2, 256, generator=g) * 0.5
    state["diffusion_model.time_embedding.0.lora_up.weight"] = torch.randn(dim, 2, generator=g) * 0.5
    state["diffusion_model.head.head.lora_down.weight"] = torch.randn(2, dim, generator=g) * 0.5
    state["diffusion_model.head.head.lora_up.weight"] = torch.randn(transformer.proj_out.out_features, 2, generator=g)
    return state


def character_lora(transformer, seed=1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for b in range(len(transformer.blocks)):
        for proj in ("to_q", "to_v", "to_out.0"):
            key = f"transformer.blocks.{b}.attn1.{proj}"
            state[f"{key}.lora_A.weight"] = torch.randn(2, 24, generator=g) * 0.5
            state[f"{key}.lora_B.weight"] = torch.randn(24, 2, generator=g) * 0.5
    return state


def run(pipe, **kwargs):
    kwargs = dict(height=32, width=32, max_sequence_length=16, self_attention="isolated", output_type="latent") | (
        kwargs
    )
    kwargs.setdefault("num_inference_steps", FEW_STEP_DEFAULTS.num_inference_steps)
    kwargs.setdefault("guidance_scale", FEW_STEP_DEFAULTS.guidance_scale)
    generators = [torch.Generator().manual_seed(s) for s in (3, 4)]
    with BlockPassCounter(pipe.transformer) as counter:
        latents = pipe(shots=SHOTS, generator=generators, **kwargs).latents
    return latents, counter.passes


def test_an_accelerator_changes_every_shot_and_a_character_lora_only_its_own():
    pipe = MultiShotPipeline(**build_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    few_step_scheduler(pipe)
    assert pipe.scheduler.config.shift == FEW_STEP_DEFAULTS.flow_shift
    base, passes = run(pipe)
    assert passes == FEW_STEP_DEFAULTS.num_inference_steps  # guidance 1: one pass a step, no unconditional one

    pipe.load_lora_weights(character_lora(pipe.transformer), adapter_name="mara")
    pipe.set_adapters(["mara"], adapter_weights=[0.8])
    loaded = load_accelerator(pipe, lightx2v_style(pipe.transformer))
    assert set(pipe.get_active_adapters()) == {"mara", "accelerator"}
    assert "condition_embedder.time_embedder.linear_1" in loaded.modules and "proj_out" in loaded.modules
    assert len(loaded.norm_differences_skipped) == 2  # reported, not silently dropped
    scaling = pipe.transformer.blocks[0].attn1.to_q.scaling
    assert abs(scaling["mara"] - 0.8) < 1e-6  # the character keeps its weight beside the accelerator

    pipe.set_adapters(["accelerator"])
    fast, _ = run(pipe)
    for k in range(2):
        assert (fast[k] - base[k]).abs().max() > 1e-3  # the accelerator acts on every shot

    pipe.set_adapters(["mara", "accelerator"])
    both, _ = run(pipe, adapter_shots={"mara": [0]})
    assert (both[0] - fast[0]).abs().max() > 1e-3  # the character's LoRA changes its own shot
    assert torch.equal(both[1], fast[1])  # and leaves the other shot exactly as the accelerator alone made it


def test_an_accelerator_for_another_model_is_refused_with_the_layer_that_does_not_fit():
    import pytest

    pipe = MultiShotPipeline(**build_tiny_components())
    wide = lightx2v_style(pipe.transformer)
    wide["diffusion_model.blocks.0.self_attn.q.lora_down.weight"] = torch.randn(2, 48)  # a model twice as wide
    with pytest.raises(ValueError, match="made for another model: layer blocks.0.attn1.to_q is 24 -> 24 here"):
        load_accelerator(pipe, wide)
    deeper = {
        **lightx2v_style(pipe.transformer),
        "diffusion_model.blocks.7.self_attn.q.lora_down.weight": torch.ones(2, 24),
    }
    deeper["diffusion_model.blocks.7.self_attn.q.lora_up.weight"] = torch.ones(24, 2)
    with pytest.raises(ValueError, match="this one has no layer blocks.7.attn1.to_q"):
        load_accelerator(pipe, deeper)
    assert not getattr(pipe, "persistent_loras", None)  # nothing was loaded
