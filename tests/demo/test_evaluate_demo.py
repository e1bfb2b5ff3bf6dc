"""eval/evaluate_demo.py's scoring: shape by shot size, the autoencoder-only mode (`--vae`), unnamed repeat shots."""

from __future__ import annotations

import dataclasses
import json
import shutil

from eval.evaluate_demo import SIZES, held_out_scenes, main, score, score_unnamed, unnamed_captions
from training.detector import read_shot
from training.world import recorded_figure_scale


def test_score_splits_shape_by_shot_size():
    scenes = held_out_scenes(6)
    readings = [[read_shot(f) for f in s.frames] for s in scenes]
    real = score(scenes, readings)
    assert all(real[f"shape {size}"] == 1.0 for size in SIZES)  # the detector reads every real shot
    wrong_wide = [
        [
            dataclasses.replace(r, shape="circle" if labels.shape != "circle" else "square")
            if labels.shot_size == "wide"
            else r
            for labels, r in zip(s.shots, rs, strict=True)
        ]
        for s, rs in zip(scenes, readings, strict=True)
    ]
    row = score(scenes, wrong_wide)
    assert row["shape wide"] == 0.0 and row["shape medium"] == 1.0 and row["shape close-up"] == 1.0
    wide = sum(labels.shot_size == "wide" for s in scenes for labels in s.shots)
    assert 0 < wide < row["shots"] and row["shape"] == (row["shots"] - wide) / row["shots"]


def test_vae_only_mode_reads_the_real_frame_rows_alone(tmp_path, capsys):
    main(["--vae", "assets/demo/vae", "--scenes", "2", "--compare-scenes", "0", "--json", str(tmp_path / "e.json")])
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert list(rows) == ["real frames (detector check)", "real frames through the VAE"]
    assert rows["real frames (detector check)"]["shape wide"] == 1.0
    assert "| shape wide | shape medium | shape close-up |" in capsys.readouterr().out


def test_a_model_is_evaluated_on_the_figure_scale_it_was_trained_on(tmp_path):
    assert recorded_figure_scale(tmp_path) == "wide14"  # no training.json: the scale every model had before names
    (tmp_path / "training.json").write_text(json.dumps({"trained_steps": 1}))
    assert recorded_figure_scale(tmp_path) == "wide14"
    vae = tmp_path / "vae"
    shutil.copytree("assets/demo/vae", vae)
    (vae / "training.json").write_text(json.dumps({"figure_scale": "wide20"}))
    assert recorded_figure_scale(vae) == "wide20"
    main(["--vae", str(vae), "--scenes", "2", "--compare-scenes", "0", "--json", str(tmp_path / "e.json")])
    info = json.loads((tmp_path / "e.json").read_text())
    assert info["figure_scale"] == "wide20" and info["rows"]["real frames (detector check)"]["shot_size"] == 1.0


def test_the_scenes_configuration_runs_the_self_attention_asked_for(tmp_path):
    """`--self-attention sparse` puts the shipped model's 72-scene row under sparse self-attention
    (docs/QUALITY.md, "Storyboards")."""
    out = tmp_path / "e.json"
    main(["--scenes", "1", "--compare-scenes", "0", "--steps", "2", "--self-attention", "sparse", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert list(rows)[2:] == ["cross=mmrope, self=sparse (1 scenes)"]
    assert rows["cross=mmrope, self=sparse (1 scenes)"]["shots"] == rows["real frames (detector check)"]["shots"] > 0


def test_unnamed_scoring_reads_the_repeat_appearance_apart():
    scenes = [s for s in held_out_scenes(8) if len(s.shots) == 3]
    assert len(scenes) == 4
    for scene in scenes:
        captions, unnamed = unnamed_captions(scene)
        assert sum(unnamed) == 1  # three shots, a cast of two: one character appears twice
        repeat = unnamed.index(True)
        character = scene.shots[repeat].character
        assert [s.character for s in scene.shots[:repeat]].count(character) == 1  # named in an earlier shot
        assert character not in captions[repeat] and "figure" in captions[repeat]
        assert [c for c, u in zip(captions, unnamed, strict=True) if not u] == [
            s.caption for s, u in zip(scene.shots, unnamed, strict=True) if not u
        ]
    readings = [[read_shot(f) for f in s.frames] for s in scenes]
    real = score_unnamed(scenes, readings)
    assert real["repeat shots"] == 4 and real["first appearances right"] == real["repeat: character"] == 1.0
    # the repeat appearance drawn as the other cast member: only the repeat columns and consistency fall
    swapped = []
    for scene, rs in zip(scenes, readings, strict=True):
        repeat = unnamed_captions(scene)[1].index(True)
        other = next(r for s, r in zip(scene.shots, rs, strict=True) if s.character != scene.shots[repeat].character)
        swapped.append([other if i == repeat else r for i, r in enumerate(rs)])
    row = score_unnamed(scenes, swapped)
    assert row["first appearances right"] == 1.0 and row["repeat: character"] == row["repeat: colour"] == 0.0
    assert row["repeat: coherent"] == 1.0 and row["consistency"] == 0.0


def test_unnamed_rows_render_every_self_attention_mode(tmp_path):
    out = tmp_path / "e.json"
    main(["--scenes", "0", "--compare-scenes", "0", "--unnamed-scenes", "1", "--steps", "2", "--json", str(out)])
    rows = json.loads(out.read_text())["unnamed_rows"]
    assert list(rows) == [
        "repeat named, self=full",
        "repeat unnamed, self=full",
        "repeat unnamed, self=sparse",
        "repeat unnamed, self=isolated",
    ]
    assert all(row["repeat shots"] == 1 and row["shots"] == 3 for row in rows.values())
