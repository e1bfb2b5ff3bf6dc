"""The detector reads real frames of the world at 100%, and does not call fragments a coherent figure."""

from __future__ import annotations

import numpy as np
import pytest

from training.detector import consistent, read_frame, read_shot
from training.world import (
    ACTIONS,
    CAMERA_MOVES,
    CHARACTERS,
    FIGURE_SCALES,
    LOCATIONS,
    SHOT_SIZES,
    make_shot,
    render_background,
    render_shot,
    sample_scene,
)


def _check(labels, frames):
    reading = read_shot(frames, labels.figure_scale)
    for attr, value in reading.attributes().items():
        assert value == getattr(labels, attr), (attr, labels)
    assert reading.coherent, labels
    return reading


@pytest.mark.parametrize("figure_scale", sorted(FIGURE_SCALES))
def test_every_character_size_and_action_is_read_back_exactly(figure_scale):
    rng = np.random.default_rng(0)
    i = 0
    for char in CHARACTERS:
        for size in SHOT_SIZES:
            for _ in range(1):
                labels = make_shot(
                    char.name,
                    LOCATIONS[i % len(LOCATIONS)].name,
                    size,
                    ACTIONS[i % len(ACTIONS)],
                    CAMERA_MOVES[i % len(CAMERA_MOVES)],
                    rng,
                    figure_scale,
                )
                _check(labels, render_shot(labels))
                i += 1
    assert i == 24


@pytest.mark.parametrize("figure_scale", sorted(FIGURE_SCALES))
def test_random_scenes_are_read_back_exactly_and_consistent(figure_scale):
    for seed in range(10**6, 10**6 + 4):
        scene = sample_scene(seed, figure_scale=figure_scale)
        readings = [_check(labels, frames) for labels, frames in zip(scene.shots, scene.frames, strict=True)]
        for name in scene.cast:
            mine = [r for r, s in zip(readings, scene.shots, strict=True) if s.character == name]
            assert consistent(mine)


def test_float_frames_and_other_resolutions_read_the_same():
    labels = make_shot("leo", "beach", "close-up", "moves down")
    frames = render_shot(labels)
    assert read_shot(frames.astype(np.float32) / 255).attributes() == read_shot(frames).attributes()
    big = render_shot(labels, size=128)
    assert read_shot(big).attributes() == read_shot(frames).attributes()


def test_fragments_are_not_a_coherent_figure():
    labels = make_shot("tom", "city", "close-up", "stays")
    frame = render_shot(labels, num_frames=1)[0].copy()
    whole = read_frame(frame).figure
    assert whole.coherent and whole.shape == "square"
    # Cut the figure into a checkerboard of islands: same colour and fill, but no single figure any more.
    ys, xs = np.mgrid[0:64, 0:64]
    sky = np.array(LOCATIONS[2].sky, dtype=np.uint8)
    frame[((ys // 3) % 2 == 0) | ((xs // 3) % 2 == 0)] = sky
    broken = read_frame(frame).figure
    assert broken is not None and not broken.coherent
    assert not consistent([read_shot(render_shot(labels)), read_shot(np.stack([frame] * 17))])


def test_an_empty_background_has_no_figure():
    frame = render_background("desert", 64, offset=0.0)
    reading = read_frame(frame)
    assert reading.figure is None and reading.location == "desert"


def test_shot_size_thresholds_follow_the_figure_scale():
    """A 20 px figure is a wide shot at the wide20 scale and a medium shot at wide14 (whose wide figure is 14 px)."""
    labels = make_shot("mara", "city", "wide", "stays", figure_scale="wide20")
    assert read_shot(render_shot(labels), "wide20").shot_size == "wide"
    assert read_shot(render_shot(labels), "wide14").shot_size == "medium"
