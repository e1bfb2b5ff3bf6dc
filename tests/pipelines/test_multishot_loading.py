"""load_pipeline and select_device_and_dtype: presets, offline folders, clear errors for missing weights."""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

from pipelines import (
    PRESETS,
    ModelWeightsMissingError,
    MultiShotPipeline,
    ShotSpec,
    get_preset,
    load_pipeline,
    select_device_and_dtype,
)
from pipelines.loading import EXPECTED_FILES


@pytest.fixture(scope="module")
def saved_tiny_folder(tmp_path_factory, tiny_components):
    """The tiny components saved in the diffusers folder layout real Wan repositories use."""
    folder = tmp_path_factory.mktemp("wan-folder")
    WanPipeline(**tiny_components).save_pretrained(folder)
    return folder


def test_select_device_and_dtype_on_cpu():
    assert select_device_and_dtype() == (torch.device("cpu"), torch.float32)
    assert select_device_and_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert select_device_and_dtype("cpu", torch.float16) == (torch.device("cpu"), torch.float16)
    with pytest.raises(ValueError, match="unknown dtype"):
        select_device_and_dtype("cpu", "int4")
    with pytest.raises(ValueError, match="unknown device"):
        select_device_and_dtype("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device_and_dtype("cuda")


def test_tiny_preset_builds_a_pipeline_with_the_preset_defaults():
    pipe = load_pipeline("tiny", vae_tiling=True)
    preset = get_preset("tiny")
    assert isinstance(pipe, MultiShotPipeline)
    assert pipe.vae.use_tiling and pipe.preset is preset
    assert pipe.config.cross_attention == preset.cross_attention
    assert pipe.config.regenerate_mode == preset.regenerate_mode
    assert pipe.config.gap == preset.gap
    assert pipe.scheduler.config.shift == preset.flow_shift
    out = pipe(
        shots=[ShotSpec("a red lamp", 5), ShotSpec("the sea", 5)],
        height=preset.height,
        width=preset.width,
        num_inference_steps=1,
        max_sequence_length=preset.max_sequence_length,
        output_type="latent",
    )
    assert len(out.latents) == 2 and out.parameters["cross_attention"] == "mmrope"


def test_real_preset_loads_from_a_local_folder_with_unipc_and_flow_shift(saved_tiny_folder):
    pipe = load_pipeline("wan2.1-t2v-1.3b", model_dir=saved_tiny_folder)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe.scheduler.config.flow_shift == PRESETS["wan2.1-t2v-1.3b"].flow_shift
    assert pipe.scheduler.config.use_flow_sigmas and pipe.scheduler.config.prediction_type == "flow_prediction"
    assert pipe.config.self_attention == "sparse" and pipe.config.regenerate_mode == "inpaint"
    assert pipe.vae.dtype == torch.float32
    out = pipe(shots=[ShotSpec("a red lamp", 5)], height=32, width=32, num_inference_steps=2, max_sequence_length=8)
    assert out.shots[0].shape == (5, 32, 32, 3)


def test_demo_preset_loads_the_diffusers_folder_layout(saved_tiny_folder):
    pipe = load_pipeline("demo", model_dir=saved_tiny_folder)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.scheduler.config.shift == PRESETS["demo"].flow_shift
    assert pipe.config.cross_attention == "mmrope"


def test_missing_demo_weights_name_the_folder_and_files(tmp_path):
    with pytest.raises(ModelWeightsMissingError, match="model_index.json") as err:
        load_pipeline("demo", model_dir=tmp_path / "nothing-here")
    assert str(tmp_path / "nothing-here") in str(err.value)
    assert all(name in str(err.value) for name in EXPECTED_FILES)
    assert isinstance(err.value, ValueError)


def test_missing_real_weights_name_the_hf_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelWeightsMissingError) as err:
        load_pipeline("wan2.1-t2v-14b")
    message = str(err.value)
    assert str(tmp_path / "hub" / "models--Wan-AI--Wan2.1-T2V-14B-Diffusers") in message
    assert "Wan-AI/Wan2.1-T2V-14B-Diffusers" in message and "model_index.json" in message


def test_incomplete_folder_lists_what_is_missing(saved_tiny_folder, tmp_path):
    (tmp_path / "model_index.json").write_text((saved_tiny_folder / "model_index.json").read_text())
    missing = "missing: tokenizer/, text_encoder/, vae/, scheduler/, transformer/"
    with pytest.raises(ModelWeightsMissingError, match=missing):
        load_pipeline("wan2.1-t2v-1.3b", model_dir=tmp_path)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="unknown model preset"):
        load_pipeline("wan9")
    with pytest.raises(ValueError, match="offload must be one of"):
        load_pipeline("tiny", offload="disk")
    with pytest.raises(ValueError, match="on CPU use 'none'"):
        load_pipeline("tiny", device="cpu", offload="model")
