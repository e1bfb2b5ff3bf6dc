"""Importing Wan LoRA files: diffusers and community layouts accepted and equivalent; pickles, broken headers and
adapters for another architecture refused with a clear error."""

from __future__ import annotations

import io
import struct

import pytest
import torch
from adapter_helpers import (
    generate_latent,
    make_pipe,
    random_lora_state,
    to_musubi_layout,
    to_wan_original_layout,
)
from safetensors.torch import save

from adapters.importing import AdapterImportError, expected_linear_shapes, import_lora, inspect_lora
from pipelines.tiny import TinyWanConfig, build_tiny_components


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return build_tiny_components()


@pytest.fixture(scope="module")
def lora_state(tiny):
    return random_lora_state(tiny["transformer"])


def test_diffusers_and_community_layouts_give_the_same_generation(tiny, lora_state, tmp_path):
    transformer = tiny["transformer"]
    diffusers_bytes, found = import_lora(save(lora_state), transformer, filename="mara.safetensors", trigger="<mara>")
    assert found.layout == "diffusers" and found.rank == 2 and len(found.modules) == 16
    community = to_wan_original_layout(lora_state, alpha_over_rank=2.0)
    community_bytes, found = import_lora(save(community), transformer.config, filename="comfy.safetensors")
    assert found.layout == "wan-original" and found.rank == 2
    bare = {k.removeprefix("diffusion_model."): v for k, v in community.items()}
    _, found = import_lora(save(bare), transformer, filename="bare.safetensors")
    assert found.layout == "wan-original"

    pipe = make_pipe(build_tiny_components())
    base = generate_latent(pipe, "mara walks")
    outputs = []
    for name, data in (("a", diffusers_bytes), ("b", community_bytes)):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters([name])
        outputs.append(generate_latent(pipe, "mara walks"))
    assert (outputs[0] - base).abs().max() > 1e-2  # the LoRA does something
    # alpha / rank folded in by the converter: the community file is the same adapter.
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)


def test_config_check_needs_no_weights(tiny):
    transformer = tiny["transformer"]
    from_config = expected_linear_shapes(transformer.config)
    assert from_config == expected_linear_shapes(transformer)
    assert from_config["blocks.0.attn1.to_q"] == (24, 24)


def test_pickles_are_refused(lora_state, tmp_path):
    buffer = io.BytesIO()
    torch.save(lora_state, buffer)
    with pytest.raises(AdapterImportError, match="pickle"):
        inspect_lora(buffer.getvalue(), "sneaky.safetensors")  # zip-pickle bytes under a safetensors name
    legacy = io.BytesIO()
    torch.save(lora_state, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(AdapterImportError, match="pickle"):
        inspect_lora(legacy.getvalue(), "old.safetensors")
    path = tmp_path / "mara.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(AdapterImportError, match=r"\.pt files are pickles"):
        inspect_lora(path)
    with pytest.raises(AdapterImportError, match="only .safetensors"):
        inspect_lora(save(lora_state), "mara.gguf")


def test_corrupt_headers_are_refused(lora_state):
    good = save(lora_state)
    huge_length = struct.pack("<Q", 10**12) + good[8:]
    with pytest.raises(AdapterImportError, match="corrupt safetensors header"):
        inspect_lora(huge_length, "a.safetensors")
    (length,) = struct.unpack("<Q", good[:8])
    garbage = good[:8] + b"{" + b"x" * (length - 1) + good[8 + length :]
    with pytest.raises(AdapterImportError, match="corrupt safetensors header"):
        inspect_lora(garbage, "b.safetensors")
    with pytest.raises(AdapterImportError, match="truncated or corrupt"):
        inspect_lora(good[: len(good) - 100], "c.safetensors")
    with pytest.raises(AdapterImportError, match="only 3 bytes"):
        inspect_lora(b"abc", "d.safetensors")


def test_adapters_for_another_architecture_are_refused(tiny):
    wider = build_tiny_components(TinyWanConfig(heads=4))["transformer"]  # inner width 48 instead of 24
    with pytest.raises(AdapterImportError, match="made for another model: layer blocks.0.attn1.to_k has shape"):
        import_lora(save(random_lora_state(wider)), tiny["transformer"], filename="wide.safetensors")
    deeper = build_tiny_components(TinyWanConfig(layers=4))["transformer"]
    with pytest.raises(AdapterImportError, match=r"do not exist in this model \(2 blocks\)"):
        import_lora(save(random_lora_state(deeper)), tiny["transformer"].config, filename="deep.safetensors")
    not_lora = {"blocks.0.attn1.to_q.weight": torch.zeros(24, 24)}
    with pytest.raises(AdapterImportError, match="no LoRA tensors"):
        import_lora(save(not_lora), tiny["transformer"], filename="full.safetensors")


def test_musubi_layout_with_feed_forward_layers(tiny, tmp_path):
    transformer = tiny["transformer"]
    state = random_lora_state(transformer, ffn=True, seed=5)
    diffusers_bytes, found = import_lora(save(state), transformer, filename="d.safetensors")
    assert len(found.modules) == 20  # 2 blocks x (8 attention projections + 2 feed-forward layers)
    musubi_bytes, found = import_lora(save(to_musubi_layout(state)), transformer, filename="musubi.safetensors")
    assert found.layout == "musubi" and len(found.modules) == 20
    pipe = make_pipe(build_tiny_components())
    outputs = []
    for name, data in (("d", diffusers_bytes), ("m", musubi_bytes)):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        pipe.load_lora_weights(str(path), adapter_name=name)
        pipe.set_adapters([name])
        outputs.append(generate_latent(pipe, "mara walks"))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)
