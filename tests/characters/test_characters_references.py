"""References through the services: validated, faces analysed and stored, flags kept, no crash without models."""

from __future__ import annotations

import numpy as np
import pytest
from character_helpers import BLUE, GREEN, RED, add_analysed, png_bytes, tiny_project
from face_models import face_picture

from studio.characters.faces import FaceAnalyzer
from studio.characters.references import reanalyze_character
from studio.services.errors import ValidationError


@pytest.fixture()
def analyzer(face_model_dir):
    return FaceAnalyzer(face_model_dir)


def test_reference_face_is_found_cropped_and_stored(services, analyzer):
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    result = add_analysed(services, mara.id, "mara.png", png_bytes(face_picture([(20, 30, 64, RED)])), analyzer)
    reference = result.reference
    assert result.message == "" and reference.flags == ()
    assert reference.face_box == pytest.approx((20, 30, 84, 94), abs=0.5)
    assert len(reference.face_embedding) == 512
    assert np.linalg.norm(reference.face_embedding) == pytest.approx(1.0, abs=1e-4)
    crop = services.assets.read_bytes(reference.crop_asset_id)
    assert crop.startswith(b"\x89PNG")
    # Stored: a fresh read gives the same analysis.
    again = services.characters.list_references(mara.id)[0]
    assert again.face_embedding == reference.face_embedding and again.analyzed_at is not None


def test_flagged_references_are_kept_with_reasons(sqlite_services, analyzer):
    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    two = add_analysed(
        services, mara.id, "two.png", png_bytes(face_picture([(2, 2, 36, GREEN), (60, 56, 64, BLUE)])), analyzer
    )
    assert two.reference.flags == ("several_faces",) and "2 faces" in two.message
    assert two.reference.face_box == pytest.approx((60, 56, 124, 120), abs=0.5)
    none = add_analysed(services, mara.id, "lamp.png", png_bytes(face_picture([])), analyzer)
    assert none.reference.flags == ("no_face",) and none.reference.face_embedding is None
    assert "no face found" in none.message
    assert len(services.characters.list_references(mara.id)) == 2


def test_without_face_models_references_are_stored_and_the_message_says_where(sqlite_services):
    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    result = add_analysed(services, mara.id, "mara.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    folder = services.settings.resolved_face_model_dir / "buffalo_l"
    assert str(folder) in result.message and "det_10g.onnx" in result.message
    assert result.analysis is None and result.reference.analyzed_at is None
    assert len(services.characters.list_references(mara.id)) == 1
    # Once the models are there, the references can be analysed again.
    from face_models import build_face_pack

    build_face_pack(services.settings.resolved_face_model_dir)
    [again] = reanalyze_character(services, mara.id, FaceAnalyzer(services.settings.resolved_face_model_dir))
    assert again.reference.face_embedding is not None


def test_invalid_pictures_are_refused(sqlite_services, analyzer):
    services = sqlite_services
    mara = services.characters.create(tiny_project(services).id, "Mara")
    with pytest.raises(ValidationError):
        add_analysed(services, mara.id, "notes.png", b"this is not a picture", analyzer)
    assert services.characters.list_references(mara.id) == []


def test_pending_references_are_analysed_once_the_models_exist(sqlite_services, face_model_dir):
    from studio.characters.references import analyze_pending_references

    services = sqlite_services
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara")
    tom = services.characters.create(project.id, "Tom")
    services.characters.add_reference(mara.id, "m.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    services.characters.add_reference(tom.id, "t.png", png_bytes(face_picture([])))
    assert analyze_pending_references(services, project.id) == []  # no models in the data dir: nothing happens
    results = analyze_pending_references(services, project.id, FaceAnalyzer(face_model_dir))
    assert sorted(r.reference.flags for r in results) == [(), ("no_face",)]
    assert analyze_pending_references(services, project.id, FaceAnalyzer(face_model_dir)) == []  # all done
