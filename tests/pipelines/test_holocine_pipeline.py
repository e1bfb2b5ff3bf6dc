"""HoloCine presets end to end on tiny fabricated files: the Wan2.2 A14B diffusers folder plus HoloCine's two
expert files in Wan's original key names, found where their release puts them, run with their conventions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from safetensors.torch import save_file

from pipelines import ModelWeightsMissingError, ShotSpec, get_preset, load_pipeline
from pipelines.holocine import HoloCineFlowScheduler, HoloCinePipeline
from pipelines.tiny import build_tiny_two_expert_components, to_original_wan_keys

REPO = Path(__file__).resolve().parents[2]
SIZE = dict(height=32, width=32, num_inference_steps=4, max_sequence_length=64)
SHOTS = [ShotSpec("wide shot, mara climbs the stairs", 9), ShotSpec("close-up, mara lights the lamp", 5)]


def _holocine_expert(seed: int, like) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = WanTransformer3DModel.from_config(like.config)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """MODEL_DIR as a HoloCine user has it: the A14B diffusers folder under its repo name, HoloCine_dit/sparse/."""
    root = tmp_path_factory.mktemp("models")
    components = build_tiny_two_expert_components()
    components["scheduler"] = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                      flow_shift=12.0)  # fmt: skip
    WanPipeline(**components).save_pretrained(root / "Wan2.2-T2V-A14B-Diffusers", max_shard_size="40KB")
    (root / "HoloCine_dit" / "sparse").mkdir(parents=True)
    experts = {}
    for seed, name in ((11, "sparse_high_noise"), (12, "sparse_low_noise")):
        experts[name] = _holocine_expert(seed, components["transformer"])
        save_file(to_original_wan_keys(experts[name], "model.diffusion_model."),
                  root / "HoloCine_dit" / "sparse" / f"{name}.safetensors")  # fmt: skip
    return root, experts


def test_holocine_preset_loads_their_experts_on_the_a14b_folder(model_root):
    root, experts = model_root
    pipe = load_pipeline("holocine-sparse", model_root=root)
    assert isinstance(pipe, HoloCinePipeline) and pipe.config.self_attention == "sparse"
    for module, name in ((pipe.transformer, "sparse_high_noise"), (pipe.transformer_2, "sparse_low_noise")):
        state = module.state_dict()
        assert all(torch.equal(state[k], v) for k, v in experts[name].items())  # HoloCine's, not the base's
    assert isinstance(pipe.scheduler, HoloCineFlowScheduler) and pipe.scheduler.config.shift == 5.0
    assert pipe.config.boundary_ratio == 0.875


def test_missing_holocine_files_are_named_with_every_place_searched(model_root, tmp_path, monkeypatch):
    root, _ = model_root
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelWeightsMissingError) as err:
        load_pipeline("holocine-full", model_root=root)
    message = str(err.value)
    assert "full_high_noise.safetensors" in message and "full_low_noise.safetensors" in message
    assert f"{root / 'Wan2.2-T2V-A14B-Diffusers'}: missing: full_high_noise.safetensors" in message
    assert "HoloCine_dit/full/" in message


def test_their_sampler_sigmas():
    scheduler = HoloCineFlowScheduler(shift=5.0)
    scheduler.set_timesteps(4)
    # linspace(1, 0, 5)[:-1] = 1, .75, .5, .25 shifted by 5: s' = 5 s / (1 + 4 s); then 0.
    expected = [1.0, 3.75 / 4.0, 2.5 / 3.0, 1.25 / 2.0, 0.0]
    assert torch.allclose(scheduler.sigmas, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(scheduler.timesteps, torch.tensor(expected[:-1]) * 1000, atol=1e-3)


def test_two_shot_scene_is_one_video_cut_at_the_shot_starts(model_root):
    root, _ = model_root
    pipe = load_pipeline("holocine-sparse", model_root=root)
    counts = {"high": 0, "low": 0}

    def counter(name):
        return lambda *_: counts.__setitem__(name, counts[name] + 1)

    hooks = [pipe.transformer.register_forward_pre_hook(counter("high")),
             pipe.transformer_2.register_forward_pre_hook(counter("low"))]  # fmt: skip
    try:
        out = pipe(shots=SHOTS, global_caption="a lighthouse at night", generator=torch.Generator().manual_seed(0),
                   **SIZE)  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    # Timesteps 1000, 937.5, 833.3, 625: two steps on each expert, two passes (with and without the text) each.
    assert counts == {"high": 4, "low": 4}
    assert [s.shape[0] for s in out.shots] == [9, 5]
    assert out.parameters["prompt"] == (
        "[global caption] a lighthouse at night This scene contains 2 shots. [per shot caption] wide shot, mara "
        "climbs the stairs [shot cut] close-up, mara lights the lamp"
    )
    # One decode of the whole scene (3 + 2 latent frames -> 17 frames), cut where shot 1 starts: 4 * 3 - 3 = 9.
    with torch.no_grad():
        whole = pipe.decode_latents(torch.cat(out.latents, dim=2), "np")
    assert whole.shape[0] == 17
    assert np.array_equal(out.shots[0], whole[:9]) and np.array_equal(out.shots[1], whole[9:14])
    # Regenerating shot 1 runs inpaint against shot 0's latent, which comes back bit for bit.
    again = pipe(shots=SHOTS, global_caption="a lighthouse at night", regenerate=[1], context_latents=out.latents,
                 generator=torch.Generator().manual_seed(5), output_type="latent", **SIZE)  # fmt: skip
    assert torch.equal(again.latents[0], out.latents[0]) and not torch.equal(again.latents[1], out.latents[1])


def test_holocine_refuses_what_it_was_not_trained_for(model_root):
    root, _ = model_root
    pipe = load_pipeline("holocine-sparse", model_root=root)
    with pytest.raises(ValueError, match="window cross-attention"):
        pipe(shots=SHOTS, cross_attention="mmrope", **SIZE)
    with pytest.raises(ValueError, match="'full' or 'sparse'"):
        pipe(shots=SHOTS, self_attention="isolated", **SIZE)
    with pytest.raises(ValueError, match="over the 241 HoloCine generates at once"):
        pipe(shots=[ShotSpec("a lamp", 121), ShotSpec("the sea", 125)], **SIZE)
    with pytest.raises(ValueError, match="does not fit HoloCine's 16 text tokens"):
        pipe(shots=SHOTS, global_caption="a lighthouse at night", **{**SIZE, "max_sequence_length": 16})


STORYBOARD = """\
title: HoloCine Test
model: holocine-sparse
width: 32
height: 32
steps: 3
scenes:
  - caption: a lighthouse at night
    shots:
      - caption: wide shot, mara climbs the stairs
        frames: 9
      - caption: close-up, mara lights the lamp
        frames: 5
"""


def test_render_a_two_shot_storyboard_through_the_cli(model_root, tmp_path):
    root, _ = model_root
    story = tmp_path / "story.yaml"
    story.write_text(STORYBOARD)
    film = tmp_path / "film.mp4"
    data = tmp_path / "data"
    command = [sys.executable, "-m", "studio", "--data-dir", str(data), "render", str(story), "--out", str(film),
               "--model-dir", str(root), "--device", "cpu", "--dtype", "fp32"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    reader = imageio_ffmpeg.read_frames(str(film))
    meta = next(reader)
    assert meta["fps"] == get_preset("holocine-sparse").fps and sum(1 for _ in reader) == 9 + 5

    from studio.config import load_settings
    from studio.services import build_services

    services = build_services(load_settings(None, data_dir=str(data)))
    try:
        project = services.projects.get_by_name("HoloCine Test")
        takes = [services.takes.chosen_take(shot.id) for shot in services.storyboard.film_shots(project.id)]
        params = [take.params for take in takes]
        assert [p["model"] for p in params] == ["holocine-sparse"] * 2
        assert params[0]["pipeline"]["conventions"] == "holocine"
        assert params[0]["pipeline"]["prompt"].startswith("[global caption] a lighthouse at night This scene")
        assert params[0]["guidance_scale_2"] == 5.0
    finally:
        services.close()
