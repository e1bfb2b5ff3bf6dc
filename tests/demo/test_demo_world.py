"""The procedural film world: deterministic from a seed, captions of fixed token length, labels that match."""

from __future__ import annotations

import numpy as np
import pytest

from training.tokenizer import build_world_tokenizer
from training.world import (
    ACTIONS,
    CHARACTERS,
    FIGURE_SCALES,
    LOCATIONS,
    SHOT_SIZES,
    make_shot,
    render_shot,
    sample_scene,
    scene_from_shots,
    vocabulary,
)


def test_same_seed_gives_the_same_scene_bit_for_bit():
    a, b = sample_scene(123), sample_scene(123)
    assert a.global_caption == b.global_caption
    assert a.captions == b.captions
    assert a.labels() == b.labels()
    assert len(a.frames) == len(b.frames)
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert fa.dtype == np.uint8 and fa.shape == (17, 64, 64, 3)
        assert np.array_equal(fa, fb)


def test_different_seeds_give_different_scenes():
    captions = {tuple(sample_scene(seed, render=False).captions) for seed in range(20)}
    assert len(captions) == 20


def test_scenes_have_two_to_four_shots_in_one_location_with_both_cast_members_on_screen():
    counts = set()
    for seed in range(60):
        scene = sample_scene(seed, render=False)
        counts.add(len(scene.shots))
        assert {s.location for s in scene.shots} == {scene.location}
        assert {s.character for s in scene.shots} == set(scene.cast)
        assert scene.location in scene.global_caption
        for name in scene.cast:
            assert name in scene.global_caption
    assert counts == {2, 3, 4}


def test_world_has_eight_distinct_characters_and_background_constant_within_a_scene():
    assert len(CHARACTERS) >= 8
    assert len({(c.colour, c.shape, c.pattern) for c in CHARACTERS}) == len(CHARACTERS)
    assert len({c.colour for c in CHARACTERS}) == len(CHARACTERS)
    scene = sample_scene(7)
    # The sky row above every figure is the location's sky colour in every frame of every shot.
    sky = np.array(next(loc.sky for loc in LOCATIONS if loc.name == scene.location), dtype=np.uint8)
    for frames in scene.frames:
        assert (frames[:, 0] == sky).all()


def test_every_caption_tokenizes_to_the_same_length_without_unknown_words():
    tokenizer = build_world_tokenizer()
    shot_lengths, global_lengths = set(), set()
    for seed in range(80):
        scene = sample_scene(seed, render=False)
        ids = tokenizer(scene.global_caption).input_ids
        assert tokenizer.unk_token_id not in ids
        global_lengths.add(len(ids))
        for caption in scene.captions:
            ids = tokenizer(caption).input_ids
            assert tokenizer.unk_token_id not in ids and ids[-1] == tokenizer.eos_token_id
            shot_lengths.add(len(ids))
    assert shot_lengths == {11} and global_lengths == {10}
    assert len(tokenizer) == 3 + len(vocabulary())
    assert tokenizer.convert_ids_to_tokens(tokenizer("Close-up shot, Mara").input_ids)[:2] == ["close-up", "shot"]


def test_shot_sizes_and_actions_show_in_the_frames():
    sizes = []
    for size in SHOT_SIZES:
        frames = render_shot(make_shot("tom", "city", size, "stays"))
        sizes.append(int((frames[0] == (40, 70, 225)).all(-1).any(1).sum()))  # rows holding the blue figure
    assert sizes[0] < sizes[1] < sizes[2]
    frames = render_shot(make_shot("mara", "snow", "medium", "moves right"))
    cols = [np.nonzero((f == (225, 35, 35)).all(-1).any(0))[0].mean() for f in (frames[0], frames[-1])]
    assert cols[1] - cols[0] == pytest.approx(16, abs=1)
    assert set(ACTIONS) >= {"moves left", "moves right", "moves up", "moves down", "grows", "shrinks", "stays"}


@pytest.mark.parametrize("figure_scale", sorted(FIGURE_SCALES))
def test_a_figure_scale_draws_each_shot_size_at_its_height(figure_scale):
    for size, height in FIGURE_SCALES[figure_scale].figure_size.items():
        frames = render_shot(make_shot("mara", "city", size, "stays", figure_scale=figure_scale))
        rows = int((frames[0] == (225, 35, 35)).all(-1).any(1).sum())  # rows holding the plain red circle
        assert rows == pytest.approx(height, abs=1), (size, rows)


def test_a_figure_scale_changes_the_figures_only():
    """The same seed draws the same storyboard at every scale; only how large the figures are differs."""
    small, large = sample_scene(10**6 + 5), sample_scene(10**6 + 5, figure_scale="wide20")
    assert small.captions == large.captions and small.global_caption == large.global_caption
    assert [s.start for s in small.shots] == [s.start for s in large.shots]
    assert {s.figure_scale for s in large.shots} == {"wide20"}
    wide = [i for i, s in enumerate(small.shots) if s.shot_size != "close-up"]
    assert wide and all(not np.array_equal(small.frames[i], large.frames[i]) for i in wide)


def test_bad_labels_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="unknown character 'bob'.*mara"):
        make_shot("bob", "city", "wide", "stays")
    with pytest.raises(ValueError, match="unknown figure scale 'huge'.*wide14"):
        make_shot("tom", "city", "wide", "stays", figure_scale="huge")
    with pytest.raises(ValueError, match="one location"):
        scene_from_shots([make_shot("tom", "city", "wide", "stays"), make_shot("tom", "snow", "wide", "stays")])
