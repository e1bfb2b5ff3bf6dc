"""Settings: defaults, environment, CLI flags beating the environment, and bad values named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.config import Settings, SettingsError, describe_settings, load_settings


def test_defaults_are_local_and_embedded():
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.data_dir == Path("studio-data")
    assert settings.resolved_database_url == f"sqlite:///{Path('studio-data/studio.db').resolve()}"
    assert settings.model_preset == "demo"
    assert settings.auth is None
    assert settings.resolved_face_model_dir == Path("studio-data/models/insightface")


def test_cli_flags_beat_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_PORT", "9000")
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "env"))
    assert load_settings().port == 9000
    settings = load_settings(["--port", "8123", "--data-dir", str(tmp_path / "flag")])
    assert settings.port == 8123
    assert settings.data_dir == tmp_path / "flag"


def test_postgresql_url_uses_psycopg_driver():
    settings = load_settings(["--db", "postgresql://postgres@127.0.0.1:5432/test"])
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--port", "70000"], "port (--port / STUDIO_PORT)"),
        (["--port", "abc"], "port (--port / STUDIO_PORT)"),
        (["--model-preset", "nope"], "model_preset"),
        (["--device", "tpu"], "device"),
        (["--auth", "nopassword"], "auth"),
        (["--db", "mysql://x"], "database_url"),
        (["--upload-max-bytes", "10"], "upload_max_bytes"),
        (["--heartbeat-s", "30", "--heartbeat-timeout-s", "10"], "heartbeat_timeout_s"),
    ],
)
def test_bad_value_names_the_setting(argv, named):
    with pytest.raises(SettingsError) as error:
        load_settings(argv)
    assert named in str(error.value)


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("STUDIO_PREVIEW_EVERY", "-1")
    with pytest.raises(SettingsError, match="STUDIO_PREVIEW_EVERY"):
        load_settings()


def test_unknown_flag_is_refused():
    with pytest.raises(SettingsError, match="--colour"):
        load_settings(["--colour", "red"])


def test_every_setting_is_described():
    rows = describe_settings()
    assert {row[0] for row in rows} == set(Settings.model_fields)
    assert all(row[3] for row in rows)
    assert all(row[2].startswith("--") for row in rows)
