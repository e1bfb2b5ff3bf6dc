"""MultiShotPipeline against the conventions diffusers' `PipelineTesterMixin` checks: output class and
`return_dict`, save/load round trip, callback inputs and `PipelineCallback` objects, model CPU offload, dtypes, and
the runnable example in `__call__`'s docstring."""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput

from pipelines import MultiShotOutput, MultiShotPipeline, ShotSpec
from pipelines.tiny import build_tiny_components

SCENE = [ShotSpec("wide shot, mara climbs the stairs", 9), ShotSpec("close-up, mara lights the lamp", 5)]
FRAME_SHAPES = [(9, 32, 32, 3), (5, 32, 32, 3)]
LATENT_SHAPES = [(1, 16, 3, 4, 4), (1, 16, 2, 4, 4)]


def run(pipe, **kwargs):
    kwargs = {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16, **kwargs}
    kwargs.setdefault("generator", [torch.Generator().manual_seed(s) for s in (11, 12)])
    return pipe(shots=SCENE, **kwargs)


def fresh_pipe(**config) -> MultiShotPipeline:
    # Own components: offload hooks and dtype casts must not reach the session's shared tiny model.
    pipe = MultiShotPipeline(**build_tiny_components(), **config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def max_difference(first: list[np.ndarray], second: list[np.ndarray]) -> float:
    assert [a.shape for a in first] == [b.shape for b in second]
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True))


# ---------------------------------------------------------------- output class and return_dict


def test_output_is_a_base_output_and_return_dict_false_gives_its_fields_as_a_tuple(pipe):
    out = run(pipe)
    assert isinstance(out, BaseOutput) and isinstance(out, MultiShotOutput)
    assert out["shots"] is out.shots and out[0] is out.shots and out[1] is out.latents
    assert list(out.keys()) == ["shots", "latents", "layout", "parameters", "interrupted"]
    assert [s.shape for s in out.shots] == FRAME_SHAPES

    as_tuple = run(pipe, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 5
    shots, latents, layout, parameters, interrupted = as_tuple
    assert max_difference(shots, out.shots) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(latents, out.latents, strict=True))
    assert layout.frame_spans == out.layout.frame_spans
    assert parameters == out.parameters and interrupted is False


def test_interrupted_run_with_return_dict_false(pipe):
    def stop(p, step, timestep, tensors):
        p._interrupt = True
        return {}

    shots, latents, _, _, interrupted = run(pipe, num_inference_steps=3, callback_on_step_end=stop, return_dict=False)
    assert interrupted is True and shots == [] and [tuple(lat.shape) for lat in latents] == LATENT_SHAPES


# ---------------------------------------------------------------- save_pretrained / from_pretrained


def test_save_pretrained_from_pretrained_gives_the_same_output(tmp_path):
    pipe = fresh_pipe(gap=1, cross_attention="mmrope", self_attention="sparse", regenerate_mode="context")
    before = run(pipe, global_caption="a stormy coast")
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model_index.json").is_file()

    loaded = MultiShotPipeline.from_pretrained(tmp_path / "saved", local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    assert set(loaded.components) >= {"tokenizer", "text_encoder", "vae", "transformer", "scheduler"}
    for key, value in {"gap": 1, "cross_attention": "mmrope", "self_attention": "sparse"}.items():
        assert loaded.config[key] == value
    assert loaded.config.regenerate_mode == "context"
    after = run(loaded, global_caption="a stormy coast")
    assert max_difference(after.shots, before.shots) < 1e-5
    assert after.parameters == before.parameters


# ---------------------------------------------------------------- callback inputs


def test_callback_gets_only_the_tensors_asked_for(pipe):
    seen: list[set[str]] = []

    def record(p, step, timestep, tensors):
        seen.append(set(tensors))
        assert all(name in p._callback_tensor_inputs for name in tensors)
        return tensors

    run(pipe, callback_on_step_end=record, output_type="latent")
    assert seen == [{"latents"}, {"latents"}]  # the default

    seen.clear()
    run(pipe, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["prompt_embeds"], output_type="latent")
    assert seen == [{"prompt_embeds"}, {"prompt_embeds"}]


def test_every_allowed_tensor_input_reaches_the_callback(pipe):
    shapes = []

    def record_all(p, step, timestep, tensors):
        assert set(tensors) == set(p._callback_tensor_inputs)
        assert all(isinstance(tensors[name], torch.Tensor) for name in p._callback_tensor_inputs)
        shapes.append({name: tuple(tensors[name].shape) for name in tensors})
        return tensors

    run(
        pipe,
        guidance_scale=5.0,
        negative_prompt="blurry",
        callback_on_step_end=record_all,
        callback_on_step_end_tensor_inputs=list(pipe._callback_tensor_inputs),
        output_type="latent",
    )
    assert len(shapes) == 2
    # The scene's video latent (3 + 2 latent frames); both captions at 16 tokens; the negative prompt alone.
    assert shapes[0] == {
        "latents": (1, 16, 5, 4, 4),
        "prompt_embeds": (1, 32, 32),
        "negative_prompt_embeds": (1, 16, 32),
    }


def test_latents_returned_by_the_callback_are_used(pipe):
    def zero_at_last_step(p, step, timestep, tensors):
        if step == p.num_timesteps - 1:
            tensors["latents"] = torch.zeros_like(tensors["latents"])
        return tensors

    out = run(pipe, callback_on_step_end=zero_at_last_step, output_type="latent")
    assert [tuple(lat.shape) for lat in out.latents] == LATENT_SHAPES
    assert all(float(lat.abs().sum()) == 0.0 for lat in out.latents)
    assert all(float(shot.abs().sum()) == 0.0 for shot in out.shots)

    untouched = run(pipe, output_type="latent")
    assert all(float(lat.abs().sum()) > 0.0 for lat in untouched.latents)


def test_a_callback_tensor_name_not_allowed_is_a_value_error(pipe):
    with pytest.raises(ValueError, match=r"callback tensor 'noise_pred' is not one of .*callback_on_step_end_tensor"):
        run(pipe, callback_on_step_end=lambda p, i, t, k: k, callback_on_step_end_tensor_inputs=["noise_pred"])


class RecordingCallback(PipelineCallback):
    """Records the tensors it got and scales `latents` by `factor` at the last step."""

    tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, factor: float = 1.0):
        super().__init__(cutoff_step_ratio=1.0)
        self.factor = factor
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.calls.append((step_index, tuple(callback_kwargs)))
        if step_index == pipeline.num_timesteps - 1:
            callback_kwargs["latents"] = callback_kwargs["latents"] * self.factor
        return callback_kwargs


def test_a_pipeline_callback_brings_its_tensor_inputs(pipe):
    plain = run(pipe, output_type="latent")
    callback = RecordingCallback(factor=0.5)
    # A PipelineCallback's own tensor_inputs win over the argument, as in diffusers' pipelines.
    out = run(
        pipe, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"], output_type="latent"
    )
    assert callback.calls == [(0, ("latents", "prompt_embeds")), (1, ("latents", "prompt_embeds"))]
    for halved, full in zip(out.latents, plain.latents, strict=True):
        assert torch.allclose(halved, 0.5 * full)


def test_multi_pipeline_callbacks_run_in_order_with_the_union_of_their_inputs(pipe):
    plain = run(pipe, output_type="latent")
    first, second = RecordingCallback(factor=2.0), RecordingCallback(factor=3.0)
    out = run(pipe, callback_on_step_end=MultiPipelineCallbacks([first, second]), output_type="latent")
    assert len(first.calls) == len(second.calls) == 2
    assert set(first.calls[0][1]) == {"latents", "prompt_embeds"}
    for scaled, full in zip(out.latents, plain.latents, strict=True):
        assert torch.allclose(scaled, 6.0 * full, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- model CPU offload


def test_model_cpu_offload_gives_the_same_output():
    expected = run(fresh_pipe())
    pipe = fresh_pipe()
    # On a machine without an accelerator, accelerate offloads to the CPU itself: the hooks and the order run.
    pipe.enable_model_cpu_offload(device="cpu")
    assert all(getattr(pipe, name)._hf_hook is not None for name in ("text_encoder", "transformer", "vae"))
    assert max_difference(run(pipe).shots, expected.shots) == 0.0
    assert max_difference(run(pipe).shots, expected.shots) == 0.0  # the hooks survive the run


# ---------------------------------------------------------------- dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_components_cast_to_a_half_dtype_run(dtype):
    pipe = fresh_pipe()
    assert pipe.dtype == torch.float32
    pipe = pipe.to(dtype)
    assert pipe.dtype == dtype
    assert {name: module.dtype for name, module in pipe.components.items() if hasattr(module, "dtype")} == {
        "text_encoder": dtype,
        "vae": dtype,
        "transformer": dtype,
    }
    out = run(pipe, guidance_scale=5.0)
    assert [s.shape for s in out.shots] == FRAME_SHAPES
    assert all(np.isfinite(s).all() and s.min() >= 0.0 and s.max() <= 1.0 for s in out.shots)
    # The kept latents are float32 whatever the model's dtype (they are stored with the take).
    assert [(tuple(lat.shape), lat.dtype) for lat in out.latents] == [(s, torch.float32) for s in LATENT_SHAPES]
    assert all(torch.isfinite(lat).all() for lat in out.latents)


# ---------------------------------------------------------------- the docstring example


def test_the_docstring_example_runs(tmp_path, monkeypatch):
    doc = MultiShotPipeline.__call__.__doc__
    match = re.search(r"```python\n(.*?)```", doc, re.S)
    assert match, "the __call__ docstring has no python example"
    monkeypatch.chdir(tmp_path)
    example = doctest.DocTestParser().get_doctest(match.group(1), {}, "MultiShotPipeline.__call__", None, 0)
    assert len(example.examples) >= 5
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(example, clear_globs=False)
    assert runner.summarize(verbose=False).failed == 0
    assert (tmp_path / "shot_1.mp4").stat().st_size > 0
    assert [frames.shape for frames in example.globs["out"].shots] == [(9, 32, 32, 3), (5, 32, 32, 3)]
