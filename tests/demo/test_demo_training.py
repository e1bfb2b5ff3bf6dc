"""Training helpers of the demo model: per-shot noise levels and scenes composed from the shot pool."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from training import train_demo
from training.train_demo import FLOW_SHIFT, SceneComposer, sample_sigmas, shifted
from training.world import (
    CHARACTER_BY_NAME,
    global_caption,
    recorded_figure_scale,
    repeat_appearances,
    sample_shot,
    unnamed_caption,
)


def test_sigmas_are_shifted_and_clean_shots_carry_no_loss():
    rng = torch.Generator().manual_seed(0)
    sig, mask = sample_sigmas(rng, 512, 3)
    assert sig.shape == mask.shape == (512, 3)
    assert ((sig >= 0) & (sig < 1)).all()
    clean = sig == 0
    assert torch.equal(clean, mask == 0)  # a shot has no loss exactly when it is kept clean (context)
    assert not clean.all(dim=1).any()  # never a scene without a noisy shot
    shared = (sig[:, :1] == sig).all(dim=1) & ~clean.any(dim=1)
    assert 0.35 < shared.float().mean() < 0.65  # about half the scenes: one level for every shot (generation)
    assert 0.1 < clean.any(dim=1).float().mean() < 0.3  # some scenes train context regeneration
    assert shifted(torch.tensor(0.5)).item() == FLOW_SHIFT * 0.5 / (1 + (FLOW_SHIFT - 1) * 0.5)


def _composer(count: int = 300) -> SceneComposer:
    rng = np.random.default_rng(0)
    labels = [sample_shot(rng) for _ in range(count)]
    cache = {"latents": [torch.randn(16, 5, 8, 8).half() for _ in labels], "labels": [asdict(x) for x in labels]}
    stats = {"latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}
    composer = SceneComposer(cache, stats, {})
    texts = composer.texts()
    # a distinct embedding per text (its position in the sorted list), so gathered rows can be traced back
    composer.text = {t: torch.full((3 if t.startswith("a scene") else 2, 4), float(i)) for i, t in enumerate(texts)}
    return composer.to("cpu")


def test_composed_scenes_keep_one_location_and_put_both_cast_members_on_screen():
    composer = _composer()
    texts = composer.texts()
    gen = torch.Generator().manual_seed(1)
    for k in (2, 3, 4):
        state = gen.get_state()
        shots, location, cast = composer.draw(k, 64, gen)
        assert shots.shape == (64, k) and location.shape == (64,) and cast.shape == (64, 2)
        for b in range(64):
            chosen = [composer.labels[i] for i in shots[b].tolist()]
            assert {s.location for s in chosen} == {composer.locations[int(location[b])]}
            names = [composer.characters[c] for c in cast[b].tolist()]
            assert names[0] != names[1] and all(CHARACTER_BY_NAME[n] for n in names)
            assert {s.character for s in chosen} == set(names)  # both on screen, nobody else
        gen.set_state(state)  # batch() draws the same scenes and gathers their latents and captions
        x0, text = composer.batch(k, 64, gen)
        assert x0.shape == (64, 16, 5 * k, 8, 8)
        assert text.shape == (64, 3 + 2 * k, 4)
        for b in (0, 17, 63):
            expected = torch.cat([composer.latents[i] for i in shots[b].tolist()], dim=1)
            assert torch.equal(x0[b], expected)
            caption = global_caption(composer.locations[int(location[b])], [composer.characters[c] for c in cast[b]])
            assert text[b, 0, 0].item() == texts.index(caption)
            captions = [composer.labels[i].caption for i in shots[b].tolist()]
            assert text[b, 3::2, 0].tolist() == [texts.index(c) for c in captions]


def test_unnamed_captions_only_for_a_character_an_earlier_shot_named():
    composer = _composer()
    texts = composer.texts()
    assert texts == sorted(set(texts)) and "medium shot, figure moves left, camera is static" in texts
    gen = torch.Generator().manual_seed(4)
    shots, _, _ = composer.draw(4, 256, torch.Generator().manual_seed(4))
    state = gen.get_state()
    x0_named, named_text = composer.batch(4, 256, gen)
    gen.set_state(state)
    x0, text = composer.batch(4, 256, gen, unnamed=0.5)
    assert torch.equal(x0, x0_named)  # the same scenes: only captions change
    assert torch.equal(text[:, :3], named_text[:, :3])  # the global caption still names the cast
    left = repeats = 0
    for b in range(256):
        chosen = [composer.labels[i] for i in shots[b].tolist()]
        repeat = repeat_appearances([s.character for s in chosen])
        for j, (labels, again) in enumerate(zip(chosen, repeat, strict=True)):
            row = text[b, 3 + 2 * j, 0].item()
            if not again:  # every character is named the first time it is on screen
                assert row == texts.index(labels.caption)
                continue
            repeats += 1
            assert row in (texts.index(labels.caption), texts.index(unnamed_caption(labels)))
            left += row == texts.index(unnamed_caption(labels))
    assert repeats > 200 and 0.4 < left / repeats < 0.6


def test_scene_draws_cover_every_location_cast_order_and_shot_position():
    composer = _composer()
    shots, location, cast = composer.draw(3, 4000, torch.Generator().manual_seed(2))
    assert set(location.tolist()) == set(range(len(composer.locations)))
    # every character that has shots at a location is cast there, first and second alike
    for li, loc in enumerate(composer.locations):
        present = {composer.characters.index(c) for lc, c in composer.by_pair if lc == loc}
        at = location == li
        assert set(cast[at, 0].tolist()) == present and set(cast[at, 1].tolist()) == present
    # the first-named character is not always on screen first: shot order is drawn
    first_char = torch.tensor(
        [
            [composer.labels[i].character for i in row].index(composer.characters[c])
            for row, c in zip(shots.tolist(), cast[:, 0].tolist(), strict=True)
        ]
    )
    assert set(first_char.tolist()) == {0, 1, 2}
    # every pool shot of a (location, character) pair can be drawn
    drawn = set(shots.flatten().tolist())
    assert len(drawn) > 0.95 * len(composer.labels)


def test_composer_refuses_a_pool_with_a_lonely_location():
    rng = np.random.default_rng(0)
    labels = [sample_shot(rng) for _ in range(40)]
    lone = labels[0]
    labels = [lab for lab in labels if lab.location != lone.location or lab.character == lone.character]
    cache = {"latents": [torch.zeros(16, 5, 8, 8).half() for _ in labels], "labels": [asdict(x) for x in labels]}
    with pytest.raises(ValueError, match="fewer than two characters"):
        SceneComposer(cache, {"latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}, {})


def _tiny_run(folder, count: int = 120) -> None:
    """A `train_demo cache`-shaped run folder: random latents of the 8x layout and real labels."""
    rng = np.random.default_rng(3)
    labels = [asdict(sample_shot(rng)) for _ in range(count)]
    folder.mkdir()
    gen = torch.Generator().manual_seed(3)
    latents = [torch.randn(16, 5, 8, 8, generator=gen).half() for _ in labels]
    torch.save({"latents": latents, "labels": labels}, folder / "shots.pt")
    stats = {"latents_mean": [0.0] * 16, "latents_std": [1.0] * 16, "vae": "test"}
    (folder / "latent_stats.json").write_text(json.dumps(stats))


def test_training_resumed_halfway_ends_with_the_same_weights_as_one_run(tmp_path):
    """The host and device generators, the optimizer and the EMA are all in the checkpoint: 2 + 2 steps = 4 steps."""
    args = ["--tokens", "240", "--warmup", "2", "--save-every", "1", "--heads", "2", "--ffn-dim", "64"]
    for name in ("one", "two"):
        _tiny_run(tmp_path / name)
    assert train_demo.main(["train", "--run", str(tmp_path / "one"), "--max-steps", "4", *args]) == 4
    assert train_demo.main(["train", "--run", str(tmp_path / "two"), "--max-steps", "2", *args]) == 2
    assert train_demo.main(["train", "--run", str(tmp_path / "two"), "--max-steps", "4", *args]) == 4
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=False)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=False)
    for part in ("transformer", "ema"):
        assert one[part].keys() == two[part].keys()
        for name, value in one[part].items():
            assert torch.equal(value, two[part][name]), (part, name)
    fresh = train_demo.build_transformer(0, one["config"]).state_dict()
    moved = [name for name, value in one["transformer"].items() if not torch.equal(value, fresh[name])]
    assert len(moved) > 0.9 * len(fresh)  # four steps moved (nearly) every weight


def test_train_unnamed_reaches_every_batch_and_a_share_outside_0_1_is_refused(tmp_path, monkeypatch, capsys):
    _tiny_run(tmp_path / "run")
    seen = []
    loss = train_demo.flow_matching_loss

    def recording(*args, **kwargs):
        seen.append(args[8] if len(args) > 8 else kwargs.get("unnamed", 0.0))
        return loss(*args, **kwargs)

    monkeypatch.setattr(train_demo, "flow_matching_loss", recording)
    args = ["--tokens", "240", "--heads", "2", "--ffn-dim", "64", "--max-steps", "3"]
    assert train_demo.main(["train", "--run", str(tmp_path / "run"), "--unnamed", "0.5", *args]) == 3
    assert seen == [0.5, 0.5, 0.5]
    with pytest.raises(SystemExit):
        train_demo.main(["train", "--run", str(tmp_path / "run"), "--unnamed", "1.5", *args])
    assert "--unnamed: must be a share from 0 to 1, got 1.5" in capsys.readouterr().err


def test_a_new_transformer_takes_the_layout_of_its_latents_unless_flags_say_otherwise():
    def layout(config: dict) -> tuple[int, int, int]:
        return config["patch_size"][1], config["num_attention_heads"], config["ffn_dim"]

    assert layout(train_demo.new_transformer_config(8)) == (2, 6, 768)  # the 8x autoencoder's 8x8 latents
    assert layout(train_demo.new_transformer_config(16)) == (4, 8, 640)  # the 4x one's 16x16: the shipped layout
    assert layout(train_demo.new_transformer_config(16, heads=4)) == (4, 4, 640)
    for side, config in train_demo.TRANSFORMER_LAYOUTS.items():  # every layout: 80 video tokens a shot of 5 frames
        assert 5 * (side // config["patch"]) ** 2 == 80
    with pytest.raises(ValueError, match="pass --patch, --heads and --ffn-dim"):
        train_demo.new_transformer_config(32, patch=8)
    assert layout(train_demo.new_transformer_config(32, 8, 4, 256)) == (8, 4, 256)


def test_cosine_schedule_warms_up_then_settles_to_a_twentieth_by_the_end_of_the_run():
    lr = train_demo.learning_rate
    assert lr(1e-3, 0, 300, 0.0, "cosine") == pytest.approx(1e-3 / 300)  # the warm-up is the constant schedule's
    assert lr(1e-3, 299, 300, 0.0, "cosine") == pytest.approx(1e-3)
    falling = [lr(1e-3, 1000, 300, progress, "cosine") for progress in np.linspace(0, 1, 11)]
    assert all(a > b for a, b in zip(falling[:-1], falling[1:], strict=True))
    assert falling[5] == pytest.approx(1e-3 * (1 + train_demo.COSINE_FLOOR) / 2)
    assert falling[-1] == pytest.approx(1e-3 * train_demo.COSINE_FLOOR) == lr(1e-3, 1000, 300, 1.7, "cosine")
    assert lr(1e-3, 1000, 300, 0.9, "constant") == 1e-3
    with pytest.raises(ValueError, match="'constant' or 'cosine'"):
        lr(1e-3, 0, 1, 0.0, "linear")


def test_a_cosine_run_ends_at_the_rate_its_last_step_was_due(tmp_path):
    """Progress is counted in steps when --max-steps ends the run first (GPU runs end by --minutes)."""
    _tiny_run(tmp_path / "run")
    args = ["--tokens", "240", "--warmup", "1", "--heads", "2", "--ffn-dim", "64", "--lr", "1e-3", "--max-steps", "4"]
    assert train_demo.main(["train", "--run", str(tmp_path / "run"), "--schedule", "cosine", *args]) == 4
    optimizer = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["optimizer"]
    # the 4th step ran at progress 3/4 of the run
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(train_demo.learning_rate(1e-3, 3, 1, 0.75, "cosine"))


def test_cpu_route_from_the_shipped_vae_folder_caches_trains_and_exports(tmp_path):
    """`cache --vae assets/demo/vae` (the shipped latent space), a few steps, `export` with no --vae: the exported
    autoencoder is the folder's, with its latent statistics."""
    from diffusers import AutoencoderKLWan

    run, dest = tmp_path / "run", tmp_path / "model"
    train_demo.main(["cache", "--run", str(run), "--vae", "assets/demo/vae", "--shots", "80", "--save-every", "80"])
    tiny = ["--heads", "2", "--ffn-dim", "64", "--tokens", "240", "--text-encoder", "assets/demo/text_encoder"]
    assert train_demo.main(["train", "--run", str(run), "--max-steps", "2", *tiny]) == 2
    train_demo.main(["export", "--run", str(run), "--dest", str(dest), "--text-encoder", "assets/demo/text_encoder"])
    shipped = AutoencoderKLWan.from_pretrained("assets/demo/vae", local_files_only=True, torch_dtype=torch.float32)
    exported = AutoencoderKLWan.from_pretrained(dest / "vae", local_files_only=True, torch_dtype=torch.float32)
    assert all(torch.equal(value, exported.state_dict()[name]) for name, value in shipped.state_dict().items())
    assert exported.config.latents_mean == shipped.config.latents_mean
    info = json.loads((dest / "training.json").read_text())
    assert info["trained_steps"] == 2 and info["vae"] == "assets/demo/vae" and info["vae_steps"] is None
    # no --figure-scale: the pool is drawn at the scale the folder's model was trained on, and the export says so
    assert info["figure_scale"] == train_demo.pool_figure_scale(run) == recorded_figure_scale(Path("assets/demo/vae"))
    # A new run from that export (--init) keeps the exported transformer's layout, whatever the layout flags say.
    again = tmp_path / "again"
    again.mkdir()
    for name in ("shots.pt", "latent_stats.json", "vae_encoder.pt"):
        shutil.copy(run / name, again / name)
    other = ["--patch", "2", "--heads", "3", "--tokens", "240", "--text-encoder", "assets/demo/text_encoder"]
    assert train_demo.main(["train", "--run", str(again), "--max-steps", "1", "--init", str(dest), *other]) == 1
    config = torch.load(again / "last.pt", weights_only=False)["config"]
    # (the first run's patch 4 came from the shipped autoencoder's 16x16 latents, no --patch given)
    assert list(config["patch_size"]) == [1, 4, 4] and config["num_attention_heads"] == 2 and config["ffn_dim"] == 64


def test_a_shot_pool_keeps_one_figure_scale(tmp_path):
    """The pool records its figure scale; growing it at another scale is refused, and the export records it."""
    run = tmp_path / "run"
    train_demo.main(
        ["cache", "--run", str(run), "--vae", "assets/demo/vae", "--shots", "2", "--figure-scale", "wide14"]
    )
    assert train_demo.pool_figure_scale(run) == "wide14"
    pool = torch.load(run / "shots.pt", weights_only=False)
    assert {labels["figure_scale"] for labels in pool["labels"]} == {"wide14"}
    with pytest.raises(ValueError, match="--figure-scale wide14"):  # the folder's own scale, wide20, is not the pool's
        train_demo.main(["cache", "--run", str(run), "--vae", "assets/demo/vae", "--shots", "3"])
    assert len(torch.load(run / "shots.pt", weights_only=False)["labels"]) == 2  # nothing was added
