"""Large and hostile storyboards: the import is linear in the shots (a fixed number of statements), the file is
bounded by settings (shots per project, caption length, nesting depth) and every refusal names its line and field."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from sqlalchemy import event

from studio.config import load_settings
from studio.services import build_services
from studio.services.errors import ValidationError
from studio.storyboard_file import StoryboardError, StoryboardLimits, import_storyboard, parse_storyboard


def _storyboard(scenes: int, shots_per_scene: int, caption: str = "shot {k} of scene {s}, Mara by the lamp") -> str:
    lines = ["title: Big", "model: demo", "characters:", "  - name: Mara", "  - name: Tom", "scenes:"]
    for s in range(scenes):
        lines += [f"  - caption: scene {s}", "    shots:"]
        for k in range(shots_per_scene):
            lines += [f"      - caption: {caption.format(k=k, s=s)}", "        frames: 17"]
            lines += ["        characters: [Mara, Tom]" if k % 2 else "        characters: [Mara]"]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _statements(services):
    """Count the SQL statements sent to the database inside the block."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(services.db.engine, "before_cursor_execute", count)


def _import_statements(services, text: str, tmp_path: Path) -> int:
    with _statements(services) as seen:
        import_storyboard(services, parse_storyboard(text, "big.yaml"), tmp_path)
    return len(seen)


def test_import_sends_the_same_number_of_statements_for_10_and_100_shots(services, tmp_path):
    """Linear in the shots: no statement per shot, so 10x the shots is the same statements (each carries more)."""
    first_small = _import_statements(services, _storyboard(2, 5), tmp_path)
    first_large = _import_statements(services, _storyboard(2, 50).replace("title: Big", "title: Bigger"), tmp_path)
    assert first_large == first_small
    # A re-import that changes every caption and drops a character from every shot: still no statement per shot.
    changed_small = _storyboard(2, 5, "changed {k} {s}").replace("[Mara, Tom]", "[Tom]")
    changed_large = _storyboard(2, 50, "changed {k} {s}").replace("[Mara, Tom]", "[Tom]").replace("Big", "Bigger")
    again_small = _import_statements(services, changed_small, tmp_path)
    again_large = _import_statements(services, changed_large, tmp_path)
    assert again_large == again_small
    project = services.projects.find("Bigger")
    scenes = services.storyboard.list_scenes(project.id)
    assert [len(scene.shots) for scene in scenes] == [50, 50]
    assert scenes[1].shots[49].caption == "changed 49 1"
    assert scenes[1].shots[49].character_names == ("Tom",)
    assert [shot.position for shot in scenes[0].shots] == list(range(50))


def test_import_result_matches_the_file_shot_for_shot(sqlite_services, tmp_path):
    report = import_storyboard(sqlite_services, parse_storyboard(_storyboard(3, 7), "big.yaml"), tmp_path)
    shots = sqlite_services.storyboard.film_shots(report.project_id)
    assert report.shots_created == 21 and report.film_shot_ids == [shot.id for shot in shots]
    assert [shot.caption for shot in shots][:8] == [f"shot {k} of scene 0, Mara by the lamp" for k in range(7)] + [
        "shot 0 of scene 1, Mara by the lamp"
    ]
    assert shots[1].character_names == ("Mara", "Tom") and shots[2].character_names == ("Mara",)


def test_nesting_deeper_than_the_setting_is_a_clear_error_not_a_recursion_error():
    for levels in (100, 900, 5000):  # libyaml refuses the deepest itself, with the same kind of message
        deep = "title: Deep\nscenes:\n  - caption: " + "[" * levels + "]" * levels + "\n"
        with pytest.raises(StoryboardError, match="nest") as error:
            parse_storyboard(deep, "deep.yaml")
        assert error.value.line == 3 and "deep.yaml line 3" in str(error.value)
    with pytest.raises(StoryboardError, match="nested deeper than 16 levels.*storyboard_max_depth"):
        parse_storyboard("title: Deep\nscenes:\n  - caption: " + "[" * 100 + "]" * 100 + "\n", "deep.yaml")
    nested = "title: T\nscenes:\n  - caption: x\n    shots:\n      - caption: " + "{a: " * 8 + "1" + "}" * 8 + "\n"
    with pytest.raises(StoryboardError, match="nested deeper than 8 levels"):
        parse_storyboard(nested, limits=StoryboardLimits(max_depth=8))
    parse_storyboard(_storyboard(1, 2), limits=StoryboardLimits(max_depth=6))  # what a storyboard needs


@pytest.mark.parametrize(
    ("text", "kind", "line"),
    [
        ("title: Keys\nscenes:\n  - caption: sea\n    [a, b]: 1\n", "list", 4),
        ("title: Keys\nscenes:\n  - caption: sea\n    {a: 1}: 1\n", "mapping", 4),
        ("title: Keys\n? [x, y]\n: 1\n", "list", 2),
    ],
    ids=["list", "mapping", "explicit-key"],
)
def test_a_list_or_mapping_as_a_key_names_its_line(text, kind, line):
    with pytest.raises(StoryboardError, match=f"a {kind} cannot be a key") as error:
        parse_storyboard(text, "keys.yaml")
    assert error.value.line == line


def test_more_shots_than_the_setting_names_the_first_shot_over():
    text = _storyboard(2, 3)
    with pytest.raises(StoryboardError, match="more than 4 shots") as error:
        parse_storyboard(text, "big.yaml", StoryboardLimits(max_shots=4))
    assert error.value.field == "scenes[1].shots[1]"
    assert error.value.line == parse_storyboard(text).scenes[1].shots[1].line
    assert "max_shots_per_project" in str(error.value)


def test_a_caption_longer_than_the_setting_names_line_and_field():
    text = _storyboard(1, 2).replace("shot 1 of scene 0", "x" * 150)
    with pytest.raises(StoryboardError, match="168 characters; shorten it to 120") as error:
        parse_storyboard(text, "big.yaml", StoryboardLimits(max_caption_chars=120))
    assert (error.value.field, error.value.line) == ("scenes[0].shots[1].caption", 12)
    parse_storyboard(text)  # within the default


def test_the_services_enforce_the_settings_whoever_parsed_the_file(tmp_path):
    settings = load_settings(data_dir=tmp_path / "data", max_shots_per_project=4, caption_max_chars=100)
    services = build_services(settings)
    try:
        doc = parse_storyboard(_storyboard(2, 3), "big.yaml")  # parsed without the studio's limits
        with pytest.raises(StoryboardError, match="at most 4 shots") as error:
            import_storyboard(services, doc, tmp_path)
        assert (error.value.line, error.value.field) == (doc.scenes[1].shots[1].line, "scenes[1].shots[1]")
        assert services.projects.list() == []  # all or nothing
        report = import_storyboard(services, parse_storyboard(_storyboard(2, 2), "small.yaml"), tmp_path)
        scene = services.storyboard.list_scenes(report.project_id)[0]
        with pytest.raises(ValidationError, match="already has 4 shots"):
            services.storyboard.add_shot(scene.id, "one too many")
        with pytest.raises(ValidationError, match="already has 4 shots"):
            services.storyboard.duplicate_shot(scene.shots[0].id)
        services.storyboard.delete_shot(scene.shots[0].id)
        services.storyboard.add_shot(scene.id, "room again")
        with pytest.raises(ValidationError, match="already has 4 shots"):
            services.storyboard.restore_shot(scene.shots[0].id)
        with pytest.raises(ValidationError, match="shorten it to 100"):
            services.storyboard.update_shot(scene.shots[1].id, caption="y" * 101)
    finally:
        services.close()
