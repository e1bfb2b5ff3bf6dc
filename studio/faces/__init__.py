"""Faces and characters: insightface reference analysis, identity scores, adapter jobs and CLI commands."""

from studio.faces.analysis import (
    FLAG_LOW_QUALITY,
    FLAG_NO_FACE,
    FLAG_SEVERAL_FACES,
    FaceAnalyzer,
    FaceModelsMissing,
    ReferenceAnalysis,
)

__all__ = [
    "FLAG_LOW_QUALITY",
    "FLAG_NO_FACE",
    "FLAG_SEVERAL_FACES",
    "FaceAnalyzer",
    "FaceModelsMissing",
    "ReferenceAnalysis",
]
