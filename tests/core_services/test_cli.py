"""`python -m studio`: project commands, the example round trip, refusals as one `error:` line."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.cli import main
from studio.storyboard_file import load_storyboard

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "assets" / "examples" / "lighthouse.yaml"


@pytest.fixture
def data_dir(tmp_path) -> list[str]:
    return ["--data-dir", str(tmp_path / "data")]


def test_project_create_list_show(data_dir, capsys):
    assert main([*data_dir, "project", "create", "Harbour", "--preset", "tiny", "--steps", "3"]) == 0
    assert "created project 1: Harbour (tiny, 32x32)" in capsys.readouterr().out
    assert main([*data_dir, "project", "list"]) == 0
    assert "Harbour" in capsys.readouterr().out
    assert main([*data_dir, "project", "show", "Harbour"]) == 0
    shown = capsys.readouterr().out
    assert "preset tiny, 32x32 at 8 fps, 3 steps" in shown and "0 scene(s), 0 shot(s)" in shown


def test_example_round_trip_through_the_cli(data_dir, tmp_path, capsys):
    assert main([*data_dir, "import", str(EXAMPLE)]) == 0
    assert "shots created: 4" in capsys.readouterr().out
    out = tmp_path / "exported" / "lighthouse.yaml"
    assert main([*data_dir, "export-storyboard", "The Lighthouse", "--out", str(out)]) == 0
    assert load_storyboard(out) == load_storyboard(EXAMPLE)
    capsys.readouterr()
    assert main([*data_dir, "import", str(out)]) == 0
    assert "already up to date, nothing changed" in capsys.readouterr().out
    assert main([*data_dir, "export-storyboard", "1"]) == 0
    assert capsys.readouterr().out == out.read_text()
    assert main([*data_dir, "project", "show", "The Lighthouse"]) == 0
    assert "(1.2) 17f no take yet [Mara]: close-up, Mara lights the lamp" in capsys.readouterr().out


def test_refusals_are_one_error_line(data_dir, tmp_path, capsys):
    assert main([*data_dir, "project", "show", "Nope"]) == 1
    assert capsys.readouterr().err == ("error: no project named 'Nope'; `python -m studio project list` shows them\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: T\nscenes:\n  - shots:\n      - caption: x\n        frames: 4\n")
    assert main([*data_dir, "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad} line 5, scenes[0].shots[0].frames: frames must be 4n+1")
    assert err.count("\n") == 1
    assert main(["--data-dir", str(tmp_path / "d2"), "--model-preset", "sora", "project", "list"]) == 2
    assert "setting model_preset" in capsys.readouterr().err


def test_render_refuses_a_bad_shot_reference(data_dir, tmp_path, capsys):
    code = main([*data_dir, "render", str(EXAMPLE), "--out", str(tmp_path / "f.mp4"), "--regenerate", "3.1"])
    assert code == 1
    assert "no such shot (scene 1: 2 shots, scene 2: 2 shots)" in capsys.readouterr().err


def test_project_bin_commands(data_dir, capsys):
    assert main([*data_dir, "project", "create", "Old"]) == 0
    assert main([*data_dir, "project", "purge", "Old"]) == 1
    assert "not in the bin; delete it first" in capsys.readouterr().err
    assert main([*data_dir, "project", "delete", "Old"]) == 0
    assert main([*data_dir, "project", "list"]) == 0
    assert "no projects yet" in capsys.readouterr().out
    assert main([*data_dir, "project", "restore", "Old"]) == 0
    assert main([*data_dir, "project", "delete", "1"]) == 0
    assert main([*data_dir, "project", "purge", "Old"]) == 0
    assert "removed for good (0 file(s)" in capsys.readouterr().out
    assert main([*data_dir, "project", "list", "--all"]) == 0
    assert "Old" not in capsys.readouterr().out


def test_ctrl_c_is_one_line_that_says_how_to_go_on(data_dir, monkeypatch, capsys):
    import studio.cli

    def interrupted(args, services):
        raise KeyboardInterrupt

    monkeypatch.setattr(studio.cli, "cmd_project_list", interrupted)
    assert main([*data_dir, "project", "list"]) == 130
    err = capsys.readouterr().err
    assert err == "interrupted: what finished is kept; run the same command again to go on\n"


def test_every_area_registers_its_commands():
    from studio.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command").choices
    for name in ("project", "import", "render", "jobs", "export", "bundle", "import-bundle", "character", "adapter"):
        assert name in commands, name
