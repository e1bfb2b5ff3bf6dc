"""The held-out character for adapter evaluation: drawn and read back exactly, never seen by training; and the
adapter evaluation (eval/evaluate_adapters.py) running end to end at minimal size (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from training.detector import read_frame, read_shot
from training.world import (
    ACTIONS,
    ALL_COLOURS,
    CAMERA_MOVES,
    CHARACTERS,
    COLOURS,
    INK,
    LOCATIONS,
    NEW_CHARACTERS,
    NEW_COLOURS,
    NEW_SHAPES,
    PATTERNS,
    SHAPES,
    SHOT_SIZES,
    make_shot,
    render_shot,
    sample_scene,
    sample_shot,
    vocabulary,
)

NEW_NAMES = {c.name for c in NEW_CHARACTERS}


def test_new_characters_have_their_own_colour_shape_pattern_and_no_vocabulary_word():
    words = set(vocabulary())
    for char in NEW_CHARACTERS:
        assert char.name not in words and char.name not in {c.name for c in CHARACTERS}
        assert char.colour in NEW_COLOURS and char.colour not in COLOURS
        assert char.shape in NEW_SHAPES and char.shape not in SHAPES
        assert char.pattern not in PATTERNS
    others = [*COLOURS.values(), INK] + [rgb for loc in LOCATIONS for rgb in (loc.sky, loc.ground, loc.post)]
    for rgb in NEW_COLOURS.values():
        nearest = min(np.linalg.norm(np.subtract(rgb, other)) for other in others)
        # Far enough that the detector's nearest-colour rule never confuses it (the closest two training colours,
        # red and orange, are 109 apart); the colours the VAE carries are all within ~100 of the palette.
        assert nearest > 90, (rgb, nearest)


def test_new_character_is_read_back_exactly_in_every_location_size_action_and_camera():
    rng = np.random.default_rng(0)
    count = 0
    for char in NEW_CHARACTERS:
        for i, loc in enumerate(LOCATIONS):
            for j, size in enumerate(SHOT_SIZES):
                labels = make_shot(
                    char.name, loc.name, size, ACTIONS[(i + j) % len(ACTIONS)], CAMERA_MOVES[j % 3], rng
                )
                reading = read_shot(render_shot(labels))
                for attr, value in reading.attributes().items():
                    assert value == getattr(labels, attr), (attr, labels)
                assert reading.coherent, labels
                count += 1
    assert count == len(NEW_CHARACTERS) * len(LOCATIONS) * len(SHOT_SIZES)


@pytest.mark.parametrize("figure_scale", ["wide14", "wide20"])
def test_reference_stills_are_read_as_the_new_character(figure_scale):
    from eval.evaluate_adapters import CHARACTER, reference_frames, reference_shots

    for count in (4, 8):
        shots = reference_shots(count, figure_scale)
        assert {s.figure_scale for s in shots} == {figure_scale}
        assert len({(s.location, s.shot_size) for s in shots}) == count
        for frame in reference_frames(shots):
            figure = read_frame(frame).figure
            assert figure is not None and figure.coherent
            assert (figure.colour, figure.shape) == (CHARACTER.colour, CHARACTER.shape)
    with pytest.raises(ValueError):
        reference_shots(3)


@pytest.mark.parametrize("figure_scale", ["wide14", "wide20"])
def test_held_out_scenes_read_back_exactly_from_real_frames(figure_scale):
    from eval.evaluate_adapters import TRIGGER, held_out_scenes, score

    scenes = held_out_scenes(6, figure_scale)
    assert {len(s.shots) for s in scenes} == {1, 2}
    assert TRIGGER in scenes[1].global_caption(TRIGGER) and TRIGGER in scenes[1].captions(TRIGGER)[scenes[1].target]
    readings = [[read_shot(render_shot(s, num_frames=5), figure_scale) for s in scene.shots] for scene in scenes]
    row = score(scenes, readings)
    assert row["appears"] == row["colour"] == row["shape"] == row["coherent"] == row["others_kept"] == 1.0
    assert row["leak"] == 0.0
    # Swapping the two shots of a two-shot scene: kai's shot read as the other character and the other as kai.
    two = next(i for i, scene in enumerate(scenes) if len(scene.shots) == 2)
    swapped = [list(r) for r in readings]
    swapped[two].reverse()
    row = score(scenes, swapped)
    assert row["others_kept"] < 1.0 and row["leak"] > 0.0


def test_training_world_never_draws_a_new_character():
    # train_demo composes its scenes from sample_shot(default_rng([seed, i])); train_vae uses sample_scene.
    for seed in range(3000):
        scene = sample_scene(seed, render=False)
        assert not NEW_NAMES & set(scene.cast)
        assert not NEW_NAMES & {s.character for s in scene.shots}
        for i in range(2):
            shot = sample_shot(np.random.default_rng([seed, i]))
            assert shot.character not in NEW_NAMES
            assert shot.colour in COLOURS and shot.shape in SHAPES


def test_known_characters_still_render_in_their_own_colours():
    for char in CHARACTERS:
        frame = render_shot(make_shot(char.name, "snow", "close-up", "stays"), num_frames=1)[0]
        figure = read_frame(frame).figure
        assert (figure.colour, figure.shape) == (char.colour, char.shape)
        assert ALL_COLOURS[char.colour] == COLOURS[char.colour]


@pytest.mark.slow
def test_adapter_evaluation_runs_end_to_end(tmp_path):
    import json

    from eval.evaluate_adapters import main

    out = tmp_path / "adapters.json"
    result = main(
        [
            "--references=4",
            "--shots=2",
            "--steps=2",
            "--lora-steps=30",
            "--embedding-steps=10",
            f"--json={out}",
        ]
    )
    assert json.loads(out.read_text())["rows"].keys() == result["rows"].keys()
    assert {"baseline", "lora", "embedding"} <= set(result["rows"])
    for row in result["rows"].values():
        for key in ("appears", "colour", "shape", "coherent", "leak", "others_kept"):
            assert 0.0 <= row[key] <= 1.0
    assert result["rows"]["real frames (detector check)"]["appears"] == 1.0
    lora = result["training"]["lora"]
    assert lora["eval_loss_after"] < lora["eval_loss_before"]
    assert lora["loss_last"] < lora["loss_first"]
    assert lora["unk"] is False and lora["trigger_words_added"] == ["kai"]
    assert result["training"]["embedding"]["substitution"] == "<kai> <kai_1>"
    # Both adapters trained on each reference's shot caption, the trigger turned into what each adapter reads.
    assert all(
        ", kai " in c and "<kai>" not in c and c.endswith(", camera is static") for c in lora["training_captions"]
    )
    embedding_captions = result["training"]["embedding"]["training_captions"]
    assert all(", <kai> <kai_1> " in c for c in embedding_captions) and len(embedding_captions) == 4  # 4 references
