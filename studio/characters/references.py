"""A character's reference pictures through the services: their faces found (and found again), and identity
scores of takes against those faces.

Every function takes the `Services` bundle first and goes through its services only (no direct database access).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.characters.faces import FaceAnalyzer, FaceModelsMissing, ReferenceAnalysis, sample_frames

logger = logging.getLogger(__name__)

# Generic sentences per flag, for reference rows read back later (the precise reason is only known at analysis).
FLAG_REASONS = {
    "no_face": "no face found: fine for a non-human character, otherwise use a picture where the face is visible",
    "several_faces": "several faces: the largest one is used; crop the picture to this character alone",
    "low_quality": "the face is small or unclear: a larger, sharper, frontal picture gives a better likeness",
}

_analyzers: dict[tuple[str, str], FaceAnalyzer] = {}
_analyzers_lock = threading.Lock()


def face_analyzer_for(settings) -> FaceAnalyzer:
    """One analyzer per face-model folder per process (the ONNX sessions load once, on first use)."""
    folder = Path(settings.resolved_face_model_dir)
    key = (str(folder), "buffalo_l")
    with _analyzers_lock:
        analyzer = _analyzers.get(key)
        if analyzer is None:
            analyzer = _analyzers[key] = FaceAnalyzer(folder)
        return analyzer


# ---------------------------------------------------------------------------------------------------------------
# References


@dataclass(frozen=True)
class ReferenceResult:
    reference: object  # ReferenceView after analysis (or as stored, when faces could not be analysed)
    analysis: ReferenceAnalysis | None
    message: str  # what to tell the user: the flags' reasons, or where to put the face models; "" when all is well


def analyze_reference(
    services, reference_id: int, analyzer: FaceAnalyzer | None = None, data: bytes | None = None
) -> ReferenceResult:
    """Find the face of a stored reference (`services.characters.add_reference` stores it) and record it with its
    crop. Flagged references are kept (the user decides); without the face models the reference stays unanalysed
    and the message says where the models go. `data`: the picture's bytes when the caller has them (it just stored
    them), else they are read from the asset store."""
    analyzer = analyzer or face_analyzer_for(services.settings)
    reference = services.characters.get_reference(reference_id)
    if data is None:
        data = services.assets.read_bytes(reference.asset_id)
    try:
        analysis = analyzer.analyze_reference(data)
    except FaceModelsMissing as error:
        return ReferenceResult(reference, None, str(error))
    crop_asset_id = None
    crop = analysis.crop_png()
    if crop is not None:
        crop_asset_id = services.assets.put_bytes(
            crop, kind="face_crop", mime="image/png", filename=f"face-{reference.id}.png"
        ).id
    reference = services.characters.set_reference_analysis(
        reference.id, analysis.face_box, analysis.embedding, analysis.flags, crop_asset_id=crop_asset_id
    )
    return ReferenceResult(reference, analysis, "; ".join(analysis.reasons))


def reanalyze_character(services, character_id: int, analyzer: FaceAnalyzer | None = None) -> list[ReferenceResult]:
    """Analyse every reference again (after the face models were installed)."""
    return [analyze_reference(services, r.id, analyzer) for r in services.characters.list_references(character_id)]


def analyze_pending_references(services, project_id: int, analyzer: FaceAnalyzer | None = None) -> list:
    """Analyse every reference of the project that was stored without a face analysis (storyboard imports, uploads
    made before the face models were installed). Without the models: nothing happens, an empty list returns."""
    analyzer = analyzer or face_analyzer_for(services.settings)
    if not analyzer.is_available():
        return []
    results = []
    for character in services.characters.list(project_id):
        for reference in services.characters.list_references(character.id):
            if reference.analyzed_at is None:
                results.append(analyze_reference(services, reference.id, analyzer))
    return results


# ---------------------------------------------------------------------------------------------------------------
# Identity scores


def read_video_frames(path: Path) -> np.ndarray:
    """All frames of an MP4 as [F, H, W, 3] uint8, through the ffmpeg that imageio-ffmpeg ships."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3) for chunk in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


def score_take(services, take_id: int, analyzer: FaceAnalyzer | None = None, frames: int = 4) -> dict | None:
    """Identity score of each character of the take's shot: best cosine between faces in `frames` evenly sampled
    frames and the character's reference embeddings, stored on the take as `{name: score | "no face found" |
    "no reference face"}`. Returns the scores, or None when the shot has no characters or the face models are
    not installed (nothing is stored then)."""
    take = services.takes.get(take_id)
    shot = services.storyboard.get_shot(take.shot_id)
    if not shot.character_ids:
        return None
    analyzer = analyzer or face_analyzer_for(services.settings)
    if not analyzer.is_available():
        logger.info("identity scores skipped: face models are not installed in %s", analyzer.pack_dir)
        return None
    references = {}
    for character_id, name in zip(shot.character_ids, shot.character_names, strict=False):
        embeddings = [r.face_embedding for r in services.characters.list_references(character_id) if r.face_embedding]
        references[name] = embeddings
    video = read_video_frames(services.assets.path_of(take.video_asset_id))
    try:
        scores = analyzer.identity_scores(sample_frames(video, frames), references)
    except FaceModelsMissing as error:
        logger.info("identity scores skipped: %s", error)
        return None
    services.takes.set_identity_scores(take_id, scores)
    return scores


__all__ = [
    "FLAG_REASONS",
    "ReferenceResult",
    "analyze_pending_references",
    "analyze_reference",
    "face_analyzer_for",
    "reanalyze_character",
    "read_video_frames",
    "score_take",
]
