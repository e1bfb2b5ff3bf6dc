"""Importing LoRAs as character adapters, using them on a pipeline through the services, identity scores of takes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from character_helpers import BLUE, RED, add_analysed, mp4_bytes, png_bytes, tiny_project
from face_models import face_picture
from safetensors.torch import save

from pipelines.tiny import TinyWanConfig, build_tiny_components
from studio.characters.adapters import adapters_to_train, import_adapter
from studio.characters.faces import FaceAnalyzer
from studio.characters.references import score_take
from studio.characters.runtime import apply_adapters, substitute_captions
from studio.services.errors import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))
from adapter_helpers import random_lora_state, to_wan_original_layout  # noqa: E402


@pytest.fixture(scope="module")
def tiny_transformer():
    return build_tiny_components()["transformer"]


def test_import_registers_a_ready_adapter_and_refusals_register_nothing(services, tiny_transformer):
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara", adapter_kind="lora")
    community = save(to_wan_original_layout(random_lora_state(tiny_transformer)))
    adapter = import_adapter(services, mara.id, "mara_comfy.safetensors", community, trigger_text="mara woman")
    assert (adapter.kind, adapter.status, adapter.version) == ("imported", "ready", 1)
    assert adapter.hyperparameters["layout"] == "wan-original" and adapter.hyperparameters["rank"] == 2
    # An imported LoRA satisfies a character that asks for a LoRA: nothing to train.
    assert adapters_to_train(services, project.id) == []

    pickle = io.BytesIO()
    torch.save(random_lora_state(tiny_transformer), pickle)
    wide = build_tiny_components(TinyWanConfig(heads=4))["transformer"]
    refused = [
        ("mara.pt", pickle.getvalue(), "pickle"),
        ("mara.safetensors", pickle.getvalue(), "pickle"),
        ("mara.safetensors", b"\xff" * 8 + community[8:], "corrupt safetensors header"),
        ("wide.safetensors", save(random_lora_state(wide)), "made for another model"),
    ]
    for filename, data, message in refused:
        with pytest.raises(ValidationError, match=message):
            import_adapter(services, mara.id, filename, data)
    assert len(services.characters.list_adapters(mara.id)) == 1


def test_scene_adapters_apply_through_the_services(sqlite_services, tiny_transformer):
    from pipelines import MultiShotPipeline

    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    adapter = import_adapter(services, mara.id, "m.safetensors", save(random_lora_state(tiny_transformer)), "maraw")
    pipe = MultiShotPipeline(**build_tiny_components())
    applied = apply_adapters(pipe, ((adapter.id, adapter.version),), services)
    assert applied.lora_names == [f"imported_{adapter.id}_v1"]
    assert substitute_captions(pipe, ["<mara> climbs", "sea"]) == ["maraw climbs", "sea"]
    assert applied.records()[0]["character"] == "Mara"
    with pytest.raises(ValueError, match="not 7"):
        apply_adapters(pipe, ((adapter.id, 7),), services)
    apply_adapters(pipe, (), services)
    assert substitute_captions(pipe, ["<mara> climbs"]) == ["<mara> climbs"]


def test_identity_scores_of_a_take(services, face_model_dir):
    analyzer = FaceAnalyzer(face_model_dir)
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    tom = services.characters.create(project.id, "Tom")
    add_analysed(services, mara.id, "mara.png", png_bytes(face_picture([(10, 10, 64, RED)])), analyzer)
    add_analysed(services, tom.id, "tom.png", png_bytes(face_picture([(10, 10, 64, BLUE)])), analyzer)
    scene = services.storyboard.add_scene(project.id, "a lighthouse")
    both = services.storyboard.add_shot(scene.id, "Mara and Tom", num_frames=9, characters=[mara.id, tom.id])
    empty = services.storyboard.add_shot(scene.id, "the sea", num_frames=9, characters=[mara.id])
    nobody = services.storyboard.add_shot(scene.id, "the lamp", num_frames=9)

    def take(shot, frames):
        return services.takes.add_take(shot.id, None, mp4_bytes(frames), png_bytes(frames[0]), None, 1, {})

    mara_video = np.stack([face_picture([(30 + 2 * i, 30, 60, RED)]) for i in range(9)])
    scores = score_take(services, take(both, mara_video).id, analyzer)
    assert scores["Mara"] > 0.95 and scores["Tom"] < scores["Mara"] - 0.1
    blank = np.stack([face_picture([])] * 9)
    blank_take = take(empty, blank)
    assert score_take(services, blank_take.id, analyzer) == {"Mara": "no face found"}
    assert services.takes.get(blank_take.id).identity_scores == {"Mara": "no face found"}
    assert score_take(services, take(nobody, blank).id, analyzer) is None
    # Without face models: nothing stored, nothing raised.
    missing = FaceAnalyzer(services.settings.data_dir / "no-models")
    other = take(both, mara_video)
    assert score_take(services, other.id, missing) is None and services.takes.get(other.id).identity_scores is None


def test_scene_adapters_follow_the_project_preset(sqlite_services, tiny_transformer):
    from studio.characters.runtime import scene_adapters

    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    tom = services.characters.create(project.id, "Tom")
    old = import_adapter(services, mara.id, "a.safetensors", save(random_lora_state(tiny_transformer, seed=1)))
    new = import_adapter(services, mara.id, "b.safetensors", save(random_lora_state(tiny_transformer, seed=2)))
    assert old.version == 1 and new.version == 2
    assert [a.id for a in scene_adapters(services, project.id, [mara.id, tom.id, mara.id])] == [new.id]
    services.projects.update_settings(project.id, preset="demo")
    assert scene_adapters(services, project.id, [mara.id]) == []  # a tiny-model LoRA would not load on demo


WAN_1_3B = {
    "_class_name": "WanTransformer3DModel",
    "patch_size": [1, 2, 2],
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-06,
    "rope_max_seq_len": 1024,
}


def _zero_lora(width: int, blocks: int, rank: int = 1) -> dict:
    state = {}
    for block in range(blocks):
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                base = f"diffusion_model.blocks.{block}.{attn}.{proj}"
                state[f"{base}.lora_down.weight"] = torch.zeros(rank, width)
                state[f"{base}.lora_up.weight"] = torch.zeros(width, rank)
    return state


def test_import_checks_a_real_model_config_without_its_weights(sqlite_services, tmp_path):
    import json

    services = sqlite_services
    folder = services.settings.resolved_model_dir / "wan2.1-t2v-1.3b" / "transformer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(WAN_1_3B))
    project = services.projects.create("Real", preset="wan2.1-t2v-1.3b")
    mara = services.characters.create(project.id, "Mara")
    adapter = import_adapter(services, mara.id, "mara13b.safetensors", save(_zero_lora(1536, 30)))
    assert adapter.base_preset == "wan2.1-t2v-1.3b" and adapter.hyperparameters["modules"] == 240
    with pytest.raises(ValidationError, match="made for another model"):
        import_adapter(services, mara.id, "mara14b.safetensors", save(_zero_lora(5120, 40)))
    assert len(services.characters.list_adapters(mara.id)) == 1

    other = services.projects.create("Elsewhere", preset="wan2.1-t2v-14b")
    tom = services.characters.create(other.id, "Tom")
    with pytest.raises(ValidationError, match="weights for model preset 'wan2.1-t2v-14b' are missing"):
        import_adapter(services, tom.id, "tom.safetensors", save(_zero_lora(5120, 1)))


def test_embedding_adapter_through_the_job_and_runtime(sqlite_services):
    from pipelines import MultiShotPipeline, ShotSpec
    from studio.characters.adapters import request_training
    from studio.characters.training import run_train_adapter

    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara", adapter_kind="embedding")
    services.characters.add_reference(mara.id, "m.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    job = request_training(services, mara.id, hyperparameters={"steps": 10, "num_vectors": 2})
    claimed = services.jobs.claim_next_job("w", kinds=("train_adapter",))
    result = run_train_adapter(services, claimed, lambda *a, **k: None, lambda: False)
    assert claimed.id == job.id and result["kind"] == "embedding"

    def latent(pipe, caption):
        out = pipe(
            shots=[ShotSpec(caption=caption, num_frames=1)],
            height=32,
            width=32,
            num_inference_steps=2,
            guidance_scale=1.0,
            max_sequence_length=16,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
        return out.latents[0]

    pipe = MultiShotPipeline(**build_tiny_components(), cross_attention="full")
    before = latent(pipe, "<mara> climbs")
    apply_adapters(pipe, ((result["adapter_id"], result["version"]),), services)
    [caption] = substitute_captions(pipe, ["<mara> climbs"])
    assert caption == "<mara> <mara_1> climbs"
    assert pipe.tokenizer.tokenize(caption) == ["<mara>", "<mara_1>", "climbs"]
    assert (latent(pipe, caption) - before).abs().max() > 1e-3


def test_a_scene_plan_scopes_each_character_lora_to_the_shots_that_show_the_character(
    sqlite_services, tiny_transformer
):
    from pipelines import MultiShotPipeline
    from studio.worker.generation import plan_scene

    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    tom = services.characters.create(project.id, "Tom")
    lora = import_adapter(services, mara.id, "m.safetensors", save(random_lora_state(tiny_transformer)), "maraw")
    scene = services.storyboard.add_scene(project.id, caption="a lighthouse")
    for caption, who in (
        ("<mara> climbs", [mara.id]),
        ("<tom> waits", [tom.id]),
        ("<mara> and <tom>", [mara.id, tom.id]),
    ):
        services.storyboard.add_shot(scene.id, caption, characters=who)
    plan = plan_scene(services, project, services.storyboard.get_scene(scene.id), None, seed=1)
    assert plan.lora_shots == {f"imported_{lora.id}_v1": [0, 2]}  # not Tom's shot
    # The name is the one the LoRA is loaded under, so the pipeline accepts the scope.
    pipe = MultiShotPipeline(**build_tiny_components())
    assert apply_adapters(pipe, plan.adapters, services).lora_names == list(plan.lora_shots)
