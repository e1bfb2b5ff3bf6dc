"""Faces in character references and in takes: insightface detection (SCRFD) + recognition (ArcFace).

The model pack is the standard insightface layout, `<model_dir>/<pack>/*.onnx` (`buffalo_l` ships `det_10g.onnx`
and `w600k_r50.onnx`, plus landmark and attribute models this module does not load). Nothing is downloaded: a
missing pack raises `FaceModelsMissing`, whose message says where to put which files, and callers keep the
reference without a face analysis.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

DEFAULT_PACK = "buffalo_l"
# What the buffalo_l pack holds; any SCRFD detector + ArcFace recognizer pair in the folder works the same.
EXPECTED_PACK_FILES = ("det_10g.onnx", "w600k_r50.onnx")

FLAG_NO_FACE = "no_face"
FLAG_SEVERAL_FACES = "several_faces"
FLAG_LOW_QUALITY = "low_quality"

# A face smaller than this (short side of the detected box, in pixels) gives an unreliable ArcFace embedding:
# the recognizer works on 112x112 crops, so heavy upscaling mostly invents detail.
MIN_FACE_PIXELS = 48
# SCRFD scores real frontal faces well above 0.7; a box barely past the detection threshold is often a profile,
# a blurred face, or not a face at all.
MIN_DETECTION_SCORE = 0.6


class FaceModelsMissing(RuntimeError):
    """The insightface model pack is not where the settings say; the message says what to put where."""


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the analysed image
    score: float  # detector confidence
    landmarks: np.ndarray  # [5, 2] eyes, nose, mouth corners (pixels)
    embedding: np.ndarray  # [512] L2-normalised ArcFace embedding

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class ReferenceAnalysis:
    """What the studio stores for one reference image (see `characters.set_reference_analysis`)."""

    face_box: tuple[float, float, float, float] | None  # the chosen (largest) face, or None
    embedding: list[float] | None  # 512 floats, L2-normalised, or None without a face
    crop: Image.Image | None  # the aligned face crop (RGB), what the UI shows and what ArcFace saw
    flags: list[str] = field(default_factory=list)  # FLAG_* values
    reasons: list[str] = field(default_factory=list)  # one human sentence per flag, in the same order
    num_faces: int = 0
    score: float | None = None  # detector confidence of the chosen face

    @property
    def ok(self) -> bool:
        return not self.flags

    def flags_dict(self) -> dict[str, str]:
        """`{flag: reason}`: the shape stored in the reference row and shown by the UI."""
        return dict(zip(self.flags, self.reasons, strict=True))

    def crop_png(self) -> bytes | None:
        if self.crop is None:
            return None
        buffer = io.BytesIO()
        self.crop.save(buffer, format="PNG")
        return buffer.getvalue()


def to_bgr_array(image: Image.Image | np.ndarray | bytes | str | Path) -> np.ndarray:
    """insightface works on OpenCV-style BGR uint8 arrays; the studio passes PIL images, RGB arrays or bytes."""
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        image = Image.open(image)
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[-1] not in (3, 4):
            raise ValueError(f"expected an RGB image array of shape [H, W, 3], got {array.shape}")
        array = array[..., :3]
        if array.dtype != np.uint8:
            # Float frames from the pipeline are in [0, 1].
            array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(array[..., ::-1])


def cosine_similarity(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def _has_onnx(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*.onnx"))


def missing_pack_message(pack_dir: Path) -> str:
    files = ", ".join(EXPECTED_PACK_FILES)
    return (
        f"face models not found: put the insightface '{pack_dir.name}' pack in {pack_dir} "
        f"(a detection model and a recognition model, e.g. {files}); "
        "references are kept without face analysis until then"
    )


class FaceAnalyzer:
    """Finds faces, aligns them and embeds them with an insightface model pack from a local folder.

    The models load on first use (and once per analyzer), so building one is free and a missing pack only
    matters to code that actually asks for faces.
    """

    def __init__(
        self,
        model_dir: str | Path,
        pack: str = DEFAULT_PACK,
        det_size: tuple[int, int] = (640, 640),
        det_thresh: float = 0.5,
        min_face_pixels: int = MIN_FACE_PIXELS,
        min_detection_score: float = MIN_DETECTION_SCORE,
        providers: list[str] | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.pack = pack
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.min_face_pixels = min_face_pixels
        self.min_detection_score = min_detection_score
        self.providers = providers or ["CPUExecutionProvider"]
        self._app = None
        self._lock = threading.Lock()

    @property
    def pack_dir(self) -> Path:
        """`<model_dir>/<pack>/`, the standard layout; a `model_dir` that holds the ONNX files itself (the pack's
        zip unpacked in place) is accepted too."""
        standard = self.model_dir / self.pack
        if not _has_onnx(standard) and _has_onnx(self.model_dir):
            return self.model_dir
        return standard

    def is_available(self) -> bool:
        """True when the pack folder holds at least one ONNX model (the models themselves load lazily)."""
        return _has_onnx(self.pack_dir)

    def _load(self):
        if self._app is not None:
            return self._app
        with self._lock:
            if self._app is not None:
                return self._app
            if not self.is_available():
                raise FaceModelsMissing(missing_pack_message(self.pack_dir))
            from insightface.app import FaceAnalysis

            # A folder path (not a pack name) makes FaceAnalysis read the files in place and never download.
            try:
                app = FaceAnalysis(
                    name=str(self.pack_dir),
                    allowed_modules=["detection", "recognition"],
                    providers=self.providers,
                )
            except AssertionError:
                # insightface asserts when no ONNX file in the folder routes as a detector.
                raise FaceModelsMissing(
                    f"no face detection model in {self.pack_dir}: " + missing_pack_message(self.pack_dir)
                ) from None
            if "recognition" not in app.models:
                raise FaceModelsMissing(
                    f"no face recognition model in {self.pack_dir}: " + missing_pack_message(self.pack_dir)
                )
            app.prepare(
                ctx_id=-1 if self.providers == ["CPUExecutionProvider"] else 0,
                det_thresh=self.det_thresh,
                det_size=self.det_size,
            )
            self._app = app
            return app

    def detect(self, image: Image.Image | np.ndarray | bytes) -> list[DetectedFace]:
        """All faces in the image, largest first, each with its normalised ArcFace embedding."""
        app = self._load()
        bgr = to_bgr_array(image)
        faces = []
        for face in app.get(bgr):
            embedding = np.asarray(face.embedding, dtype=np.float32).ravel()
            norm = float(np.linalg.norm(embedding))
            faces.append(
                DetectedFace(
                    box=tuple(float(v) for v in face.bbox[:4]),
                    score=float(face.det_score),
                    landmarks=np.asarray(face.kps, dtype=np.float32),
                    embedding=embedding / norm if norm > 0 else embedding,
                )
            )
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def aligned_crop(self, image: Image.Image | np.ndarray | bytes, face: DetectedFace) -> Image.Image:
        """The face warped to ArcFace's canonical 5-point layout: what the recognizer saw."""
        from insightface.utils import face_align

        recognizer = self._load().models["recognition"]
        bgr = to_bgr_array(image)
        warped = face_align.norm_crop(bgr, landmark=face.landmarks, image_size=recognizer.input_size[0])
        return Image.fromarray(np.ascontiguousarray(warped[..., ::-1]))

    def analyze_reference(self, image: Image.Image | np.ndarray | bytes) -> ReferenceAnalysis:
        """Choose the largest face of a reference image, flag what makes it a doubtful reference, and say why.

        Flagged references are still usable: a non-human character has no face, and the user can keep them.
        """
        faces = self.detect(image)
        if not faces:
            return ReferenceAnalysis(
                face_box=None,
                embedding=None,
                crop=None,
                flags=[FLAG_NO_FACE],
                reasons=[
                    "no face found: use a picture where the face is visible, or keep it for a non-human character"
                ],
                num_faces=0,
            )
        chosen = faces[0]
        flags, reasons = [], []
        if len(faces) > 1:
            flags.append(FLAG_SEVERAL_FACES)
            reasons.append(
                f"{len(faces)} faces found; the largest one is used: crop the picture to this character alone "
                "for a cleaner reference"
            )
        x1, y1, x2, y2 = chosen.box
        short_side = min(x2 - x1, y2 - y1)
        problems = []
        if short_side < self.min_face_pixels:
            problems.append(
                f"the face is only {short_side:.0f} pixels across (at least {self.min_face_pixels} wanted): "
                "use a larger or closer picture"
            )
        if chosen.score < self.min_detection_score:
            problems.append(
                f"the face is hard to make out (detector confidence {chosen.score:.2f}): use a sharper, frontal "
                "picture"
            )
        if problems:
            flags.append(FLAG_LOW_QUALITY)
            reasons.append("; ".join(problems))
        return ReferenceAnalysis(
            face_box=chosen.box,
            embedding=[float(v) for v in chosen.embedding],
            crop=self.aligned_crop(image, chosen),
            flags=flags,
            reasons=reasons,
            num_faces=len(faces),
            score=chosen.score,
        )

    def identity_scores(
        self,
        frames: list[Image.Image | np.ndarray] | np.ndarray,
        reference_embeddings: dict[str, list[list[float]] | np.ndarray],
    ) -> dict[str, float | str]:
        """Per character: the best cosine between any face in the frames and the character's mean reference.

        `reference_embeddings` maps a character (name or id) to its reference embeddings. Each character is
        matched against every face found in the sampled frames and keeps its best match, so two characters in
        one shot each find their own face. A character with no reference embedding gets "no reference face";
        when the frames hold no face at all, every character gets "no face found".
        """
        faces = [face for frame in frames for face in self.detect(frame)]
        scores: dict[str, float | str] = {}
        for character, embeddings in reference_embeddings.items():
            embeddings = np.asarray(embeddings, dtype=np.float64).reshape(-1, 512) if len(embeddings) else None
            if embeddings is None or embeddings.size == 0:
                scores[character] = "no reference face"
                continue
            if not faces:
                scores[character] = "no face found"
                continue
            # The mean of normalised reference embeddings is the usual identity template (robust to one odd
            # reference); cosine against it for every detected face, best face wins.
            normalised = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(min=1e-12)
            template = normalised.mean(axis=0)
            scores[character] = round(max(cosine_similarity(face.embedding, template) for face in faces), 4)
        return scores


def sample_frames(video: np.ndarray | list, count: int = 4) -> list:
    """Evenly spaced frames (first and last included) of a [F, H, W, 3] video: what identity scoring looks at."""
    total = len(video)
    if total == 0:
        return []
    if total <= count:
        return [video[i] for i in range(total)]
    indices = np.linspace(0, total - 1, count).round().astype(int)
    return [video[i] for i in sorted(set(indices.tolist()))]
