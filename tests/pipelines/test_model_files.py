"""Real model layouts as film-makers download them, fabricated tiny: Wan2.2 A14B diffusers folders (two experts,
sharded safetensors with index files, Wan's UniPC scheduler config), single-file checkpoints in the original and
ComfyUI key formats, fp8-scaled files, and the places weights are looked for."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file

from pipelines import ModelWeightsMissingError, ShotSpec, get_preset, load_pipeline
from pipelines.checkpoints import CheckpointError
from pipelines.loading import ModelFolderError, find_model
from pipelines.tiny import build_tiny_components, build_tiny_two_expert_components, to_original_wan_keys

# The scheduler config Wan-AI's diffusers repositories ship (UniPC with flow sigmas; their own flow_shift).
WAN_UNIPC_CONFIG = dict(
    beta_end=0.02,
    beta_schedule="linear",
    beta_start=0.0001,
    disable_corrector=[],
    dynamic_thresholding_ratio=0.995,
    final_sigmas_type="zero",
    flow_shift=3.0,
    lower_order_final=True,
    num_train_timesteps=1000,
    predict_x0=True,
    prediction_type="flow_prediction",
    rescale_betas_zero_snr=False,
    sample_max_value=1.0,
    solver_order=2,
    solver_p=None,
    solver_type="bh2",
    steps_offset=0,
    thresholding=False,
    timestep_spacing="linspace",
    trained_betas=None,
    use_beta_sigmas=False,
    use_exponential_sigmas=False,
    use_flow_sigmas=True,
    use_karras_sigmas=False,
)


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}


def _same_weights(model, expected: dict[str, torch.Tensor]) -> bool:
    got = model.state_dict()
    return set(got) == set(expected) and all(torch.equal(got[k].float(), expected[k].float()) for k in expected)


def _save_folder(components: dict, folder) -> None:
    components = dict(components, scheduler=UniPCMultistepScheduler(**WAN_UNIPC_CONFIG))
    # Small shards: the transformers are written as diffusion_pytorch_model-0000N-of-0000M.safetensors + index.
    WanPipeline(**components).save_pretrained(folder, max_shard_size="40KB")


def _strip_transformer_weights(folder, component: str = "transformer") -> None:
    for path in (folder / component).iterdir():
        if path.name != "config.json":
            path.unlink()


@pytest.fixture(scope="module")
def experts():
    return build_tiny_two_expert_components()


@pytest.fixture(scope="module")
def a14b_folder(tmp_path_factory, experts):
    folder = tmp_path_factory.mktemp("models") / "Wan2.2-T2V-A14B-Diffusers"
    _save_folder(experts, folder)
    return folder


@pytest.fixture(scope="module")
def one_expert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "wan2.1-t2v-1.3b"
    _save_folder(build_tiny_components(), folder)
    return folder


def test_the_fabricated_a14b_folder_has_the_real_layout(a14b_folder):
    index = json.loads((a14b_folder / "model_index.json").read_text())
    assert index["transformer_2"] == ["diffusers", "WanTransformer3DModel"] and index["boundary_ratio"] == 0.875
    for component in ("transformer", "transformer_2"):
        assert (a14b_folder / component / "diffusion_pytorch_model.safetensors.index.json").is_file()
        assert len(list((a14b_folder / component).glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    assert json.loads((a14b_folder / "scheduler" / "scheduler_config.json").read_text())["use_flow_sigmas"] is True


def test_a14b_preset_loads_both_experts_from_a_folder_named_after_the_repo(a14b_folder, experts):
    pipe = load_pipeline("wan2.2-t2v-a14b", model_root=a14b_folder.parent)
    assert _same_weights(pipe.transformer, _state(experts["transformer"]))
    assert _same_weights(pipe.transformer_2, _state(experts["transformer_2"]))
    assert pipe.config.boundary_ratio == 0.875
    # The folder's own flow_shift wins (the project sets none); a project's shift replaces it.
    assert pipe.scheduler.config.flow_shift == 3.0
    assert load_pipeline("wan2.2-t2v-a14b", model_dir=a14b_folder, flow_shift=12.0).scheduler.config.flow_shift == 12
    out = pipe(
        shots=[ShotSpec("a red lamp", 5), ShotSpec("the sea", 5)],
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=4.0,
        guidance_scale_2=3.0,
        max_sequence_length=8,
        output_type="latent",
    )
    assert out.parameters["boundary_ratio"] == 0.875 and out.parameters["guidance_scale_2"] == 3.0


def test_a_two_expert_folder_is_never_loaded_as_a_one_expert_preset(a14b_folder, one_expert_folder, tmp_path):
    for preset in ("wan2.1-t2v-14b", "wan2.1-t2v-1.3b"):
        with pytest.raises(ModelFolderError, match="two-expert.*transformer_2.*'wan2.2-t2v-a14b'"):
            load_pipeline(preset, model_dir=a14b_folder)
    # Placed in a one-expert preset's folder under the model root, it is refused there too (not skipped).
    shutil.copytree(a14b_folder, tmp_path / "wan2.1-t2v-14b")
    with pytest.raises(ModelFolderError, match="only the high-noise expert"):
        load_pipeline("wan2.1-t2v-14b", model_root=tmp_path)
    with pytest.raises(ModelFolderError, match="names no transformer_2"):
        load_pipeline("wan2.2-t2v-a14b", model_dir=one_expert_folder)


def test_a_replaced_scheduler_is_logged(tmp_path, caplog):
    folder = tmp_path / "wan2.1-t2v-1.3b"
    WanPipeline(**build_tiny_components()).save_pretrained(folder)  # ships FlowMatchEulerDiscreteScheduler
    with caplog.at_level("WARNING", logger="pipelines.loading"):
        pipe = load_pipeline("wan2.1-t2v-1.3b", model_root=tmp_path)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert "FlowMatchEulerDiscreteScheduler" in caplog.text and "UniPC" in caplog.text


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_single_file_original_keys_load_to_the_same_weights(one_expert_folder, tmp_path, prefix):
    folder = tmp_path / "wan2.1-t2v-1.3b"
    shutil.copytree(one_expert_folder, folder)
    expected = _state(WanTransformer3DModel.from_pretrained(one_expert_folder / "transformer"))
    _strip_transformer_weights(folder)
    name = "wan2.1_t2v_1.3B_bf16.safetensors"
    save_file(to_original_wan_keys(expected, prefix), folder / name)
    location = find_model(get_preset("wan2.1-t2v-1.3b"), model_root=tmp_path)
    assert location.checkpoints == {"transformer": folder / name}
    pipe = load_pipeline("wan2.1-t2v-1.3b", model_root=tmp_path)
    assert _same_weights(pipe.transformer, expected)
    # STUDIO_MODEL_DIR / --model-dir may name the file itself; the file may also sit in transformer/.
    (folder / name).rename(folder / "transformer" / name)
    in_transformer = folder / "transformer" / name
    assert _same_weights(load_pipeline("wan2.1-t2v-1.3b", model_dir=in_transformer).transformer, expected)
    assert _same_weights(load_pipeline("wan2.1-t2v-1.3b", model_root=in_transformer).transformer, expected)


def test_single_file_pair_for_two_experts(a14b_folder, experts, tmp_path):
    folder = tmp_path / "wan2.2-t2v-a14b"
    shutil.copytree(a14b_folder, folder)
    preset = get_preset("wan2.2-t2v-a14b")
    for component, name in zip(("transformer", "transformer_2"), preset.checkpoint_files, strict=True):
        _strip_transformer_weights(folder, component)
        save_file(to_original_wan_keys(_state(experts[component]), "model.diffusion_model."), folder / name)
    pipe = load_pipeline("wan2.2-t2v-a14b", model_root=tmp_path)
    assert _same_weights(pipe.transformer, _state(experts["transformer"]))
    assert _same_weights(pipe.transformer_2, _state(experts["transformer_2"]))
    # Other names: a high/low pair is recognised by name, and naming one file finds its partner.
    for name in preset.checkpoint_files:
        (folder / name).rename(folder / name.replace("_14B_fp16", "_14B_bf16_custom"))
    high = folder / preset.checkpoint_files[0].replace("_14B_fp16", "_14B_bf16_custom")
    assert set(find_model(preset, model_root=tmp_path).checkpoints) == {"transformer", "transformer_2"}
    assert _same_weights(
        load_pipeline("wan2.2-t2v-a14b", model_dir=high).transformer_2, _state(experts["transformer_2"])
    )


def test_fp8_scaled_checkpoint_is_dequantised(one_expert_folder, tmp_path):
    folder = tmp_path / "wan2.1-t2v-1.3b"
    shutil.copytree(one_expert_folder, folder)
    expected = _state(WanTransformer3DModel.from_pretrained(one_expert_folder / "transformer"))
    _strip_transformer_weights(folder)
    original = to_original_wan_keys(expected, "model.diffusion_model.")
    quantised = {"scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    for key, value in original.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max().clamp(min=1e-8) / 448.0
            quantised[key] = (value / scale).to(torch.float8_e4m3fn)
            quantised[key.removesuffix(".weight") + ".scale_weight"] = scale.reshape(1)
        else:
            quantised[key] = value
    save_file(quantised, folder / "wan2.1_t2v_1.3B_fp8_scaled.safetensors")
    pipe = load_pipeline("wan2.1-t2v-1.3b", model_root=tmp_path)
    got = pipe.transformer.state_dict()
    for key, value in expected.items():
        # e4m3 keeps 3 mantissa bits: each weight within 1/16 of its magnitude (plus the scale's rounding).
        assert (got[key] - value).abs().max() <= value.abs().max() / 16 + 1e-6, key
    assert not torch.equal(got["blocks.0.attn1.to_q.weight"], expected["blocks.0.attn1.to_q.weight"])


def test_bad_checkpoints_are_refused_naming_the_file(one_expert_folder, tmp_path):
    folder = tmp_path / "wan2.1-t2v-1.3b"
    shutil.copytree(one_expert_folder, folder)
    _strip_transformer_weights(folder)
    good = to_original_wan_keys(_state(WanTransformer3DModel.from_pretrained(one_expert_folder / "transformer")))
    path = folder / "wan2.1_t2v_1.3B_bf16.safetensors"

    save_file(good, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=f"{path}.*truncated.*download it again"):
        load_pipeline("wan2.1-t2v-1.3b", model_dir=folder)

    bigger = WanTransformer3DModel.from_config(
        {**dict(WanTransformer3DModel.load_config(folder / "transformer")), "attention_head_dim": 24}
    )
    save_file(to_original_wan_keys(_state(bigger)), path)
    with pytest.raises(CheckpointError, match=f"{path} is for another model size.*blocks.0.attn1.to_q.weight"):
        load_pipeline("wan2.1-t2v-1.3b", model_dir=folder)

    save_file(to_original_wan_keys(_state(build_tiny_components()["vae"])), path)
    with pytest.raises(CheckpointError, match=f"{path} is a VAE"):
        load_pipeline("wan2.1-t2v-1.3b", model_dir=folder)

    lora = {
        "blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 24),
        "blocks.0.self_attn.q.lora_B.weight": torch.zeros(24, 4),
    }
    save_file(lora, path)
    with pytest.raises(CheckpointError, match="LoRA adapter"):
        load_pipeline("wan2.1-t2v-1.3b", model_dir=folder)

    path.unlink()
    pickle = folder / "wan2.1_t2v_1.3B.pth"
    pickle.write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"only \.safetensors"):
        load_pipeline("wan2.1-t2v-1.3b", model_dir=pickle)


def test_missing_weights_list_every_place_searched_and_the_files_expected(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "models"
    (root / "wan2.2-t2v-a14b").mkdir(parents=True)
    (root / "wan2.2-t2v-a14b" / "wan2.2_t2v_high_noise_14B_fp16.safetensors").write_bytes(b"")
    with pytest.raises(ModelWeightsMissingError) as err:
        load_pipeline("wan2.2-t2v-a14b", model_root=root)
    message = str(err.value)
    assert f"{root / 'wan2.2-t2v-a14b'}: missing: model_index.json, tokenizer/" in message
    assert f"{root / 'Wan2.2-T2V-A14B-Diffusers'}: not found" in message
    assert str(tmp_path / "hub" / "models--Wan-AI--Wan2.2-T2V-A14B-Diffusers") in message
    for expected in ("transformer_2/", "wan2.2_t2v_low_noise_14B_fp16.safetensors", "huggingface-cli download"):
        assert expected in message


def test_worker_cache_finds_the_repo_named_folder(a14b_folder):
    from studio.worker.cache import PipelineCache

    cache = PipelineCache(torch.device("cpu"), torch.float32, model_root=a14b_folder.parent)
    pipe = cache.get("wan2.2-t2v-a14b")
    assert pipe.transformer_2 is not None and cache.get("wan2.2-t2v-a14b") is pipe
    cache.clear()
    assert cache.key is None


def test_imported_loras_are_checked_against_the_folder_the_preset_loads(a14b_folder, tmp_path):
    from adapters.importing import AdapterImportError, inspect_lora
    from studio.characters.adapters import transformer_config_for

    config = transformer_config_for("wan2.2-t2v-a14b", a14b_folder.parent)  # found in the repo-named folder
    assert config["num_layers"] == 2 and config["attention_head_dim"] == 12
    bigger = WanTransformer3DModel.from_config({**dict(config), "attention_head_dim": 24})
    lora = {}
    for name, module in bigger.named_modules():
        if name.startswith("blocks.") and name.endswith("attn1.to_q"):
            lora[f"transformer.{name}.lora_A.weight"] = torch.zeros(2, module.in_features)
            lora[f"transformer.{name}.lora_B.weight"] = torch.zeros(module.out_features, 2)
    path = tmp_path / "for_a_bigger_model.safetensors"
    save_file(lora, path)
    with pytest.raises(AdapterImportError, match="made for another model"):
        inspect_lora(path, transformer_or_config=config)
