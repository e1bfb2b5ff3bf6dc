"""Character LoRAs on a two-expert Wan2.2 pipeline: each LoRA goes on the expert(s) it was made for."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_helpers import random_lora_state
from safetensors.torch import save_file

from adapters.common import SHOTLINE_METADATA_KEY
from adapters.loading import AdapterSpec, apply_adapters, loaded_loras, lora_experts
from pipelines import MultiShotPipeline, ShotSpec
from pipelines.adapter_scope import lora_layers
from pipelines.tiny import build_tiny_two_expert_components


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("loras")
    components = build_tiny_two_expert_components()
    state = random_lora_state(components["transformer"], seed=1)
    files = {}
    for name, experts in (("both", None), ("high", ["transformer"]), ("low", ["transformer_2"])):
        metadata = {SHOTLINE_METADATA_KEY: json.dumps({"experts": experts})} if experts else None
        files[name] = folder / f"{name}.safetensors"
        save_file(state, str(files[name]), metadata=metadata)
    pipe = MultiShotPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe, files


def _latent(pipe) -> torch.Tensor:
    out = pipe(
        shots=[ShotSpec("a man", 5)],
        height=32,
        width=32,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(1),
        max_sequence_length=8,
        output_type="latent",
    )
    return out.latents[0]


def _spec(name: str, path) -> AdapterSpec:
    return AdapterSpec(adapter_id=name, kind="lora", path=path, trigger="<mara>")


def test_a_lora_goes_on_the_experts_it_was_made_for(setup):
    pipe, files = setup
    base = _latent(pipe)
    results = {}
    for name, on in (("both", (True, True)), ("high", (True, False)), ("low", (False, True))):
        applied = apply_adapters(pipe, [_spec(name, files[name])])
        name_loaded = applied.lora_names[0]
        assert (
            bool(lora_layers(pipe.transformer, name_loaded)),
            bool(lora_layers(pipe.transformer_2, name_loaded)),
        ) == on
        results[name] = _latent(pipe)
        assert (results[name] - base).abs().max() > 1e-3
    assert (results["high"] - results["low"]).abs().max() > 1e-3
    assert (results["both"] - results["high"]).abs().max() > 1e-3
    # Two LoRAs on different experts combine; a scene without them is the base model again, bit for bit.
    apply_adapters(pipe, [_spec("high", files["high"]), _spec("low", files["low"])])
    assert len(loaded_loras(pipe)) == 2
    apply_adapters(pipe, [])
    assert loaded_loras(pipe) == [] and torch.equal(_latent(pipe), base)


def test_scoped_lora_on_both_experts(setup):
    pipe, files = setup
    applied = apply_adapters(pipe, [_spec("both", files["both"])])
    shots = [ShotSpec("a man", 5), ShotSpec("a dog", 5)]
    kwargs = dict(
        height=32,
        width=32,
        num_inference_steps=4,
        max_sequence_length=8,
        output_type="latent",
        cross_attention="window",
        self_attention="isolated",
    )
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    scoped = pipe(shots=shots, generator=gens(), adapter_shots={applied.lora_names[0]: [0]}, **kwargs)
    apply_adapters(pipe, [])
    plain = pipe(shots=shots, generator=gens(), **kwargs)
    # Isolated shots: the shot outside the LoRA's scope is exactly the base model's, on both experts' steps.
    torch.testing.assert_close(scoped.latents[1], plain.latents[1], atol=1e-6, rtol=0)
    assert (scoped.latents[0] - plain.latents[0]).abs().max() > 1e-3


def test_a_lora_for_an_expert_the_model_lacks_is_refused(tmp_path):
    from pipelines.tiny import build_tiny_components

    components = build_tiny_components()
    path = tmp_path / "low.safetensors"
    save_file(
        random_lora_state(components["transformer"], seed=1),
        str(path),
        metadata={SHOTLINE_METADATA_KEY: json.dumps({"experts": ["transformer_2"]})},
    )
    pipe = MultiShotPipeline(**components)
    with pytest.raises(ValueError, match="made for transformer_2.*use a LoRA trained for this model preset"):
        lora_experts(pipe, path)
