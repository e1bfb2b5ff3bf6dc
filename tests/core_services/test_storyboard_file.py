"""Storyboard file: parse errors name line and field; import is idempotent; round trip is lossless."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from studio.db import models
from studio.storyboard_file import (
    StoryboardError,
    export_storyboard,
    import_storyboard,
    load_storyboard,
    parse_storyboard,
)
from tests.core_services.helpers import add_take

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
EXAMPLE = EXAMPLES / "lighthouse.yaml"


def _state(services) -> dict:
    """Row counts and the newest updated_at of every table that has one: what 'nothing changed' means."""
    state = {}
    with services.db.unit_of_work() as session:
        for table in models.Base.metadata.sorted_tables:
            state[f"{table.name}.rows"] = session.scalar(select(func.count()).select_from(table))
            if "updated_at" in table.c:
                state[f"{table.name}.updated_at"] = session.scalar(select(func.max(table.c.updated_at)))
    return state


def test_example_parses_into_the_design_document():
    doc = load_storyboard(EXAMPLE)
    assert (doc.title, doc.model, doc.width, doc.height, doc.fps) == ("The Lighthouse", "demo", 64, 64, 8)
    assert [c.name for c in doc.characters] == ["Mara", "Tom"]
    assert doc.characters[0].references == ("refs/mara_1.png", "refs/mara_2.png")
    assert doc.characters[0].adapter == "lora"
    assert [len(s.shots) for s in doc.scenes] == [2, 2]
    second = doc.scenes[0].shots[1]
    assert (second.frames, second.characters, second.transition, second.transition_seconds) == (
        17,
        ("Mara",),
        "dissolve",
        0.5,
    )
    assert second.line == 23  # the line of "- caption: close-up, Mara lights the lamp"


def test_import_twice_changes_nothing(sqlite_services):
    services = sqlite_services
    doc = load_storyboard(EXAMPLE)
    first = import_storyboard(services, doc, EXAMPLES)
    assert first.project_created
    assert (first.characters_created, first.references_added, first.scenes_created, first.shots_created) == (
        2,
        3,
        2,
        4,
    )
    before = _state(services)
    second = import_storyboard(services, doc, EXAMPLES)
    assert not second.changed, second.summary()
    assert _state(services) == before
    assert second.film_shot_ids == first.film_shot_ids


def test_round_trip_is_lossless(services, tmp_path):
    doc = load_storyboard(EXAMPLE)
    report = import_storyboard(services, doc, EXAMPLES)
    text = export_storyboard(services, report.project_id, base_dir=tmp_path)
    exported = parse_storyboard(text, source="exported.yaml")
    assert exported == doc  # ids and line numbers aside, the same document
    assert [s.id for scene in exported.scenes for s in scene.shots] == report.film_shot_ids
    assert (tmp_path / "refs" / "mara_2.png").read_bytes() == (EXAMPLES / "refs" / "mara_2.png").read_bytes()
    before = _state(services)
    assert not import_storyboard(services, exported, tmp_path).changed
    assert _state(services) == before
    assert export_storyboard(services, report.project_id) == text


def test_changed_caption_updates_the_shot_and_keeps_its_takes(sqlite_services, tmp_path):
    services = sqlite_services
    report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES)
    shot_id = report.film_shot_ids[1]
    take = add_take(services, shot_id)
    text = EXAMPLE.read_text().replace("close-up, Mara lights the lamp", "close-up, Mara trims the wick")
    changed = import_storyboard(services, parse_storyboard(text), EXAMPLES)
    assert (changed.shots_updated, changed.shots_created, changed.shots_binned) == (1, 0, 0)
    shot = services.storyboard.get_shot(shot_id)
    assert shot.caption == "close-up, Mara trims the wick"
    assert shot.chosen_take_id == take.id and shot.take_count == 1


def test_removed_shot_goes_to_bin_and_ids_follow_reordering(sqlite_services, tmp_path):
    services = sqlite_services
    report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES)
    a, b, c, d = report.film_shot_ids
    add_take(services, d)
    exported = export_storyboard(services, report.project_id)
    doc = parse_storyboard(exported)
    # Swap the two shots of scene 1 and drop the last shot of scene 2, keeping the exporter's ids.
    scene_one = doc.scenes[0]
    edited = doc.__class__(
        **{
            **{f: getattr(doc, f) for f in ("title", "model", "width", "height", "fps", "steps", "guidance")},
            "negative_prompt": doc.negative_prompt,
            "characters": doc.characters,
            "scenes": (
                scene_one.__class__(caption=scene_one.caption, shots=scene_one.shots[::-1], id=scene_one.id),
                doc.scenes[1].__class__(
                    caption=doc.scenes[1].caption, shots=doc.scenes[1].shots[:1], id=doc.scenes[1].id
                ),
            ),
        }
    )
    result = import_storyboard(services, edited, EXAMPLES)
    assert (result.shots_updated, result.shots_binned, result.reordered) == (0, 1, 1)
    assert result.film_shot_ids == [b, a, c]
    binned = services.storyboard.list_bin(report.project_id).shots
    assert [(s.id, s.take_count) for s in binned] == [(d, 1)]


def test_a_shot_moved_to_a_later_scene_by_id_keeps_its_takes(services):
    report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES)
    a, b, c, d = report.film_shot_ids
    add_take(services, a)
    doc = parse_storyboard(export_storyboard(services, report.project_id))
    one, two = doc.scenes
    # The first scene's first shot now closes the second scene: scene 1 is done before the shot arrives in scene 2.
    edited = doc.__class__(
        **{f: getattr(doc, f) for f in ("title", "model", "width", "height", "fps", "steps", "guidance")},
        negative_prompt=doc.negative_prompt,
        characters=doc.characters,
        scenes=(
            one.__class__(caption=one.caption, shots=one.shots[1:], id=one.id),
            two.__class__(caption=two.caption, shots=two.shots + one.shots[:1], id=two.id),
        ),
    )
    result = import_storyboard(services, edited, EXAMPLES)
    assert (result.shots_moved, result.shots_binned, result.shots_created) == (1, 0, 0)
    assert result.film_shot_ids == [b, c, d, a]
    assert services.storyboard.get_shot(a).take_count == 1


def test_explicit_project_name(sqlite_services):
    services = sqlite_services
    report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES, project="Second cut")
    assert services.projects.get(report.project_id).name == "Second cut"
    assert [p.name for p in services.projects.list()] == ["Second cut"]


BASE = """title: T
model: demo
characters:
  - name: Mara
scenes:
  - caption: coast
    shots:
      - caption: wide
        frames: 17
"""


@pytest.mark.parametrize(
    ("replace", "with_text", "line", "field", "message"),
    [
        ("frames: 17", "frames: 18", 9, "scenes[0].shots[0].frames", "4n\\+1 between 5 and 33"),
        (
            "frames: 17",
            "frames: 17\n        characters: [Tom]",
            10,
            "scenes[0].shots[0].characters",
            "unknown character 'Tom'",
        ),
        ("frames: 17", "frames: 17\n        colour: red", 10, "scenes[0].shots[0].colour", "unknown field"),
        ("- caption: wide", "- caption: ''", 8, "scenes[0].shots[0].caption", "caption is empty"),
        ("model: demo", "model: sora", 2, "model", "unknown model preset 'sora'"),
        ("model: demo", "model: demo\nwidth: 70", 3, "width", "multiple of 16"),
        ("  - name: Mara", "  - name: Mara\n  - name: mara", 5, "characters[1].name", "duplicate character name"),
        (
            "frames: 17",
            "frames: 17\n        transition: wipe",
            10,
            "scenes[0].shots[0].transition",
            "unknown transition",
        ),
        ("frames: 17", "seconds: 9", 9, "scenes[0].shots[0].seconds", "longer than the 4.12 s"),
        ("title: T", "title: T\ntitle: U", 2, None, "duplicate key 'title'"),
        ("    shots:", "    shots: [", 8, None, "not valid YAML"),
    ],
)
def test_errors_name_line_and_field(replace, with_text, line, field, message):
    text = BASE.replace(replace, with_text, 1)
    with pytest.raises(StoryboardError, match=message) as caught:
        parse_storyboard(text, source="bad.yaml")
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert str(error).startswith(f"bad.yaml line {line}")


def test_seconds_become_the_nearest_valid_frame_count():
    doc = parse_storyboard(BASE.replace("frames: 17", "seconds: 1.5"))
    assert doc.scenes[0].shots[0].frames == 13  # 1.5 s x 8 fps = 12 frames -> nearest 4n+1 is 13


def test_reference_paths_cannot_escape_the_storyboard_folder(sqlite_services, tmp_path):
    text = BASE.replace("  - name: Mara", "  - name: Mara\n    references: [../secret.png]")
    with pytest.raises(StoryboardError, match="without '..'") as caught:
        import_storyboard(sqlite_services, parse_storyboard(text, "x.yaml"), tmp_path)
    assert caught.value.line == 5
    assert sqlite_services.projects.list() == []  # nothing written before the references were checked


def test_invalid_reference_image_is_refused_before_writing(sqlite_services, tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "ex")
    (tmp_path / "ex" / "refs" / "mara_2.png").write_bytes(b"not a png")
    with pytest.raises(StoryboardError, match="not a readable PNG") as caught:
        import_storyboard(sqlite_services, load_storyboard(tmp_path / "ex" / "lighthouse.yaml"), tmp_path / "ex")
    assert caught.value.field == "characters[0].references"
    assert sqlite_services.projects.list() == []


def test_shot_characters_are_kept_in_declaration_order_and_spelling(sqlite_services):
    text = BASE.replace("  - name: Mara", "  - name: Mara\n  - name: Tom").replace(
        "frames: 17", "frames: 17\n        characters: [tom, Mara, Tom]"
    )
    doc = parse_storyboard(text)
    assert doc.scenes[0].shots[0].characters == ("Mara", "Tom")
    report = import_storyboard(sqlite_services, doc, Path("."))
    exported = parse_storyboard(export_storyboard(sqlite_services, report.project_id))
    assert exported == doc


def test_without_ids_an_inserted_shot_does_not_shift_takes(sqlite_services):
    services = sqlite_services
    report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES)
    first, second = report.film_shot_ids[:2]
    take = add_take(services, first)
    text = EXAMPLE.read_text().replace(
        "      - caption: wide shot, Mara climbs the stairs",
        "      - caption: establishing shot, the lighthouse in the rain\n        frames: 9\n"
        "      - caption: wide shot, Mara climbs the stairs",
    )
    changed = import_storyboard(services, parse_storyboard(text), EXAMPLES)
    assert (changed.shots_created, changed.shots_updated, changed.shots_binned) == (1, 0, 0)
    new = changed.film_shot_ids[0]
    assert changed.film_shot_ids[1:3] == [first, second]
    assert services.takes.chosen_take(first).id == take.id
    assert services.takes.chosen_take(new) is None


# Reference captions ----------------------------------------------------------------------------------------------

CAPTIONED = EXAMPLE.read_text().replace(
    "references: [refs/mara_1.png, refs/mara_2.png]",
    "references:\n"
    "      - {path: refs/mara_1.png, caption: 'close-up shot, <mara> stays still, camera is static'}\n"
    "      - refs/mara_2.png",
)


def _captions(services, character_id: int) -> dict[str, str]:
    return {r.original_name: r.caption for r in services.characters.list_references(character_id)}


def _mara(services, project_id: int):
    return next(c for c in services.characters.list(project_id) if c.name == "Mara")


def test_reference_captions_round_trip(services, tmp_path):
    doc = parse_storyboard(CAPTIONED, source="captioned.yaml")
    assert doc.characters[0].references == ("refs/mara_1.png", "refs/mara_2.png")
    assert doc.characters[0].reference_captions == ("close-up shot, <mara> stays still, camera is static", None)
    report = import_storyboard(services, doc, EXAMPLES)
    mara = _mara(services, report.project_id)
    assert _captions(services, mara.id) == {
        "refs/mara_1.png": "close-up shot, <mara> stays still, camera is static",
        "refs/mara_2.png": "",
    }
    text = export_storyboard(services, report.project_id, base_dir=tmp_path)
    assert "{path: refs/mara_1.png, caption: 'close-up shot, <mara> stays still, camera is static'}" in text
    assert "- refs/mara_2.png" in text  # uncaptioned references stay plain paths
    exported = parse_storyboard(text, source="exported.yaml")
    assert exported == doc
    before = _state(services)
    assert not import_storyboard(services, exported, tmp_path).changed
    assert _state(services) == before
    # A file without captions still exports as it was: plain paths only.
    plain = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES, project="Plain")
    assert "path:" not in export_storyboard(services, plain.project_id)


def test_reimport_updates_a_changed_caption_and_a_plain_path_keeps_it(sqlite_services):
    services = sqlite_services
    report = import_storyboard(services, parse_storyboard(CAPTIONED), EXAMPLES)
    mara = _mara(services, report.project_id)
    ids = {r.original_name: r.id for r in services.characters.list_references(mara.id)}
    changed = CAPTIONED.replace("close-up shot, <mara> stays still", "wide shot, <mara> stays still").replace(
        "      - refs/mara_2.png", "      - {path: refs/mara_2.png, caption: 'medium shot, <mara> moves left'}"
    )
    result = import_storyboard(services, parse_storyboard(changed), EXAMPLES)
    assert (result.reference_captions_updated, result.references_added) == (2, 0)
    assert "reference captions updated: 2" in result.summary()
    assert {r.original_name: r.id for r in services.characters.list_references(mara.id)} == ids  # same rows
    assert _captions(services, mara.id) == {
        "refs/mara_1.png": "wide shot, <mara> stays still, camera is static",
        "refs/mara_2.png": "medium shot, <mara> moves left",
    }
    # The original file names mara_2 by a plain path: its caption stays; `caption: ''` clears one.
    cleared = CAPTIONED.replace("caption: 'close-up shot, <mara> stays still, camera is static'", "caption: ''")
    result = import_storyboard(services, parse_storyboard(cleared), EXAMPLES)
    assert result.reference_captions_updated == 1
    assert _captions(services, mara.id) == {"refs/mara_1.png": "", "refs/mara_2.png": "medium shot, <mara> moves left"}
    assert not import_storyboard(services, parse_storyboard(cleared), EXAMPLES).changed


def test_a_caption_without_the_trigger_is_refused_before_anything_is_written(sqlite_services):
    services = sqlite_services
    text = CAPTIONED.replace("close-up shot, <mara> stays still", "close-up shot, mara stays still")
    with pytest.raises(StoryboardError, match="must name Mara by the trigger <mara>") as caught:
        parse_storyboard(text, source="bad.yaml")
    assert (caught.value.line, caught.value.field) == (12, "characters[0].references[0].caption"), str(caught.value)
    # With its own trigger the file's trigger is the one a caption must name.
    renamed = CAPTIONED.replace("    adapter: lora", "    adapter: lora\n    trigger: <keeper>")
    with pytest.raises(StoryboardError, match="by the trigger <keeper>"):
        parse_storyboard(renamed)
    ok = parse_storyboard(renamed.replace("<mara> stays still", "<keeper> stays still"))
    assert ok.characters[0].reference_captions[0] == "close-up shot, <keeper> stays still, camera is static"
    # A document built in code (not parsed) meets the service's check: the import is refused as a whole.
    report = import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES)
    before = _state(services)
    doc = parse_storyboard(CAPTIONED.replace("Mara climbs the stairs", "Mara runs up the stairs"))
    bad = dataclasses.replace(doc.characters[0], reference_captions=("close-up shot, mara stays still", None))
    with pytest.raises(StoryboardError, match="trigger <mara>") as caught:
        import_storyboard(services, dataclasses.replace(doc, characters=(bad, *doc.characters[1:])), EXAMPLES)
    assert caught.value.field == "characters[0].references"
    assert _state(services) == before
    assert set(_captions(services, _mara(services, report.project_id).id).values()) == {""}
    assert services.storyboard.film_shots(report.project_id)[0].caption == "wide shot, Mara climbs the stairs"


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        (
            "{path: refs/m.png, colour: red}",
            "characters[0].references[0].colour",
            "unknown field \\(known: path, caption",
        ),
        ("{path: refs/m.png, caption: 12}", "characters[0].references[0].caption", "expected text"),
        ("{path: refs/m.png, caption: [a, b]}", "characters[0].references[0].caption", "expected text"),
        ("{caption: '<mara> stays still'}", "characters[0].references[0].path", "must be a file path"),
        ("12", "characters[0].references", "references\\[0\\] must be a file path or"),
    ],
)
def test_bad_reference_entries_name_line_and_field(entry, field, message):
    text = BASE.replace("  - name: Mara", f"  - name: Mara\n    references:\n      - {entry}")
    with pytest.raises(StoryboardError, match=message) as caught:
        parse_storyboard(text, source="bad.yaml")
    assert caught.value.field == field, str(caught.value)
    assert caught.value.line in (5, 6) and str(caught.value).startswith(f"bad.yaml line {caught.value.line}")
