"""MultiShotPipeline end to end on tiny random-weight Wan components (CPU, 32x32, 2 steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import WanPipeline

from pipelines import MultiShotOutput, MultiShotPipeline, ShotSpec

SIZE = dict(height=32, width=32, num_inference_steps=2)
SCENE = [
    ShotSpec("wide shot, mara climbs the stairs", 9),
    ShotSpec("close-up, mara lights the lamp", 5),
    ShotSpec("the sea under a stormy sky", 9),
]


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def run(pipe, shots=SCENE, **kwargs) -> MultiShotOutput:
    kwargs = {**SIZE, "max_sequence_length": 16, **kwargs}
    kwargs.setdefault("generator", gens(*range(10, 10 + len(shots))))
    return pipe(shots=shots, **kwargs)


def test_one_shot_equals_stock_wan_pipeline(tiny_components):
    stock = WanPipeline(**tiny_components)
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        prompt="a red lighthouse on the coast at night",
        negative_prompt="blurry, static",
        num_frames=9,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(7),
        max_sequence_length=16,
        **SIZE,
    ).frames[0]
    pipe = MultiShotPipeline(**stock.components)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        shots=[ShotSpec("a red lighthouse on the coast at night", 9)],
        negative_prompt="blurry, static",
        guidance_scale=5.0,
        cross_attention="full",
        self_attention="full",
        generator=torch.Generator().manual_seed(7),
        max_sequence_length=16,
        **SIZE,
    )
    assert out.shots[0].shape == expected.shape == (9, 32, 32, 3)
    assert np.abs(out.shots[0] - expected).max() < 1e-5
    assert set(pipe.components) == {"tokenizer", "text_encoder", "vae", "transformer", "transformer_2", "scheduler"}
    assert pipe.transformer_2 is None and pipe.experts == [pipe.transformer]


def test_importing_the_registry_does_not_load_torch():
    """Project validation reads presets only; the package loads torch and diffusers on first use of the pipeline."""
    import subprocess
    import sys

    code = "import sys, pipelines; pipelines.get_preset('demo'); print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.strip() == "False"


def test_window_isolated_equals_separate_one_shot_generations(pipe):
    joint = run(pipe, global_caption="a lighthouse at night", cross_attention="window", self_attention="isolated")
    for k, shot in enumerate(SCENE):
        alone = run(
            pipe,
            shots=[shot],
            global_caption="a lighthouse at night",
            cross_attention="window",
            self_attention="isolated",
            generator=gens(10 + k),
        )
        assert joint.shots[k].shape == alone.shots[0].shape
        assert np.abs(joint.shots[k] - alone.shots[0]).max() < 1e-4
        assert (joint.latents[k] - alone.latents[0]).abs().max() < 1e-4


def test_changing_one_caption_changes_its_shot_most_under_window(pipe):
    base = run(pipe, cross_attention="window", self_attention="full", output_type="latent")
    edited = list(SCENE)
    edited[1] = ShotSpec("a green bird over the forest", SCENE[1].num_frames)
    changed = run(pipe, shots=edited, cross_attention="window", self_attention="full", output_type="latent")
    change = [(a - b).abs().mean().item() for a, b in zip(base.latents, changed.latents, strict=True)]
    assert change[1] > 0
    assert change[1] > 3 * max(change[0], change[2])


def test_mmrope_caption_order_matters_and_window_differs(pipe):
    mmrope = run(pipe, cross_attention="mmrope", output_type="latent")
    # Under mm-rope every caption is visible, rotated by its shot's time: swapping captions between shots 0 and 2
    # (same length) changes what shot 0 sees, whereas a position-free "full" attention would not notice.
    swapped = [SCENE[2], SCENE[1], SCENE[0]]
    swapped = [ShotSpec(s.caption, SCENE[k].num_frames) for k, s in enumerate(swapped)]
    mm_swapped = run(pipe, shots=swapped, cross_attention="mmrope", output_type="latent")
    full = run(pipe, cross_attention="full", output_type="latent")
    full_swapped = run(pipe, shots=swapped, cross_attention="full", output_type="latent")
    assert (mmrope.latents[0] - mm_swapped.latents[0]).abs().max() > 1e-4
    assert (full.latents[0] - full_swapped.latents[0]).abs().max() < 1e-5
    window = run(pipe, cross_attention="window", output_type="latent")
    assert (mmrope.latents[0] - window.latents[0]).abs().max() > 1e-4


def test_sparse_equals_full_for_one_shot_and_differs_from_isolated_for_several(pipe):
    one = [SCENE[0]]
    sparse = run(pipe, shots=one, self_attention="sparse", output_type="latent")
    full = run(pipe, shots=one, self_attention="full", output_type="latent")
    assert torch.equal(sparse.latents[0], full.latents[0])
    sparse3 = run(pipe, self_attention="sparse", output_type="latent")
    isolated3 = run(pipe, self_attention="isolated", output_type="latent")
    full3 = run(pipe, self_attention="full", output_type="latent")
    for k in range(3):
        assert (sparse3.latents[k] - isolated3.latents[k]).abs().max() > 1e-4
        assert (sparse3.latents[k] - full3.latents[k]).abs().max() > 1e-6


@pytest.mark.parametrize(
    ("mode", "self_attention"),
    [("inpaint", "full"), ("context", "full"), ("context", "sparse"), ("inpaint", "isolated")],
)
def test_regeneration_keeps_other_shots_bit_identical(pipe, mode, self_attention):
    first = run(pipe, self_attention=self_attention)
    again = run(
        pipe,
        self_attention=self_attention,
        regenerate=[1],
        context_latents=first.latents,
        regenerate_mode=mode,
        generator=gens(10, 99, 12),
    )
    for k in (0, 2):
        assert torch.equal(again.latents[k], first.latents[k])
        assert np.array_equal(again.shots[k], first.shots[k])
    assert (again.latents[1] - first.latents[1]).abs().max() > 1e-3
    other_seed = run(
        pipe,
        self_attention=self_attention,
        regenerate=[1],
        context_latents=first.latents,
        regenerate_mode=mode,
        generator=gens(10, 100, 12),
    )
    assert (other_seed.latents[1] - again.latents[1]).abs().max() > 1e-3
    assert again.parameters["regenerate"] == [1] and again.parameters["regenerate_mode"] == mode


def test_isolated_regeneration_runs_only_the_regenerated_shot(pipe):
    """With isolated self-attention and window captions a shot depends on nothing else: regenerating it alone
    (the pipeline then denoises only its tokens) equals a separate generation of it."""
    first = run(pipe, cross_attention="window", self_attention="isolated")
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda m, args, kwargs_out: calls.append(1))
    try:
        again = run(
            pipe,
            cross_attention="window",
            self_attention="isolated",
            regenerate=[2],
            context_latents=first.latents,
            generator=gens(0, 0, 55),
        )
    finally:
        hook.remove()
    alone = run(pipe, shots=[SCENE[2]], cross_attention="window", self_attention="isolated", generator=gens(55))
    assert (again.latents[2] - alone.latents[0]).abs().max() < 1e-4
    assert len(calls) == 2 * SIZE["num_inference_steps"]  # conditional + unconditional pass per step


def test_text_encoding_is_cached_and_padded_like_stock(pipe):
    pipe.clear_text_cache()
    calls = []
    hook = pipe.text_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    try:
        run(pipe, global_caption="night", negative_prompt="blurry", output_type="latent")
        first = len(calls)
        run(pipe, global_caption="night", negative_prompt="blurry", output_type="latent")
        assert first == 5  # 3 captions + global + negative, each encoded on its own
        assert len(calls) == first  # the second run hits the cache
        assert all(shape == (1, 16) for shape in calls)  # padded to max_sequence_length like WanPipeline
        trimmed = pipe.encode_caption("mara lights the lamp", max_sequence_length=None)
        padded = pipe.encode_caption("mara lights the lamp", max_sequence_length=16)
    finally:
        hook.remove()
    assert trimmed.shape[0] == 5  # 4 words + </s>
    assert padded.shape[0] == 16 and torch.all(padded[5:] == 0)
    assert (padded[:5] - trimmed).abs().max() < 1e-5


def test_guidance_one_skips_the_unconditional_pass(pipe):
    calls = []
    hook = pipe.transformer.register_forward_hook(lambda *a: calls.append(1))
    try:
        run(pipe, guidance_scale=1.0, output_type="latent")
        assert len(calls) == SIZE["num_inference_steps"]
        calls.clear()
        run(pipe, guidance_scale=5.0, output_type="latent")
        assert len(calls) == 2 * SIZE["num_inference_steps"]
    finally:
        hook.remove()


def test_callback_progress_preview_and_interrupt(pipe):
    seen = []

    def on_step(p, step, timestep, tensors):
        layout = p.current_layout
        seen.append((step, tuple(tensors["latents"].shape), p.preview_frame(tensors["latents"], shot=1).shape))
        assert [lat.shape[2] for lat in layout.split_latents(tensors["latents"])] == [3, 2, 3]
        return {}

    out = run(pipe, callback_on_step_end=on_step, output_type="latent")
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][1] == (1, 16, 8, 4, 4)
    assert seen[0][2] == (32, 32, 3)
    assert not out.interrupted

    def cancel(p, step, timestep, tensors):
        p._interrupt = True
        return {}

    stopped = run(pipe, num_inference_steps=4, height=32, width=32, callback_on_step_end=cancel)
    assert stopped.interrupted and stopped.shots == []
    assert len(stopped.latents) == 3


def test_outputs_per_shot_and_parameters(pipe):
    out = run(pipe, global_caption="a lighthouse at night", output_type="np")
    assert [s.shape for s in out.shots] == [(9, 32, 32, 3), (5, 32, 32, 3), (9, 32, 32, 3)]
    assert [tuple(lat.shape) for lat in out.latents] == [(1, 16, 3, 4, 4), (1, 16, 2, 4, 4), (1, 16, 3, 4, 4)]
    assert all(lat.device.type == "cpu" and lat.dtype == torch.float32 for lat in out.latents)
    assert out.parameters["captions"][1] == "close-up, mara lights the lamp"
    assert out.parameters["cross_attention"] == "window" and out.parameters["gap"] == 0
    pil = run(pipe, shots=[SCENE[1]], output_type="pil")
    assert len(pil.shots[0]) == 5 and pil.shots[0][0].size == (32, 32)


def test_gap_moves_shots_apart_in_rope_time(tiny_components):
    gapped = MultiShotPipeline(**tiny_components, gap=3)
    gapped.set_progress_bar_config(disable=True)
    out = run(gapped, output_type="latent")
    assert out.layout.time_offsets == (0, 6, 11)
    plain = MultiShotPipeline(**tiny_components)
    plain.set_progress_bar_config(disable=True)
    assert (run(plain, output_type="latent").latents[1] - out.latents[1]).abs().max() > 1e-5


def test_lora_loads_through_the_wan_mixin():
    from pipelines.tiny import build_tiny_components

    pipe = MultiShotPipeline(**build_tiny_components())  # its own components: LoRA layers wrap the projections
    pipe.set_progress_bar_config(disable=True)
    base = run(pipe, shots=[SCENE[0]], output_type="latent").latents[0]
    g = torch.Generator().manual_seed(0)
    lora = {}
    for b in range(len(pipe.transformer.blocks)):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v"):
                key = f"transformer.blocks.{b}.{attn}.{proj}"
                lora[f"{key}.lora_A.weight"] = torch.randn(4, 24, generator=g) * 0.5
                lora[f"{key}.lora_B.weight"] = torch.randn(24, 4, generator=g) * 0.5
    pipe.load_lora_weights(lora, adapter_name="mara")
    try:
        pipe.set_adapters(["mara"], [1.0])
        styled = run(pipe, shots=[SCENE[0]], output_type="latent").latents[0]
        pipe.set_adapters(["mara"], [0.0])
        off = run(pipe, shots=[SCENE[0]], output_type="latent").latents[0]
    finally:
        pipe.delete_adapters("mara")
    assert (styled - base).abs().max() > 1e-3
    assert (off - base).abs().max() < 1e-5


BAD_INPUTS = [
    (dict(shots=[]), "at least one shot"),
    (dict(shots=[ShotSpec("a man", 8)]), "4n\\+1 frames"),
    (dict(shots=[ShotSpec("  ", 5)]), "empty caption"),
    (dict(height=40), "multiples of 16"),
    (dict(cross_attention="diagonal"), "cross_attention must be one of"),
    (dict(self_attention="dense"), "self_attention must be one of"),
    (dict(generator=gens(1, 2)), "2 generators for 3 shots"),
    (dict(regenerate=[3], context_latents=[None] * 3), "out of range"),
    (dict(regenerate=[1]), "needs context_latents"),
    (dict(context_latents=[None] * 3), "without regenerate"),
    (dict(regenerate=[0], context_latents=[None, torch.zeros(1, 16, 2, 4, 4), torch.zeros(16, 3, 4, 4)]), None),
    (dict(regenerate=[0], context_latents=[None, torch.zeros(1, 16, 3, 4, 4), None]), "context_latents\\[1\\]"),
    (dict(regenerate=[0], context_latents=[None, torch.zeros(1, 16, 2, 4, 4), None]), "context_latents\\[2\\]"),
    (dict(regenerate_mode="magic"), "regenerate_mode must be one of"),
    (dict(output_type="gif"), "output_type must be one of"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_INPUTS)
def test_bad_inputs_raise_clear_errors(pipe, kwargs, message):
    kwargs = {**kwargs, "num_inference_steps": 1, "output_type": kwargs.get("output_type", "latent")}
    if message is None:  # the well-formed case of the list: both latent layouts are accepted
        out = run(pipe, **kwargs)
        assert torch.equal(out.latents[2], kwargs["context_latents"][2].unsqueeze(0))
        return
    with pytest.raises(ValueError, match=message):
        run(pipe, **kwargs)
