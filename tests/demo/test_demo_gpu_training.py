"""The one-command GPU training session (training/train_gpu.py) and the autoencoder loss it shares with
training/train_vae.py. The end-to-end run takes a minute on the CPU, so it is marked slow."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from training.train_gpu import render_pool
from training.train_vae import figure_mask, frames_to_pixels, permute_colours
from training.world import COLOURS, INK, make_shot, recorded_figure_scale, render_shot, sample_shot


@pytest.mark.parametrize("figure_scale", ["wide14", "wide20"])
def test_pool_is_the_same_draw_as_the_cpu_shot_cache(figure_scale):
    frames, labels = render_pool(seed=3, count=5, workers=1, figure_scale=figure_scale)
    assert frames.shape == (5, 17, 64, 64, 3) and frames.dtype == np.uint8
    for i in range(5):
        expected = sample_shot(np.random.default_rng([3, i]), figure_scale=figure_scale)  # `train_demo cache`'s draw
        assert labels[i] == asdict(expected)
        assert np.array_equal(frames[i], render_shot(expected, size=64, num_frames=17))
    again, _ = render_pool(seed=3, count=5, workers=2, figure_scale=figure_scale)
    assert np.array_equal(frames, again)  # forked workers change nothing


def test_figure_mask_marks_exactly_the_character_and_ink_pixels():
    frames = render_shot(make_shot("tom", "desert", "close-up", "stays"), size=64, num_frames=5)
    x = frames_to_pixels(torch.from_numpy(frames[None]))
    mask = figure_mask(x)[0, 0].numpy().astype(bool)  # [F, H, W]
    palette = np.array([*COLOURS.values(), INK])
    expected = (frames[..., None, :] == palette).all(axis=-1).any(axis=-1)
    assert np.array_equal(mask, expected)
    assert 0.05 < mask.mean() < 0.5  # a close-up figure is a fair share of the frame, never all of it


def test_balanced_figure_weights_raise_small_figures_to_a_close_up_share():
    from training.train_vae import BALANCE_CAP, CLOSE_UP_AREA, FIGURE_WEIGHT, figure_weights

    def shot_mask(size: str) -> torch.Tensor:
        frames = render_shot(make_shot("tom", "desert", size, "stays"), size=64, num_frames=5)
        return figure_mask(frames_to_pixels(torch.from_numpy(frames[None])))

    wide, close = shot_mask("wide"), shot_mask("close-up")
    mask = torch.cat([wide, close])
    plain, balanced = figure_weights(mask), figure_weights(mask, balance=True)
    assert set(plain.unique().tolist()) == {1.0, FIGURE_WEIGHT}  # unbalanced: what every run trained with before
    assert torch.equal(balanced[mask == 0], plain[mask == 0])  # the background keeps weight 1
    figure_total = ((balanced - 1) * mask).sum(dim=(1, 2, 3, 4)).tolist()
    assert balanced[1][close[0] == 1].unique().tolist() == [FIGURE_WEIGHT]  # a close-up is not raised
    assert figure_total[0] == pytest.approx(figure_total[1], rel=0.35)  # the wide figure now weighs about as much
    assert wide.mean() < CLOSE_UP_AREA / 4 and balanced[0].max() <= 1 + (FIGURE_WEIGHT - 1) * BALANCE_CAP
    sliver = torch.zeros(1, 1, 1, 64, 64)
    sliver[..., 0, 0] = 1.0  # one figure pixel in a crop: capped, not a weight of thousands
    assert figure_weights(sliver, balance=True).max() == 1 + (FIGURE_WEIGHT - 1) * BALANCE_CAP


def test_permuted_colours_swap_channels_of_some_clips_only():
    x = torch.rand(64, 3, 2, 4, 4)
    gen = torch.Generator().manual_seed(0)
    y = permute_colours(x, gen, share=0.5)
    same = torch.tensor([torch.equal(a, b) for a, b in zip(x, y, strict=True)])
    assert 0.3 < (~same).float().mean() < 0.7  # about half the clips, and some permutations are the identity
    for a, b in zip(x, y, strict=True):  # every clip keeps its three channels, in some order
        assert sorted(a.sum(dim=(1, 2, 3)).tolist()) == pytest.approx(sorted(b.sum(dim=(1, 2, 3)).tolist()))
    assert torch.equal(permute_colours(x, gen, share=0.0), x)


def test_4x_vae_gives_16x16_latents_and_keeps_the_resolution_multiple_with_patch_4():
    from training.train_demo import transformer_config
    from training.train_vae import VAE_CONFIGS, build_vae

    vae = build_vae(0, VAE_CONFIGS[4]).eval()
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 17, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 16, 5, 16, 16)
    assert vae.config.scale_factor_spatial * transformer_config(patch=4)["patch_size"][1] == 16


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout",
    [
        # the shipped autoencoder as is; the transformer's layout follows from its 16x16 latents
        ["--init-vae", "assets/demo/vae", "--vae-seconds", "0"],
        # a new 4x autoencoder, and the same layout named by the flags
        ["--vae-compression", "4", "--balance-figures", "--patch", "4", "--heads", "8", "--ffn-dim", "640"],
    ],
    ids=["shipped-vae", "new-4x-vae"],
)
def test_one_command_session_exports_a_loadable_model(tmp_path, layout):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from training.train_gpu import main

    out = tmp_path / "gpu"
    main(
        ["all", "--out", str(out), "--device", "cpu", "--shots", "24", "--workers", "1", "--budget-seconds", "40"]
        + ["--vae-seconds", "4", "--vae-batch", "1", "--tokens", "320", "--text-encoder", "assets/demo/text_encoder"]
        + layout
        + ["--keep-pool"] * ("--init-vae" not in layout)
    )
    report = json.loads((out / "report.json").read_text())
    assert report["transformer_steps"] >= 1 and report["decoder_steps"] >= 1
    joint_steps = report["vae_steps"]
    assert joint_steps == 0 if "--init-vae" in layout else joint_steps >= 1
    if "--init-vae" in layout:  # no joint steps: the pool is encoded in the shipped latent space
        shipped = AutoencoderKLWan.from_pretrained(
            "assets/demo/vae", local_files_only=True, torch_dtype=torch.float32
        ).state_dict()
        started = torch.load(out / "vae_joint.pt", weights_only=False)["vae"]
        assert all(torch.equal(shipped[name], started[name]) for name in shipped)
        # ... and its latent statistics are kept, so a later session can go on with this transformer
        shipped_config = AutoencoderKLWan.load_config("assets/demo/vae")
        stats = json.loads((out / "run" / "latent_stats.json").read_text())
        assert stats["latents_mean"] == shipped_config["latents_mean"]
        assert stats["latents_std"] == shipped_config["latents_std"]
        later = tmp_path / "later"
        main(
            ["all", "--out", str(later), "--device", "cpu", "--shots", "24", "--workers", "1"]
            + ["--budget-seconds", "30", "--vae-batch", "1", "--tokens", "320"]
            + ["--text-encoder", "assets/demo/text_encoder", *layout, "--init-transformer", str(out / "demo")]
            + ["--no-decoder"]  # the whole card to the transformer: the autoencoder is exported as it came
        )
        later_report = json.loads((later / "report.json").read_text())
        assert later_report["init_transformer"] == str(out / "demo") and later_report["decoder_steps"] == 0
        assert not (later / "vae_decoder.pt").exists()
        kept = AutoencoderKLWan.from_pretrained(
            later / "demo" / "vae", local_files_only=True, torch_dtype=torch.float32
        )
        assert all(torch.equal(value, shipped[name]) for name, value in kept.state_dict().items())
        first = WanTransformer3DModel.from_pretrained(
            out / "demo" / "transformer", local_files_only=True, torch_dtype=torch.float32
        )
        second = torch.load(later / "run" / "last.pt", weights_only=False)["transformer"]
        fresh = WanTransformer3DModel.from_config(first.config).state_dict()

        def distance(a: dict, b: dict) -> float:
            return sum((a[name].float() - b[name].float()).norm().item() for name in a)

        assert distance(second, first.state_dict()) < 0.2 * distance(second, fresh)
    else:  # a second call on the warm machine goes on from both checkpoints and exports again
        assert (out / "pool.npy").exists()
        main(["continue", "--out", str(out), "--device", "cpu", "--seconds", "8", "--vae-batch", "1", "--keep-pool"])
        main(["continue", "--out", str(out), "--device", "cpu", "--seconds", "1", "--vae-batch", "1"])
        again = json.loads((out / "report.json").read_text())
        assert again["transformer_steps"] > report["transformer_steps"]
        assert again["decoder_steps"] > report["decoder_steps"]
        assert again["total_s"] > report["total_s"] and again["continue_s"] == 9
        assert json.loads((out / "demo" / "training.json").read_text())["trained_steps"] == again["transformer_steps"]
        with pytest.raises(SystemExit, match="--keep-pool"):  # the last call took the pool away
            main(["continue", "--out", str(out), "--device", "cpu", "--seconds", "1"])
    assert not (out / "pool.npy").exists()  # the rendered pool is scratch, not output
    transformer = WanTransformer3DModel.from_pretrained(
        out / "demo" / "transformer", local_files_only=True, torch_dtype=torch.float32
    )
    vae = AutoencoderKLWan.from_pretrained(out / "demo" / "vae", local_files_only=True, torch_dtype=torch.float32)
    # The exported encoder is the one the shot pool was encoded with (the transformer's latent space).
    encoder = torch.load(out / "run" / "vae_encoder.pt", weights_only=False)["vae"]
    for name, value in vae.state_dict().items():
        if name.startswith("encoder."):
            assert torch.equal(value, encoder[name])
    assert sum(p.numel() for p in transformer.parameters()) > 10**6
    assert vae.config.scale_factor_spatial == 4
    assert tuple(transformer.config.patch_size) == (1, 4, 4)  # the 4x layout, with or without its flags
    assert transformer.config.num_attention_heads == 8 and transformer.config.ffn_dim == 640
    assert json.loads((out / "demo" / "training.json").read_text())["gpu_session"]["shots"] == 24


@pytest.mark.slow
def test_autoencoder_only_session_exports_a_vae_folder_that_a_later_run_starts_from(tmp_path):
    from diffusers import AutoencoderKLWan

    from training.train_gpu import main
    from training.train_vae import load_vae_weights

    out = tmp_path / "gpu"
    main(
        ["vae", "--out", str(out), "--device", "cpu", "--shots", "12", "--workers", "1", "--budget-seconds", "14"]
        + ["--vae-seconds", "3", "--vae-batch", "1", "--vae-compression", "4", "--balance-figures"]
    )
    report = json.loads((out / "vae" / "training.json").read_text())
    assert report["vae_steps"] >= 1 and report["decoder_steps"] >= 1 and not (out / "pool.npy").exists()
    vae = AutoencoderKLWan.from_pretrained(out / "vae", local_files_only=True, torch_dtype=torch.float32)
    assert vae.config.scale_factor_spatial == 4 and len(vae.config.latents_std) == 16
    assert all(s > 0 for s in vae.config.latents_std)
    joint = torch.load(out / "vae_joint.pt", weights_only=False)["vae"]
    decoder = torch.load(out / "vae_decoder.pt", weights_only=False)["vae"]
    for name, value in vae.state_dict().items():  # the joint run's encoder, the decoder run's decoder
        assert torch.equal(value, (joint if name.startswith(("encoder.", "quant_conv.")) else decoder)[name])
    config, state = load_vae_weights(out / "vae")  # what `all --init-vae` starts from
    assert config["scale_factor_spatial"] == 4 and config["dim_mult"] == [1, 2, 4]
    assert all(torch.equal(state[name], value) for name, value in vae.state_dict().items())
    # A later session's decoder alone (--vae-seconds 0): the encoder and its latent statistics are kept, so a
    # transformer trained in that latent space stays valid.
    again = tmp_path / "again"
    main(
        ["vae", "--out", str(again), "--device", "cpu", "--shots", "12", "--workers", "1", "--budget-seconds", "8"]
        + ["--vae-seconds", "0", "--vae-batch", "1", "--init-vae", str(out / "vae")]
    )
    later = AutoencoderKLWan.from_pretrained(again / "vae", local_files_only=True, torch_dtype=torch.float32)
    assert later.config.latents_mean == vae.config.latents_mean and later.config.latents_std == vae.config.latents_std
    encoder_side = [name for name in state if name.startswith(("encoder.", "quant_conv."))]
    assert all(torch.equal(later.state_dict()[name], state[name]) for name in encoder_side)
    assert any(not torch.equal(value, state[n]) for n, value in later.state_dict().items() if n.startswith("decoder."))


def test_cpu_autoencoder_clips_can_be_whole_shots_and_bad_lengths_are_refused():
    from training.train_vae import late_lr_scale, sample_clips

    whole = sample_clips(np.random.default_rng(0), 2, frames=17)
    assert whole.shape == (2, 3, 17, 64, 64)
    assert whole.min() >= -1 and whole.max() <= 1
    # A whole shot moves: its first and last frames differ (a 5-frame clip could not train the decoder's cache).
    assert not torch.equal(whole[:, :, 0], whole[:, :, -1])
    assert sample_clips(np.random.default_rng(0), 1, crop=32).shape == (1, 3, 5, 32, 32)  # the default: 5 frames
    for bad in (4, 18, 21):
        with pytest.raises(ValueError, match="4k\\+1"):
            sample_clips(np.random.default_rng(0), 1, frames=bad)
    assert [late_lr_scale(t, 100.0) for t in (0.0, 79.0, 81.0, 150.0)] == [1.0, 1.0, 0.1, 0.1]


def test_decoder_only_run_exports_a_vae_folder_in_the_shipped_latent_space(tmp_path):
    from diffusers import AutoencoderKLWan

    from training.train_vae import main as train_vae

    shipped = Path(__file__).resolve().parents[2] / "assets" / "demo" / "vae"
    dest = tmp_path / "vae"
    dest.mkdir()
    (dest / "stale.txt").write_text("replaced whole, never merged")
    argv = ["--out", str(tmp_path / "run"), "--init", str(shipped), "--decoder-only", "--max-steps", "1"]
    train_vae([*argv, "--batch", "1", "--crop", "32", "--export-to", str(dest)])
    before = AutoencoderKLWan.from_pretrained(shipped, local_files_only=True, torch_dtype=torch.float32).state_dict()
    exported = AutoencoderKLWan.from_pretrained(dest, local_files_only=True, torch_dtype=torch.float32)
    after = exported.state_dict()
    assert not (dest / "stale.txt").exists() and not dest.with_name("vae.tmp").exists()
    assert exported.config.latents_mean == json.loads((shipped / "config.json").read_text())["latents_mean"]
    for name, value in before.items():
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(value, after[name]), name  # the latent space the transformer learned is untouched
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))


def test_a_run_from_a_folder_keeps_its_layout_whatever_compression_says(tmp_path):
    from diffusers import AutoencoderKLWan

    from training.train_vae import main as train_vae

    shipped = Path(__file__).resolve().parents[2] / "assets" / "demo" / "vae"  # a 4x folder; --compression 8
    argv = ["--out", str(tmp_path / "run"), "--init", str(shipped), "--decoder-only", "--max-steps", "1"]
    train_vae([*argv, "--compression", "8", "--batch", "1", "--crop", "32", "--export-to", str(tmp_path / "vae")])
    exported = AutoencoderKLWan.from_pretrained(tmp_path / "vae", local_files_only=True, torch_dtype=torch.float32)
    assert exported.config.scale_factor_spatial == 4 and exported.config.dim_mult == [1, 2, 4]


def test_export_to_without_init_is_refused(tmp_path):
    from training.train_vae import main as train_vae

    with pytest.raises(SystemExit):
        train_vae(["--out", str(tmp_path / "run"), "--export-to", str(tmp_path / "vae")])
    assert not (tmp_path / "run").exists()


def test_a_session_goes_on_at_the_figure_scale_its_init_autoencoder_records(tmp_path):
    assert recorded_figure_scale(None) == "wide14"
    assert recorded_figure_scale(Path("assets/demo/vae")) == "wide20"
    assert recorded_figure_scale(tmp_path) == "wide14"  # a folder without training.json: the scale before names
    assert recorded_figure_scale(tmp_path / "vae_joint.pt") == "wide14"  # a checkpoint records none
