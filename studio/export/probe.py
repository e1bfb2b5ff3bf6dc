"""Media facts read with the ffmpeg that imageio-ffmpeg ships (there is no ffprobe beside it).

The export decides between the concat fast path and a re-encode from these facts, and the tests use them to check
what was written, so they come from the file itself, never from what the caller meant to write.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np

_STREAM_RE = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (.*)")
_SAMPLE_RATE_RE = re.compile(r"(\d+) Hz")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class VideoInfo:
    """What one video file holds: its first video stream, and whether an audio stream is beside it."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    codec: str
    pix_fmt: str
    has_audio: bool
    audio_codec: str | None = None
    audio_rate: int | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def _ffmpeg_header(path: Path) -> str:
    # `ffmpeg -i FILE` with no output prints the stream table to stderr and exits 1; that is the probe.
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True, errors="replace"
    )
    return completed.stderr


def probe_video(path: str | Path) -> VideoInfo:
    """Read size, frame rate, exact frame count, codec and pixel format of a video file.

    Raises FileNotFoundError for a missing file and ValueError for a file without a readable video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
    except (OSError, RuntimeError, StopIteration) as exc:
        raise ValueError(f"{path} is not a readable video file: {exc}") from exc
    # Counting packets with a stream copy is exact and does not decode.
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    audio_codec = None
    audio_rate = None
    for kind, description in _STREAM_RE.findall(_ffmpeg_header(path)):
        if kind == "Audio" and audio_codec is None:
            audio_codec = description.split(",")[0].split()[0]
            rate = _SAMPLE_RATE_RE.search(description)
            audio_rate = int(rate.group(1)) if rate else None
    width, height = meta["size"]
    return VideoInfo(
        path=path,
        width=int(width),
        height=int(height),
        fps=float(meta["fps"]),
        frames=int(frames),
        codec=str(meta["codec"]),
        pix_fmt=str(meta["pix_fmt"]).split("(")[0],
        has_audio=audio_codec is not None,
        audio_codec=audio_codec,
        audio_rate=audio_rate,
    )


def media_duration(path: str | Path) -> float:
    """Container duration in seconds as ffmpeg reports it (used for music files)."""
    match = _DURATION_RE.search(_ffmpeg_header(Path(path)))
    if match is None:
        raise ValueError(f"{path} has no duration ffmpeg can read; is it an audio or video file?")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_video_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of a video as uint8 RGB, shape [F, H, W, 3]."""
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3) for chunk in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), dtype=np.uint8)


def read_audio_samples(path: str | Path, sample_rate: int = 44100) -> np.ndarray:
    """Decode the first audio stream as float32 samples in [-1, 1], shape [N, channels]; empty when there is none."""
    completed = subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
            "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "2", "-ar", str(sample_rate), "-",
        ],
        capture_output=True,
    )
    if completed.returncode != 0:
        return np.zeros((0, 2), dtype=np.float32)
    return np.frombuffer(completed.stdout, dtype=np.float32).reshape(-1, 2)
