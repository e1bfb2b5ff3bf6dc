"""Notes beside the shots the bundled model cannot film as captioned (a camera move, no character named), from the
`limits` its folder records; a model whose folder records none (the tiny preset, a real model) gets no notes."""

from __future__ import annotations

import json

from pipelines.loading import DEMO_MODEL_DIR
from studio.services.model_limits import caption_notes, model_limits, project_shot_notes, shot_notes
from studio.storyboard_file import import_storyboard, load_storyboard, parse_storyboard
from training.demo_example import EXAMPLE
from training.world import CHARACTERS

LIMITS = {
    "camera_moves": {"drawn": ["static"], "move_words": ["pan", "pans", "zoom"], "note": "no camera moves"},
    "unnamed_character": {"known_names": ["mara", "tom"], "note": "nobody named"},
}


def test_caption_notes_read_the_caption_the_camera_field_and_the_cast():
    assert caption_notes(LIMITS, "medium shot, mara stays still, camera is static", None, set()) == []
    assert caption_notes(LIMITS, "wide shot, tom moves up, camera pans left", None, set()) == ["no camera moves"]
    assert caption_notes(LIMITS, "wide shot, tom moves up", "pan-left", set()) == ["no camera moves"]
    assert caption_notes(LIMITS, "wide shot, tom moves up", "static", set()) == []
    assert caption_notes(LIMITS, "medium shot, figure stays still", None, set()) == ["nobody named"]
    # A project character named by name or trigger is a named character; words are matched whole.
    assert caption_notes(LIMITS, "<kai> stays still", None, {"<kai>"}) == []
    assert caption_notes(LIMITS, "Kai stays still", None, {"kai"}) == []
    assert caption_notes(LIMITS, "tomorrow, zoomed", None, set()) == ["nobody named"]
    assert caption_notes({}, "figure, camera pans left", "zoom-in", set()) == []


def test_the_demo_folder_records_what_its_notes_say():
    record = json.loads((DEMO_MODEL_DIR / "training.json").read_text())
    limits = model_limits("demo")
    assert limits == record["limits"]
    assert limits["camera_moves"]["drawn"] == ["static"]
    assert set(limits["unnamed_character"]["known_names"]) == {c.name for c in CHARACTERS}
    assert "0 of 24" in limits["unnamed_character"]["note"]
    assert model_limits("tiny") == {}


def test_the_example_notes_its_panning_shots_and_nothing_else(sqlite_services):
    report = import_storyboard(sqlite_services, load_storyboard(EXAMPLE), EXAMPLE.parent)
    notes = project_shot_notes(sqlite_services, report.project_id)
    camera_note = model_limits("demo")["camera_moves"]["note"]
    found = [(n.scene_number, n.shot_number, n.notes) for n in notes]
    assert found == [(3, 1, (camera_note,)), (3, 2, (camera_note,))]
    assert "camera pans left" in notes[0].caption
    # A card edited to name no one gets the other note; Kai by his trigger is named.
    [_, forest, _] = sqlite_services.storyboard.list_scenes(report.project_id)
    sqlite_services.storyboard.update_shot(forest.shots[1].id, caption="close-up shot, figure grows bigger")
    by_shot = shot_notes(sqlite_services, report.project_id)
    assert by_shot[forest.shots[1].id] == [model_limits("demo")["unnamed_character"]["note"]]
    assert forest.shots[0].id not in by_shot  # "<kai> stays still"


def test_a_model_without_recorded_limits_gets_no_notes(sqlite_services):
    text = EXAMPLE.read_text().replace("model: demo", "model: tiny").replace("width: 64", "width: 32")
    text = text.replace("height: 64", "height: 32").replace("frames: 17", "frames: 5")
    doc = parse_storyboard(text, "tiny.yaml")
    report = import_storyboard(sqlite_services, doc, EXAMPLE.parent)
    assert project_shot_notes(sqlite_services, report.project_id) == []


def test_import_on_the_command_line_prints_the_notes(tmp_path, capsys):
    from studio.cli import main

    assert main(["--data-dir", str(tmp_path / "data"), "import", str(EXAMPLE)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "note:" in line]
    camera_note = model_limits("demo")["camera_moves"]["note"]
    assert lines == [
        f'shot 3.1 "wide shot, tom moves up, camera pans left": note: {camera_note}',
        f'shot 3.2 "medium shot, mara shrinks smaller, camera pans right": note: {camera_note}',
    ]


def test_the_timeline_cards_carry_the_notes(sqlite_services):
    from studio.ui.timeline import timeline_model

    report = import_storyboard(sqlite_services, load_storyboard(EXAMPLE), EXAMPLE.parent)
    model = timeline_model(sqlite_services, report.project_id)
    limits = [[shot["limits"] for shot in scene["shots"]] for scene in model["scenes"]]
    camera_note = model_limits("demo")["camera_moves"]["note"]
    assert limits == [[None, None, None], [None, None], [camera_note, camera_note]]
