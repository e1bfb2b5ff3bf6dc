"""diffusers' step caches and attention backends on MultiShotPipeline (tiny random-weight Wan, CPU, 32x32).

The caches are diffusers' own hooks (`transformer.enable_cache`); the pipeline names its passes with
`cache_context("cond" / "uncond")`. A pass that runs every block is counted by `BlockPassCounter`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)

from pipelines import ShotSpec
from pipelines import attention as attention_module
from pipelines.acceleration import (
    Acceleration,
    AccelerationUnavailable,
    BlockPassCounter,
    apply_runtime,
    calibrate_mag_ratios,
    check_available,
)

STEPS = 8
SCENE = [
    ShotSpec("wide shot, mara climbs the stairs", 9),
    ShotSpec("close-up, mara lights the lamp", 5),
    ShotSpec("the sea under a stormy sky", 9),
]


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def run(pipe, shots=SCENE, **kwargs):
    kwargs = {"height": 32, "width": 32, "num_inference_steps": STEPS, "max_sequence_length": 16, **kwargs}
    kwargs.setdefault("generator", gens(*range(10, 10 + len(shots))))
    kwargs.setdefault("output_type", "latent")
    with BlockPassCounter(pipe.transformer) as counter:
        out = pipe(shots=shots, **kwargs)
    return out, counter.passes


@pytest.fixture
def cached_pipe(pipe):
    """The shared tiny pipeline, with any cache and backend taken off again after the test."""
    yield pipe
    if pipe.transformer.is_cache_enabled:
        pipe.transformer.disable_cache()
    pipe.transformer.set_attention_backend("native")
    pipe._step_cache_key = None
    pipe._attention_backend_name = "native"


def _configs(pipe) -> dict:
    return {
        "first-block": FirstBlockCacheConfig(threshold=0.5),
        "magcache": MagCacheConfig(threshold=0.5, num_inference_steps=STEPS, mag_ratios=[1.0] * STEPS),
        "taylorseer": TaylorSeerCacheConfig(
            cache_interval=3,
            disable_cache_before_step=2,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"^blocks\.\d+$"],
        ),
        "pyramid-attention-broadcast": PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 1001),
            current_timestep_callback=lambda: pipe.current_timestep,
        ),
        "faster-cache": FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            current_timestep_callback=lambda: pipe.current_timestep,
            attention_weight_callback=lambda _: 0.3,
            tensor_format="BFCHW",
            is_guidance_distilled=True,
        ),
    }


SKIPS_BLOCKS = {"first-block", "magcache", "taylorseer"}  # the others skip attention inside blocks


@pytest.mark.parametrize("num_shots", [1, 3])
@pytest.mark.parametrize(
    "name", ["first-block", "magcache", "taylorseer", "pyramid-attention-broadcast", "faster-cache"]
)
def test_each_diffusers_cache_attaches_and_runs(cached_pipe, name, num_shots):
    pipe, shots = cached_pipe, SCENE[:num_shots]
    baseline, base_passes = run(pipe, shots)
    assert base_passes == 2 * STEPS  # conditional and unconditional pass at every step
    pipe.transformer.enable_cache(_configs(pipe)[name])
    out, passes = run(pipe, shots)
    assert len(out.latents) == num_shots
    for cached, plain in zip(out.latents, baseline.latents, strict=True):
        assert cached.shape == plain.shape and torch.isfinite(cached).all()
    change = max((c - p).abs().max().item() for c, p in zip(out.latents, baseline.latents, strict=True))
    assert change > 1e-4  # the cache acted: approximated outputs differ from the full computation
    if name in SKIPS_BLOCKS:
        assert passes < base_passes
    else:
        assert passes == base_passes


def test_a_cache_that_never_skips_and_a_cache_taken_off_change_nothing(cached_pipe):
    pipe = cached_pipe
    plain, _ = run(pipe, output_type="np")
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1e-6))  # never below: every block runs
    never, passes = run(pipe, output_type="np")
    assert passes == 2 * STEPS
    pipe.transformer.disable_cache()
    after, _ = run(pipe, output_type="np")
    apply_runtime(pipe, Acceleration(step_cache="off"), STEPS, "tiny")
    off, _ = run(pipe, output_type="np")
    for k in range(len(SCENE)):
        assert np.array_equal(never.shots[k], plain.shots[k])
        assert np.array_equal(after.shots[k], plain.shots[k])
        assert np.array_equal(off.shots[k], plain.shots[k])


@pytest.mark.parametrize("step_cache", ["first-block", "taylorseer"])
@pytest.mark.parametrize("mode", ["inpaint", "context"])
def test_regeneration_with_a_cache_keeps_the_other_shots_bit_identical(cached_pipe, step_cache, mode):
    pipe = cached_pipe
    setting = Acceleration(step_cache=step_cache, cache_threshold=0.5 if step_cache == "first-block" else None)
    apply_runtime(pipe, setting, STEPS, "tiny")
    first, _ = run(pipe, output_type="np")
    kwargs = dict(regenerate=[1], context_latents=first.latents, regenerate_mode=mode, output_type="np")
    again, passes = run(pipe, generator=gens(10, 99, 12), **kwargs)
    assert passes < 2 * STEPS
    for k in (0, 2):
        assert torch.equal(again.latents[k], first.latents[k])
        assert np.array_equal(again.shots[k], first.shots[k])
    assert (again.latents[1] - first.latents[1]).abs().max() > 1e-3
    # The cache state starts empty every run: the same request gives the same take.
    repeat, _ = run(pipe, generator=gens(10, 99, 12), **kwargs)
    assert torch.equal(repeat.latents[1], again.latents[1])


def test_a_run_that_failed_leaves_no_cache_state_behind(cached_pipe):
    pipe = cached_pipe
    apply_runtime(pipe, Acceleration(step_cache="first-block", cache_threshold=0.5), STEPS, "tiny")
    clean, _ = run(pipe)

    def fail(pipe, step, timestep, kwargs):
        if step == STEPS // 2:
            raise RuntimeError("disk full")
        return kwargs

    with pytest.raises(RuntimeError, match="disk full"):
        run(pipe, callback_on_step_end=fail)
    again, _ = run(pipe)
    for a, b in zip(again.latents, clean.latents, strict=True):
        assert torch.equal(a, b)


def test_acceleration_settings_enable_each_cache_through_diffusers(cached_pipe, monkeypatch):
    pipe = cached_pipe
    _, base = run(pipe)
    apply_runtime(pipe, Acceleration(step_cache="first-block", cache_threshold=0.5), STEPS, "tiny")
    _, first_block = run(pipe)
    apply_runtime(pipe, Acceleration(step_cache="taylorseer", cache_interval=3), STEPS, "tiny")
    _, taylorseer = run(pipe)
    monkeypatch.setitem(__import__("pipelines.acceleration").acceleration.MAG_RATIOS, "tiny", [1.0] * STEPS)
    apply_runtime(pipe, Acceleration(step_cache="magcache", cache_threshold=0.5), STEPS, "tiny")
    _, magcache = run(pipe)
    apply_runtime(pipe, Acceleration(), STEPS, "tiny")
    _, off = run(pipe)
    assert base == off == 2 * STEPS
    # first-block: one full pass per context, then skips while the residual moves less than the threshold;
    # taylorseer: 3 warm-up steps, then a full pass every 3rd step (steps 0, 1, 2, 4 and 7 of 8), per pass.
    assert first_block < base and magcache < base
    assert taylorseer == 2 * 5
    assert not pipe.transformer.is_cache_enabled


def test_magcache_calibration_returns_one_ratio_per_step(cached_pipe):
    pipe = cached_pipe
    ratios = calibrate_mag_ratios(
        pipe, shots=SCENE, height=32, width=32, num_inference_steps=STEPS, max_sequence_length=16, output_type="latent"
    )
    assert len(ratios) == STEPS and ratios[0] == 1.0
    assert all(r > 0 for r in ratios) and len(set(ratios)) > 1
    assert not pipe.transformer.is_cache_enabled


def test_every_multishot_attention_call_uses_the_selected_backend(cached_pipe, monkeypatch):
    pipe = cached_pipe
    plain, _ = run(pipe, cross_attention="mmrope", global_caption="a stormy coast at night")
    seen = []
    real = attention_module.dispatch_attention_fn

    def spy(*args, backend=None, **kwargs):
        seen.append(str(getattr(backend, "value", backend)))
        return real(*args, backend=backend, **kwargs)

    monkeypatch.setattr(attention_module, "dispatch_attention_fn", spy)
    apply_runtime(pipe, Acceleration(attention_backend="native"), STEPS, "tiny")
    pipe.transformer.set_attention_backend("_native_math")  # a second local backend the CPU has
    for cross, self_attention in (("mmrope", "full"), ("window", "sparse"), ("full", "isolated")):
        seen.clear()
        out, _ = run(
            pipe, cross_attention=cross, self_attention=self_attention, global_caption="a stormy coast at night"
        )
        assert seen and set(seen) == {"_native_math"}
        if cross == "mmrope":  # padded value channels for non-native kernels give the same attention
            for a, b in zip(out.latents, plain.latents, strict=True):
                assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"attention_backend": "flash_hub"}, "hub backends download kernels"),
        ({"attention_backend": "xla"}, "attention_backend must be one of"),
        ({"step_cache": "teacache"}, "step_cache must be one of"),
        ({"cache_threshold": 5.0}, "cache_threshold must be between"),
        ({"cache_interval": 1}, "cache_interval must be between"),
        ({"vram_profile": "fp4"}, "vram_profile must be one of"),
        ({"compile": "yes"}, "compile must be true or false"),
        ({"turbo": True}, "unknown speed setting"),
    ],
)
def test_bad_speed_settings_are_clear_errors(values, message):
    with pytest.raises(ValueError, match=message):
        Acceleration.from_dict(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"attention_backend": "flash"}, "needs a CUDA GPU.*pick 'native'"),
        ({"attention_backend": "sage"}, "needs a CUDA GPU"),
        ({"compile": True}, "compile needs a CUDA GPU"),
        ({"vram_profile": "group"}, "group offload\\) needs a CUDA GPU"),
        ({"vram_profile": "model"}, "this worker runs on the CPU; pick 'none'"),
        ({"step_cache": "magcache"}, "no calibrated magnitude ratios for model 'tiny'.*pick 'first-block'"),
    ],
)
def test_choices_this_machine_cannot_run_are_refused(values, message):
    with pytest.raises(AccelerationUnavailable, match=message):
        check_available(Acceleration.from_dict(values), "cpu", "tiny")
    check_available(Acceleration(), "cpu", "tiny")  # the defaults run anywhere
    check_available(Acceleration(vram_profile="fp8"), "cpu", "tiny")


def test_fp8_storage_keeps_transformer_weights_in_float8_and_still_generates():
    from pipelines.loading import load_pipeline

    plain = load_pipeline("tiny", device="cpu", dtype="fp32")
    fp8 = load_pipeline("tiny", device="cpu", dtype="fp32", fp8_storage=True)
    blocks = fp8.transformer.blocks[0]
    assert blocks.attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert blocks.ffn.net[2].weight.dtype == torch.float8_e4m3fn
    assert fp8.transformer.patch_embedding.weight.dtype == torch.float32  # precision-critical layers stay
    kwargs = dict(shots=SCENE[:2], height=32, width=32, num_inference_steps=2, max_sequence_length=16)
    expected = plain(generator=gens(1, 2), output_type="latent", **kwargs).latents
    got = fp8(generator=gens(1, 2), output_type="latent", **kwargs).latents
    for a, b in zip(got, expected, strict=True):
        assert torch.isfinite(a).all()
        error = ((a - b).norm() / b.norm()).item()
        assert 0 < error < 0.1  # float8 rounding of the weights, not a different model
    with pytest.raises(ValueError, match="on CPU use 'none'"):
        load_pipeline("tiny", device="cpu", offload="group")


@pytest.mark.slow
def test_regionally_compiled_blocks_run_the_multishot_attention_and_a_cache():
    """torch.compile of each transformer block (inductor on the CPU here; the studio offers it on CUDA) traces the
    multi-shot processors and diffusers' cache hooks and gives the uncompiled result."""
    from pipelines import MultiShotPipeline
    from pipelines.acceleration import compile_blocks
    from pipelines.tiny import build_tiny_components

    pipe = MultiShotPipeline(**build_tiny_components())
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(cross_attention="mmrope", global_caption="a lighthouse at night", output_type="latent")
    reference, _ = run(pipe, SCENE[:2], generator=gens(1, 2), **kwargs)
    compile_blocks(pipe)
    compiled, _ = run(pipe, SCENE[:2], generator=gens(1, 2), **kwargs)
    for a, b in zip(compiled.latents, reference.latents, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    apply_runtime(pipe, Acceleration(step_cache="first-block", cache_threshold=0.5), STEPS, "tiny")
    _, passes = run(pipe, SCENE[:2], generator=gens(1, 2), **kwargs)
    assert passes < 2 * STEPS


def test_first_block_threshold_follows_the_share_of_tokens_a_regeneration_changes(cached_pipe):
    """In `context` regeneration the other shots sit clean and barely change, diluting first-block's mean change;
    scaling the threshold by the regenerated share keeps the regenerated shot from being skipped more."""
    from pipelines.acceleration import cache_config, regeneration_share

    assert regeneration_share([3, 2, 3], None, "context") == 1.0
    assert regeneration_share([3, 2, 3], [1], "inpaint") == 1.0  # re-noised context shots change too
    assert regeneration_share([3, 2, 3], [1], "context") == 2 / 8
    setting = Acceleration(step_cache="first-block", cache_threshold=0.4)
    assert cache_config(setting, STEPS, "tiny", 0.25).threshold == pytest.approx(0.1)
    assert cache_config(Acceleration(step_cache="taylorseer"), STEPS, "tiny", 0.25).cache_interval == 2

    pipe = cached_pipe
    first, _ = run(pipe)
    kwargs = dict(regenerate=[1], context_latents=first.latents, regenerate_mode="context", generator=gens(1, 2, 3))
    apply_runtime(pipe, setting, STEPS, "tiny")
    _, diluted = run(pipe, **kwargs)
    apply_runtime(pipe, setting, STEPS, "tiny", regeneration_share([3, 2, 3], [1], "context"))
    _, scaled = run(pipe, **kwargs)
    assert diluted < scaled <= 2 * STEPS
