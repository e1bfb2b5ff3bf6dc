"""A scene's adapters on a pipeline: combined with weights, triggers substituted, recorded, unloaded."""

from __future__ import annotations

import pytest
import torch
from adapter_helpers import generate_latent, make_pipe, random_lora_state
from safetensors.torch import save_file

from adapters.loading import AdapterSpec, apply_adapters, loaded_loras, substitute_triggers
from pipelines.tiny import build_tiny_components


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("loras")
    components = build_tiny_components()
    paths = []
    for seed, name in ((1, "mara"), (2, "tom")):
        path = folder / f"{name}.safetensors"
        save_file(random_lora_state(components["transformer"], seed=seed), str(path))
        paths.append(path)
    return make_pipe(components), paths


def test_loras_combine_with_weights_and_unload(setup):
    pipe, (mara_path, tom_path) = setup
    mara = AdapterSpec(adapter_id=1, kind="lora", path=mara_path, trigger="<mara>", version=2, character="Mara")
    tom = AdapterSpec(adapter_id=2, kind="imported", path=tom_path, trigger="<tom>", trigger_text="tomfisher")
    base = generate_latent(pipe, "a man")

    applied = apply_adapters(pipe, [mara])
    only_mara = generate_latent(pipe, "a man")
    assert applied.lora_names == ["lora_1_v2"]
    assert (only_mara - base).abs().max() > 1e-2

    applied = apply_adapters(pipe, [mara, AdapterSpec(**{**tom.__dict__, "weight": 0.0})])
    assert loaded_loras(pipe) == ["imported_2_v1", "lora_1_v2"]
    torch.testing.assert_close(generate_latent(pipe, "a man"), only_mara, atol=1e-5, rtol=1e-5)

    applied = apply_adapters(pipe, [mara, tom])
    both = generate_latent(pipe, "a man")
    assert (both - only_mara).abs().max() > 1e-2
    assert applied.substitute("<mara> meets <tom>.") == "mara meets tomfisher."
    assert [(r["adapter_id"], r["version"], r["kind"]) for r in applied.records()] == [
        (1, 2, "lora"),
        (2, 1, "imported"),
    ]

    # A scene without adapters: the others are removed, generation is the base model's again, bit for bit.
    applied = apply_adapters(pipe, [], fallback_texts={"<mara>": "mara, a keeper"})
    assert loaded_loras(pipe) == []
    assert applied.substitute("<mara> waves") == "mara, a keeper waves"
    assert torch.equal(generate_latent(pipe, "a man"), base)

    applied = apply_adapters(pipe, [mara])
    applied.unload()
    assert loaded_loras(pipe) == [] and torch.equal(generate_latent(pipe, "a man"), base)


def test_missing_file_is_a_clear_error(setup, tmp_path):
    pipe, _ = setup
    spec = AdapterSpec(adapter_id=9, kind="lora", path=tmp_path / "gone.safetensors", trigger="<x>", character="X")
    with pytest.raises(FileNotFoundError, match="adapter file for X is missing"):
        apply_adapters(pipe, [spec])


def test_substitution_is_one_pass_and_longest_first():
    subs = {"<mara>": "<mara> <mara_1>", "<mara2>": "other"}
    assert substitute_triggers("<mara> and <mara2>", subs) == "<mara> <mara_1> and other"
    assert substitute_triggers("no triggers", subs) == "no triggers"
