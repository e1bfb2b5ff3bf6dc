from __future__ import annotations

from pathlib import Path

import pytest
from export_media import write_solid_video


@pytest.fixture
def solid_video(tmp_path):
    counter = iter(range(10_000))

    def make(colours, **kwargs) -> Path:
        return write_solid_video(tmp_path / f"take_{next(counter)}.mp4", colours, **kwargs)

    return make
