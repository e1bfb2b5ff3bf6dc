"""Two-expert Wan2.2 (A14B layout) in MultiShotPipeline: the high-noise expert above the boundary, the low-noise
one below, as diffusers' WanPipeline runs them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline

from pipelines import MultiShotPipeline, ShotSpec
from pipelines.tiny import build_tiny_two_expert_components

SIZE = dict(height=32, width=32, num_inference_steps=4)
CAPTION = "a red lighthouse on the coast at night"


@pytest.fixture(scope="module")
def experts():
    return build_tiny_two_expert_components()


@pytest.fixture
def pipe(experts):
    pipeline = MultiShotPipeline(**experts)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _count_calls(module, counts: dict, name: str):
    return module.register_forward_pre_hook(lambda *_: counts.__setitem__(name, counts.get(name, 0) + 1))


@pytest.mark.parametrize("scheduler", ["euler", "unipc"])
def test_one_shot_equals_stock_wan_pipeline_with_two_experts(experts, scheduler):
    if scheduler == "unipc":
        # Wan's own scheduler; shift 12 and 4 steps give timesteps 999, 973, 923, 800: the switch is at step 4.
        experts = dict(experts, scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                                  use_flow_sigmas=True, flow_shift=12.0))  # fmt: skip
    stock = WanPipeline(**experts)
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        prompt=CAPTION,
        negative_prompt="blurry, static",
        num_frames=9,
        guidance_scale=5.0,
        guidance_scale_2=2.5,
        generator=torch.Generator().manual_seed(7),
        max_sequence_length=16,
        **SIZE,
    ).frames[0]
    pipe = MultiShotPipeline(**stock.components, boundary_ratio=stock.config.boundary_ratio)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        shots=[ShotSpec(CAPTION, 9)],
        negative_prompt="blurry, static",
        guidance_scale=5.0,
        guidance_scale_2=2.5,
        cross_attention="full",
        self_attention="full",
        generator=torch.Generator().manual_seed(7),
        max_sequence_length=16,
        **SIZE,
    )
    assert out.shots[0].shape == expected.shape == (9, 32, 32, 3)
    assert np.abs(out.shots[0] - expected).max() < 1e-5
    assert out.parameters["boundary_ratio"] == 0.875 and out.parameters["guidance_scale_2"] == 2.5


def test_the_expert_switches_at_the_boundary_timestep(pipe, experts):
    # FlowMatchEuler with shift 7 and 4 steps gives timesteps 1000, 934, 781, 47: boundary 875 -> 2 + 2 steps.
    pipe.scheduler.set_timesteps(4)
    timesteps = [float(t) for t in pipe.scheduler.timesteps]
    high_steps = sum(t >= 875 for t in timesteps)
    assert 0 < high_steps < len(timesteps)
    counts: dict = {}
    handles = [_count_calls(pipe.transformer, counts, "high"), _count_calls(pipe.transformer_2, counts, "low")]
    try:
        two = pipe(
            shots=[ShotSpec(CAPTION, 5)],
            generator=torch.Generator().manual_seed(3),
            output_type="latent",
            max_sequence_length=16,
            **SIZE,
        )
    finally:
        for handle in handles:
            handle.remove()
    # Two passes (conditional, unconditional) per step on the expert of that step.
    assert counts == {"high": 2 * high_steps, "low": 2 * (len(timesteps) - high_steps)}
    one_expert = {k: v for k, v in experts.items() if k not in ("transformer_2", "boundary_ratio")}
    alone = MultiShotPipeline(**one_expert)
    alone.set_progress_bar_config(disable=True)
    high_only = alone(
        shots=[ShotSpec(CAPTION, 5)],
        generator=torch.Generator().manual_seed(3),
        output_type="latent",
        max_sequence_length=16,
        **SIZE,
    )
    assert (two.latents[0] - high_only.latents[0]).abs().max() > 1e-3


def test_two_experts_run_every_multishot_mode_and_inpaint_regeneration(pipe):
    shots = [ShotSpec("wide shot, mara climbs the stairs", 5), ShotSpec("close-up, mara lights the lamp", 5)]
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    first = pipe(
        shots=shots,
        global_caption="a lighthouse at night",
        cross_attention="window",
        self_attention="sparse",
        generator=gens,
        output_type="latent",
        max_sequence_length=16,
        **SIZE,
    )
    regen = pipe(
        shots=shots,
        global_caption="a lighthouse at night",
        cross_attention="window",
        self_attention="sparse",
        generator=[torch.Generator().manual_seed(s) for s in (1, 9)],
        regenerate=[1],
        context_latents=first.latents,
        regenerate_mode="inpaint",
        output_type="latent",
        max_sequence_length=16,
        **SIZE,
    )
    assert torch.equal(regen.latents[0], first.latents[0])
    assert (regen.latents[1] - first.latents[1]).abs().max() > 1e-3
    for cross, self_attention in (("mmrope", "full"), ("full", "isolated")):
        out = pipe(
            shots=shots,
            cross_attention=cross,
            self_attention=self_attention,
            output_type="latent",
            max_sequence_length=16,
            **SIZE,
        )
        assert len(out.latents) == 2 and torch.isfinite(out.latents[1]).all()


def test_context_regeneration_is_refused_with_two_experts(pipe, experts):
    shots = [ShotSpec("wide shot", 5), ShotSpec("close-up", 5)]
    first = pipe(shots=shots, output_type="latent", max_sequence_length=16, **SIZE)
    with pytest.raises(ValueError, match="two-expert.*use regenerate_mode='inpaint'"):
        pipe(
            shots=shots,
            regenerate=[1],
            context_latents=first.latents,
            regenerate_mode="context",
            max_sequence_length=16,
            **SIZE,
        )
    with pytest.raises(ValueError, match="two-expert"):
        MultiShotPipeline(**experts, regenerate_mode="context")


def test_two_expert_arguments_are_checked(experts, tiny_components):
    with pytest.raises(ValueError, match="needs both transformer_2"):
        MultiShotPipeline(**{k: v for k, v in experts.items() if k != "boundary_ratio"})
    with pytest.raises(ValueError, match="between 0 and 1"):
        MultiShotPipeline(**{**experts, "boundary_ratio": 1.5})
    one = MultiShotPipeline(**tiny_components)
    with pytest.raises(ValueError, match="has one expert"):
        one(shots=[ShotSpec("a lamp", 5)], guidance_scale_2=3.0, max_sequence_length=16, **SIZE)
