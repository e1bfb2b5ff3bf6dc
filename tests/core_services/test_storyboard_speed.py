"""The storyboard file's `speed:` block: the project's speed settings, parsed, imported, exported and refused."""

from __future__ import annotations

import pytest

from studio.storyboard_file import StoryboardError, export_storyboard, import_storyboard, parse_storyboard

FILM = """title: Fast film
model: demo
speed:
  step_cache: first-block
  cache_threshold: 0.1
  attention_backend: native
  accelerator: lightx2v
scenes:
  - caption: coast
    shots:
      - caption: wide shot of the sea
        frames: 17
"""


def test_speed_settings_parse_import_and_export_round_trip(services, tmp_path):
    doc = parse_storyboard(FILM)
    assert doc.speed == {"step_cache": "first-block", "cache_threshold": 0.1, "accelerator": "lightx2v"}
    report = import_storyboard(services, doc, tmp_path)
    project = services.projects.get(report.project_id)
    assert project.acceleration == doc.speed  # defaults dropped
    assert project.steps == 20  # the file's steps (the preset's when it names none) win over few-step defaults
    text = export_storyboard(services, report.project_id)
    assert "speed:" in text and parse_storyboard(text) == doc
    assert not import_storyboard(services, parse_storyboard(text), tmp_path).changed
    # A file without `speed:` puts the project back on its preset's defaults.
    plain = FILM.split("speed:")[0] + FILM[FILM.index("scenes:") :]
    assert import_storyboard(services, parse_storyboard(plain), tmp_path).project_updated
    assert services.projects.get(report.project_id).acceleration == {}
    assert "speed:" not in export_storyboard(services, report.project_id)


@pytest.mark.parametrize(
    ("replace", "with_text", "line", "message"),
    [
        ("step_cache: first-block", "step_cache: teacache", 4, "step_cache must be one of"),
        ("attention_backend: native", "attention_backend: flash_hub", 4, "hub backends download kernels"),
        ("cache_threshold: 0.1", "cache_threshold: 4", 4, "cache_threshold must be between"),
        ("attention_backend: native", "turbo: true", 6, "unknown field"),
    ],
)
def test_bad_speed_settings_name_the_line(replace, with_text, line, message):
    with pytest.raises(StoryboardError, match=message) as caught:
        parse_storyboard(FILM.replace(replace, with_text), source="fast.yaml")
    assert caught.value.line == line and str(caught.value).startswith(f"fast.yaml line {line}")
