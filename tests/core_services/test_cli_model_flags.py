"""`--model-dir --device --dtype --offload` on every `python -m studio` command, before or after its name."""

from __future__ import annotations

import argparse

import pytest

from studio.cli import MODEL_SETTINGS, build_parser, main
from studio.config import load_settings, settings_overrides_from_args

FLAGS = ["--model-dir", "/models", "--device", "cpu", "--dtype", "fp32", "--offload", "model"]
EXPECTED = {"model_dir": "/models", "device": "cpu", "dtype": "fp32", "offload": "model"}


def _commands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_command_takes_the_model_flags_after_its_name():
    parser = build_parser()
    commands = list(_commands(parser))
    assert {("render",), ("import",), ("settings",), ("project", "list")} <= {c for c, _ in commands}
    for command, sub in commands:
        flags = {option for action in sub._actions for option in action.option_strings}
        missing = [f for f in FLAGS[::2] if f not in flags]
        assert not missing, f"{' '.join(command)} lacks {missing}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_flags_reach_the_settings(where):
    parser = build_parser()
    argv = [*FLAGS, "project", "list"] if where == "before" else ["project", "list", *FLAGS]
    overrides = settings_overrides_from_args(parser.parse_args(argv))
    assert {k: overrides[k] for k in MODEL_SETTINGS} == EXPECTED
    settings = load_settings(None, **overrides)
    assert (str(settings.model_dir), settings.device, settings.dtype, settings.offload) == tuple(EXPECTED.values())
    # A flag before the command is not undone by the command's own (absent) copy of it.
    mixed = settings_overrides_from_args(parser.parse_args(["--device", "cpu", "project", "list", "--dtype", "bf16"]))
    assert mixed["device"] == "cpu" and mixed["dtype"] == "bf16"


def test_a_bad_flag_value_is_one_error_line(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "settings", "--offload", "disk"]) == 2
    assert "setting offload (--offload / STUDIO_OFFLOAD)" in capsys.readouterr().err


def test_models_lists_every_preset_with_what_it_needs(tmp_path, capsys, monkeypatch):
    from pipelines.registry import PRESETS

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert main(["--data-dir", str(tmp_path), "models", "--model-dir", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        assert f"\n{name}: " in f"\n{out}"
    assert "sparse_high_noise.safetensors and sparse_low_noise.safetensors" in out
    assert "not found (weights for model preset 'wan2.2-t2v-a14b' are missing" in out
    assert str(tmp_path / "models" / "Wan2.2-T2V-A14B-Diffusers") in out
    assert "offload none ~69 GB, model ~29 GB" in out
