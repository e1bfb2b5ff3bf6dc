from __future__ import annotations

import pytest
from face_models import build_face_pack


@pytest.fixture(scope="session")
def face_model_dir(tmp_path_factory):
    """A buffalo_l-layout folder with the tiny ONNX detector and recognizer (built once per run)."""
    return build_face_pack(tmp_path_factory.mktemp("insightface"))
