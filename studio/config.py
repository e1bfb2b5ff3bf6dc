"""One settings object for the whole studio: `STUDIO_` environment variables, then CLI flags, then code overrides.

Every value is bounded and described; a bad value stops start-up with a message that names the setting (and the
environment variable or flag that sets it) and says what is allowed.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipelines.registry import PRESETS

_AUTH_PATTERN = re.compile(r"^[^:\s]+:\S+$")


class SettingsError(ValueError):
    """A setting has a value the studio cannot start with; the message names the setting and what to change."""


class Settings(BaseSettings):
    """Studio settings. Environment variables use the `STUDIO_` prefix (e.g. `STUDIO_DATA_DIR`)."""

    model_config = SettingsConfigDict(env_prefix="STUDIO_", extra="forbid", validate_default=True, frozen=True)

    data_dir: Path = Field(Path("studio-data"), description="Folder for the database, assets, backups and models")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...); default: SQLite in data_dir"
    )
    host: str = Field("127.0.0.1", description="Address the web UI binds to; keep 127.0.0.1 unless auth is set")
    port: int = Field(7860, ge=1, le=65535, description="Port of the web UI")
    model_preset: str = Field("demo", description="Model preset new projects start with (pipelines.registry)")
    upload_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024, description="Largest accepted upload in bytes"
    )
    image_max_pixels: int = Field(
        40_000_000, ge=64 * 64, le=400_000_000, description="Largest accepted image (width x height) in pixels"
    )
    bundle_max_bytes: int = Field(
        20 * 1024**3,
        ge=1024 * 1024,
        le=1024**4,
        description="Largest project bundle accepted on import, counted in unpacked bytes while it is read",
    )
    bundle_rows_max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        le=1024**3,
        description="Largest rows.json (the database rows) a project bundle may unpack to",
    )
    auth: str | None = Field(None, description="user:password required by the web UI (needed when host is public)")
    device: Literal["auto", "cuda", "mps", "cpu"] = Field("auto", description="Device of the local worker")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="Weights dtype of the local worker")
    offload: Literal["none", "model", "sequential", "group"] = Field(
        "none", description="CPU offload profile for small GPUs (a project's VRAM profile can pick another)"
    )
    vae_tiling: bool = Field(False, description="Decode video in tiles to save GPU memory")
    preview_every: int = Field(0, ge=0, le=1000, description="Send a preview frame every N steps (0 = off)")
    heartbeat_s: float = Field(5.0, gt=0, le=300, description="Seconds between worker heartbeats")
    heartbeat_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="A running job without a heartbeat for this long is recovered"
    )
    face_model_dir: Path | None = Field(
        None, description="insightface model pack folder; default: data_dir/models/insightface"
    )
    model_dir: Path | None = Field(None, description="Folder of local model weights; default: data_dir/models")
    max_shots_per_project: int = Field(
        10_000, ge=1, le=100_000, description="Most live shots one project may hold (storyboard import and the UI)"
    )
    caption_max_chars: int = Field(2000, ge=100, le=20_000, description="Longest scene or shot caption, in characters")
    storyboard_max_depth: int = Field(
        16, ge=8, le=64, description="Deepest nesting of lists and mappings a storyboard file may use"
    )

    @field_validator("model_preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown model preset {value!r}; choose one of: {', '.join(PRESETS)}")
        return value

    @field_validator("auth")
    @classmethod
    def _auth_shape(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not _AUTH_PATTERN.match(value):
            raise ValueError("expected user:password (no spaces, user without ':')")
        return value

    @field_validator("database_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("expected a sqlite:///PATH or postgresql+psycopg://USER@HOST/DB URL")
        if value.startswith("postgresql://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask SQLAlchemy for psycopg2.
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value

    @field_validator("host")
    @classmethod
    def _host_shape(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("expected an address such as 127.0.0.1")
        return value

    @model_validator(mode="after")
    def _heartbeat_order(self) -> Settings:
        if self.heartbeat_timeout_s <= self.heartbeat_s:
            raise ValueError(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s}) must be larger than "
                f"heartbeat_s ({self.heartbeat_s})"
            )
        return self

    # Derived locations -------------------------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    @property
    def backups_dir(self) -> Path:
        return self.data_dir / "backups"

    @property
    def resolved_face_model_dir(self) -> Path:
        return self.face_model_dir or self.data_dir / "models" / "insightface"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models"


# CLI flag -> settings field. Flags beat the environment.
_FLAGS: dict[str, str] = {
    "--data-dir": "data_dir",
    "--db": "database_url",
    "--host": "host",
    "--port": "port",
    "--model-preset": "model_preset",
    "--upload-max-bytes": "upload_max_bytes",
    "--image-max-pixels": "image_max_pixels",
    "--bundle-max-bytes": "bundle_max_bytes",
    "--bundle-rows-max-bytes": "bundle_rows_max_bytes",
    "--auth": "auth",
    "--device": "device",
    "--dtype": "dtype",
    "--offload": "offload",
    "--vae-tiling": "vae_tiling",
    "--preview-every": "preview_every",
    "--heartbeat-s": "heartbeat_s",
    "--heartbeat-timeout-s": "heartbeat_timeout_s",
    "--face-model-dir": "face_model_dir",
    "--model-dir": "model_dir",
    "--max-shots-per-project": "max_shots_per_project",
    "--caption-max-chars": "caption_max_chars",
    "--storyboard-max-depth": "storyboard_max_depth",
}
_FLAG_OF_FIELD = {field: flag for flag, field in _FLAGS.items()}


def add_settings_arguments(
    parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None, default: object = None
) -> None:
    """Add the settings flags to a parser (values stay strings; pydantic validates and converts them).

    `default=argparse.SUPPRESS` on a sub-command's parser lets the same flag come after the command name without
    undoing one given before it."""
    for flag, field in _FLAGS.items():
        if only is not None and field not in only:
            continue
        info = Settings.model_fields[field]
        parser.add_argument(
            flag, dest=f"setting_{field}", default=default, metavar=field.upper(), help=info.description
        )


def settings_overrides_from_args(args: argparse.Namespace) -> dict[str, object]:
    """The settings a parsed namespace set explicitly (flags left out are not overrides)."""
    overrides = {}
    for field in _FLAGS.values():
        value = getattr(args, f"setting_{field}", None)
        if value is not None:
            overrides[field] = value
    return overrides


def _describe_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "settings"
        where = f"{field} ({_FLAG_OF_FIELD.get(field, '')} / STUDIO_{field.upper()})" if item["loc"] else field
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"setting {where}: {message}")
    return "; ".join(lines)


def load_settings(argv: list[str] | None = None, **overrides: object) -> Settings:
    """Build the settings from the environment, then `argv` flags (e.g. ["--port", "8000"]), then `overrides`.

    Raises SettingsError naming the bad setting.
    """
    values: dict[str, object] = {}
    if argv:
        parser = argparse.ArgumentParser(add_help=False)
        add_settings_arguments(parser)
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            raise SettingsError(f"unknown option(s) {' '.join(unknown)}; known: {', '.join(_FLAGS)}")
        values.update(settings_overrides_from_args(args))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown_fields = set(values) - set(Settings.model_fields)
    if unknown_fields:
        raise SettingsError(f"unknown setting(s) {', '.join(sorted(unknown_fields))}")
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(_describe_error(error)) from None


def describe_settings() -> list[tuple[str, str, str, str]]:
    """Rows (field, env var, flag, description) for the README and `--help`."""
    return [
        (field, f"STUDIO_{field.upper()}", _FLAG_OF_FIELD.get(field, ""), info.description or "")
        for field, info in Settings.model_fields.items()
    ]
