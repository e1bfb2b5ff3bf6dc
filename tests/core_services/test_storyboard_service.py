"""Scenes and shots: insert, duplicate, edit, reorder (stale refused), move, bin/restore/empty, validation."""

from __future__ import annotations

import pytest

from studio.services.errors import ConflictError, ValidationError
from tests.core_services.helpers import add_take


def _board(services):
    project = services.projects.create("Board")
    mara = services.characters.create(project.id, "Mara")
    tom = services.characters.create(project.id, "Tom")
    scene = services.storyboard.add_scene(project.id, "a lighthouse at night")
    return services, project, scene, mara, tom


@pytest.fixture
def board(services):
    return _board(services)


@pytest.fixture
def sqlite_board(sqlite_services):
    """Rule checks need no second database: they run before any SQL."""
    return _board(sqlite_services)


def _captions(services, scene_id):
    return [s.caption for s in services.storyboard.get_scene(scene_id).shots]


def test_add_insert_and_defaults(board):
    services, project, scene, mara, tom = board
    first = services.storyboard.add_shot(scene.id, "  wide, Mara climbs  ", characters=["mara", tom.id])
    assert (first.caption, first.num_frames, first.position) == ("wide, Mara climbs", 17, 0)
    assert first.character_names == ("Mara", "Tom") and first.transition_type == "cut"
    services.storyboard.add_shot(scene.id, "close-up", num_frames=9, position=0)
    services.storyboard.add_shot(scene.id, "middle", position=1)
    assert _captions(services, scene.id) == ["close-up", "middle", "wide, Mara climbs"]
    assert [s.position for s in services.storyboard.get_scene(scene.id).shots] == [0, 1, 2]
    with pytest.raises(ValidationError, match="shot position must be between 0 and 3"):
        services.storyboard.add_shot(scene.id, "x", position=9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"caption": ""}, "shot caption is empty"),
        ({"caption": "x" * 2001}, "2001 characters; shorten it to 2000"),
        ({"num_frames": 16}, "frames must be 4n\\+1 between 5 and 33 for preset demo, got 16 \\(nearest: 17\\)"),
        ({"num_frames": 37}, "between 5 and 33"),
        ({"num_frames": 1}, "between 5 and 33"),
        ({"characters": ["Nobody"]}, "unknown character 'Nobody' in this project \\(characters: Mara, Tom\\)"),
        ({"shot_size": "gigantic"}, "unknown shot size"),
        ({"camera_move": "barrel roll"}, "unknown camera move"),
        ({"transition": "wipe"}, "unknown transition 'wipe'"),
        ({"transition": "dissolve", "transition_seconds": 0}, "needs a duration"),
        ({"transition": "fade", "transition_seconds": 11}, "between 0.0 and 10.0"),
        ({"seed": -1}, "seed must be between 0"),
        ({"trim_in": 10, "trim_out": 7}, "must leave at least one"),
    ],
)
def test_shot_validation(sqlite_board, kwargs, message):
    services, _, scene, _, _ = sqlite_board
    arguments = {"caption": "a shot", **kwargs}
    with pytest.raises(ValidationError, match=message):
        services.storyboard.add_shot(scene.id, **arguments)


def test_update_shot_fields(board):
    services, _, scene, mara, _ = board
    shot = services.storyboard.add_shot(scene.id, "wide")
    updated = services.storyboard.update_shot(
        shot.id,
        caption="wide, storm",
        num_frames=25,
        characters=[mara.id],
        shot_size="Close Up",
        camera_move="dolly_in",
        transition="dissolve",
        transition_seconds=0.75,
        seed=42,
        trim_in=2,
        trim_out=3,
    )
    assert (updated.caption, updated.num_frames, updated.character_names) == ("wide, storm", 25, ("Mara",))
    assert (updated.shot_size, updated.camera_move) == ("close-up", "dolly-in")
    assert (updated.transition_type, updated.transition_seconds, updated.seed) == ("dissolve", 0.75, 42)
    assert (updated.trim_in, updated.trim_out) == (2, 3)
    assert services.storyboard.update_shot(shot.id, transition="cut").transition_seconds == 0.0
    assert services.storyboard.update_shot(shot.id, transition="fade").transition_seconds == 0.5
    assert services.storyboard.update_shot(shot.id, characters=[]).character_names == ()
    with pytest.raises(ValidationError, match="unknown shot field"):
        services.storyboard.update_shot(shot.id, colour="red")
    with pytest.raises(ValidationError, match="must leave at least one"):
        services.storyboard.update_shot(shot.id, num_frames=5)


def test_duplicate_goes_right_after_without_takes(board):
    services, _, scene, mara, _ = board
    a = services.storyboard.add_shot(scene.id, "a", characters=["Mara"], seed=3)
    services.storyboard.add_shot(scene.id, "b")
    add_take(services, a.id)
    copy = services.storyboard.duplicate_shot(a.id)
    assert (copy.caption, copy.position, copy.seed, copy.character_ids) == ("a", 1, 3, (mara.id,))
    assert (copy.take_count, copy.chosen_take_id) == (0, None)
    assert _captions(services, scene.id) == ["a", "a", "b"]


def test_reorder_and_stale_reorder_refused(board):
    services, _, scene, _, _ = board
    a, b, c = (services.storyboard.add_shot(scene.id, caption).id for caption in "abc")
    services.storyboard.reorder_shots(scene.id, [c, a, b])
    assert _captions(services, scene.id) == ["c", "a", "b"]
    d = services.storyboard.add_shot(scene.id, "d").id  # someone else added a shot meanwhile
    with pytest.raises(ConflictError, match="changed since this order was made"):
        services.storyboard.reorder_shots(scene.id, [a, b, c])
    with pytest.raises(ConflictError):
        services.storyboard.reorder_shots(scene.id, [a, a, b, c])
    services.storyboard.reorder_shots(scene.id, [d, c, b, a])
    assert _captions(services, scene.id) == ["d", "c", "b", "a"]


def test_move_between_scenes_and_film_order(board):
    services, project, scene, _, _ = board
    second = services.storyboard.add_scene(project.id, "the harbour")
    a, b = (services.storyboard.add_shot(scene.id, caption).id for caption in "ab")
    x = services.storyboard.add_shot(second.id, "x").id
    moved = services.storyboard.move_shot(a, second.id, 1)
    assert (moved.scene_id, moved.position) == (second.id, 1)
    assert _captions(services, scene.id) == ["b"]
    assert _captions(services, second.id) == ["x", "a"]
    assert [s.id for s in services.storyboard.film_shots(project.id)] == [b, x, a]
    services.storyboard.move_shot(a, second.id, 0)  # within a scene
    assert _captions(services, second.id) == ["a", "x"]
    other = services.projects.create("Other")
    foreign = services.storyboard.add_scene(other.id)
    with pytest.raises(ValidationError, match="its own project"):
        services.storyboard.move_shot(a, foreign.id, 0)
    services.storyboard.reorder_scenes(project.id, [second.id, scene.id])
    assert [s.id for s in services.storyboard.film_shots(project.id)] == [a, x, b]


def test_bin_keeps_takes_until_emptied(board):
    services, project, scene, _, _ = board
    a, b, c = (services.storyboard.add_shot(scene.id, caption).id for caption in "abc")
    take = add_take(services, b)
    video_path = services.assets.path_of(take.video_asset_id)
    deleted = services.storyboard.delete_shot(b)
    assert deleted.in_bin and deleted.take_count == 1
    assert _captions(services, scene.id) == ["a", "c"]
    assert [s.position for s in services.storyboard.get_scene(scene.id).shots] == [0, 1]
    assert [s.id for s in services.storyboard.list_bin(project.id).shots] == [b]
    restored = services.storyboard.restore_shot(b)
    assert (restored.position, restored.chosen_take_id, restored.take_count) == (1, take.id, 1)
    assert _captions(services, scene.id) == ["a", "b", "c"]
    services.storyboard.delete_shot(b)
    services.storyboard.delete_shot(c)
    assert services.storyboard.empty_bin(project.id) == (0, 2, 1)
    assert services.storyboard.list_bin(project.id).shots == ()
    assert _captions(services, scene.id) == ["a"]
    assert not video_path.exists()


def test_scene_bin_restore_and_empty(board):
    services, project, scene, _, _ = board
    second = services.storyboard.add_scene(project.id, "harbour")
    shot = services.storyboard.add_shot(second.id, "boats").id
    add_take(services, shot)
    services.storyboard.delete_scene(second.id)
    assert [s.id for s in services.storyboard.list_scenes(project.id)] == [scene.id]
    binned = services.storyboard.list_bin(project.id)
    assert [s.id for s in binned.scenes] == [second.id] and [s.id for s in binned.scenes[0].shots] == [shot]
    services.storyboard.restore_shot(shot)  # restoring a shot brings its scene back
    assert [s.id for s in services.storyboard.list_scenes(project.id)] == [scene.id, second.id]
    services.storyboard.delete_scene(second.id)
    assert services.storyboard.empty_bin(project.id) == (1, 1, 1)
    assert [s.id for s in services.storyboard.list_scenes(project.id)] == [scene.id]


def test_scene_caption_rules(board):
    services, project, scene, _, _ = board
    assert services.storyboard.add_scene(project.id).caption == ""
    assert services.storyboard.update_scene(scene.id, caption="  storm  ").caption == "storm"
    with pytest.raises(ValidationError, match="shorten it to 2000"):
        services.storyboard.update_scene(scene.id, caption="y" * 2001)
    inserted = services.storyboard.add_scene(project.id, "prologue", position=0)
    assert [s.caption for s in services.storyboard.list_scenes(project.id)] == ["prologue", "storm", ""]
    assert inserted.position == 0


def test_reorder_scenes_keeps_positions_dense_and_shots_with_their_takes(board):
    services, project, scene, _, _ = board
    second = services.storyboard.add_scene(project.id, "the harbour")
    third = services.storyboard.add_scene(project.id, "the cliff")
    a, b = (services.storyboard.add_shot(scene.id, caption).id for caption in "ab")
    x = services.storyboard.add_shot(second.id, "x").id
    y = services.storyboard.add_shot(third.id, "y").id
    take = add_take(services, b)
    services.storyboard.delete_scene(second.id)  # a binned scene is not part of the order
    with pytest.raises(ConflictError, match="changed since"):
        services.storyboard.reorder_scenes(project.id, [third.id, second.id, scene.id])
    services.storyboard.restore_scene(second.id)
    views = services.storyboard.reorder_scenes(project.id, [third.id, scene.id, second.id])
    assert [v.id for v in views] == [third.id, scene.id, second.id]
    live = services.storyboard.list_scenes(project.id)
    assert [(s.id, s.position) for s in live] == [(third.id, 0), (scene.id, 1), (second.id, 2)]
    assert [s.id for s in services.storyboard.film_shots(project.id)] == [y, a, b, x]
    assert _captions(services, scene.id) == ["a", "b"]
    moved = services.storyboard.get_shot(b)
    assert (moved.scene_id, moved.position, moved.chosen_take_id, moved.take_count) == (scene.id, 1, take.id, 1)
    with pytest.raises(ConflictError):
        services.storyboard.reorder_scenes(project.id, [third.id, scene.id, scene.id])
