"""The insightface path on tiny ONNX models built by the tests: boxes, the chosen crop, embeddings, flags."""

from __future__ import annotations

import numpy as np
import pytest
from face_models import face_picture

from studio.characters.faces import (
    FLAG_LOW_QUALITY,
    FLAG_NO_FACE,
    FLAG_SEVERAL_FACES,
    FaceAnalyzer,
    FaceModelsMissing,
    sample_frames,
)

RED, GREEN, BLUE = (250, 60, 60), (60, 250, 60), (60, 60, 250)


@pytest.fixture(scope="module")
def analyzer(face_model_dir):
    return FaceAnalyzer(face_model_dir)


def test_missing_pack_names_folder_and_files(tmp_path):
    analyzer = FaceAnalyzer(tmp_path / "nowhere")
    assert not analyzer.is_available()
    with pytest.raises(FaceModelsMissing) as error:
        analyzer.analyze_reference(face_picture([(10, 10, 60, RED)]))
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "buffalo_l") in message
    assert "det_10g.onnx" in message and "w600k_r50.onnx" in message


def test_single_face_box_crop_and_embedding(analyzer):
    picture = face_picture([(20, 30, 64, RED)])
    analysis = analyzer.analyze_reference(picture)
    assert analysis.flags == [] and analysis.ok
    assert analysis.num_faces == 1
    assert analysis.face_box == pytest.approx((20.0, 30.0, 84.0, 94.0), abs=0.5)
    embedding = np.asarray(analysis.embedding)
    assert embedding.shape == (512,)
    assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    # The aligned crop is the face square stretched over ArcFace's 112x112 input: red on top, no background.
    crop = np.asarray(analysis.crop)
    assert crop.shape == (112, 112, 3)
    top = crop[8:48, 8:104].reshape(-1, 3).mean(axis=0)
    assert top == pytest.approx(RED, abs=3)
    assert crop[8:104, 8:104].min(axis=(0, 1)).max() > 128  # no dark background pixels inside the crop
    assert analysis.crop_png().startswith(b"\x89PNG")


def test_largest_of_two_faces_is_chosen_and_flagged(analyzer):
    picture = face_picture([(2, 2, 36, GREEN), (60, 56, 64, BLUE)])
    analysis = analyzer.analyze_reference(picture)
    assert analysis.num_faces == 2
    assert analysis.flags == [FLAG_SEVERAL_FACES]
    assert "2 faces" in analysis.flags_dict()[FLAG_SEVERAL_FACES]
    assert analysis.face_box == pytest.approx((60.0, 56.0, 124.0, 120.0), abs=0.5)
    # Same embedding as the blue face alone, somewhere else: the crop really is the big face, aligned.
    alone = analyzer.analyze_reference(face_picture([(8, 8, 64, BLUE)]))
    assert np.dot(analysis.embedding, alone.embedding) == pytest.approx(1.0, abs=1e-4)
    green = analyzer.analyze_reference(face_picture([(8, 8, 64, GREEN)]))
    assert np.dot(analysis.embedding, green.embedding) < 0.9


def test_no_face_is_flagged_with_a_reason(analyzer):
    analysis = analyzer.analyze_reference(face_picture([]))
    assert analysis.flags == [FLAG_NO_FACE]
    assert analysis.face_box is None and analysis.embedding is None and analysis.crop is None
    assert "no face found" in analysis.reasons[0]


def test_small_face_is_low_quality(analyzer):
    analysis = analyzer.analyze_reference(face_picture([(50, 50, 24, RED)]))
    assert analysis.flags == [FLAG_LOW_QUALITY]
    assert "24 pixels" in analysis.reasons[0]
    assert analysis.embedding is not None  # still usable if the user keeps it


def test_identity_scores_per_character(analyzer):
    mara = analyzer.analyze_reference(face_picture([(10, 10, 64, RED)])).embedding
    tom = analyzer.analyze_reference(face_picture([(10, 10, 64, BLUE)])).embedding
    video = np.stack([face_picture([(30 + i, 20, 60, RED)]) for i in range(8)])
    frames = sample_frames(video, count=3)
    assert len(frames) == 3
    scores = analyzer.identity_scores(frames, {"mara": [mara], "tom": [tom], "ghost": []})
    assert scores["mara"] > 0.99
    assert scores["tom"] < scores["mara"] - 0.1
    assert scores["ghost"] == "no reference face"
    empty = analyzer.identity_scores([face_picture([])] * 2, {"mara": [mara]})
    assert empty == {"mara": "no face found"}
    # Float frames in [0, 1] (what the pipeline returns) work the same as uint8.
    float_scores = analyzer.identity_scores([video[0] / 255.0], {"mara": [mara]})
    assert float_scores["mara"] == pytest.approx(scores["mara"], abs=0.02)


def test_pack_files_directly_in_the_model_dir_are_found(tmp_path):
    from face_models import build_detector, build_recognizer

    build_detector(tmp_path / "det_10g.onnx")
    build_recognizer(tmp_path / "w600k_r50.onnx")
    analyzer = FaceAnalyzer(tmp_path)
    assert analyzer.pack_dir == tmp_path and analyzer.is_available()
    assert analyzer.analyze_reference(face_picture([(20, 30, 64, RED)])).ok


def test_a_folder_without_a_detector_is_reported(tmp_path):
    from face_models import build_recognizer

    (tmp_path / "buffalo_l").mkdir()
    build_recognizer(tmp_path / "buffalo_l" / "w600k_r50.onnx")
    with pytest.raises(FaceModelsMissing, match="no face detection model"):
        FaceAnalyzer(tmp_path).analyze_reference(face_picture([(20, 30, 64, RED)]))
