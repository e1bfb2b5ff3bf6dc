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
_CODEC_RE = re.compile(r"^(\w+)(?: \(([^)/]+)\))?")
_SIZE_RE = re.compile(r"^(\d+)x(\d+)")
_FPS_RE = re.compile(r"^(\d+(?:\.\d+)?) fps")
_TBR_RE = re.compile(r"^(\d+(?:\.\d+)?) tbr")
_FRAME_RE = re.compile(r"frame=\s*(\d+)")
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
    profile: str | None = None
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


def _split_outside_parens(text: str) -> list[str]:
    """Split ffmpeg's stream description on commas that are not inside parentheses ("yuv420p(tv, bt709)")."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def probe_video(path: str | Path) -> VideoInfo:
    """Read size, frame rate, exact frame count, codec and pixel format of a video file.

    One ffmpeg run: the stream table it prints, then a stream copy of the video to the null muxer, whose final
    `frame=` count is exact and needs no decoding. Raises FileNotFoundError for a missing file and ValueError for a
    file without a readable video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    completed = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True,
        text=True,
        errors="replace",
    )
    log = completed.stderr
    video = None
    audio = None
    for kind, description in _STREAM_RE.findall(log.split("Stream mapping:")[0]):
        if kind == "Video" and video is None:
            video = _split_outside_parens(description)
        elif kind == "Audio" and audio is None:
            audio = description
    if completed.returncode != 0 or video is None:
        reason = log.strip().splitlines()[-1] if log.strip() else "no output"
        raise ValueError(f"{path} is not a readable video file: {reason}")
    codec_match = _CODEC_RE.match(video[0])
    codec = codec_match.group(1) if codec_match else video[0].split()[0]
    profile = codec_match.group(2) if codec_match else None
    pix_fmt = video[1].split("(")[0].strip() if len(video) > 1 else ""
    size = next((m for m in (_SIZE_RE.search(part) for part in video[1:]) if m), None)
    rate = next((m for m in (_FPS_RE.search(part) for part in video) if m), None)
    rate = rate or next((m for m in (_TBR_RE.search(part) for part in video) if m), None)
    counts = _FRAME_RE.findall(log)
    if size is None or rate is None or not counts:
        raise ValueError(f"{path}: ffmpeg reported no size, frame rate or frame count for its video stream")
    audio_codec = audio.split(",")[0].split()[0] if audio else None
    audio_rate = _SAMPLE_RATE_RE.search(audio) if audio else None
    return VideoInfo(
        path=path,
        width=int(size.group(1)),
        height=int(size.group(2)),
        fps=float(rate.group(1)),
        frames=int(counts[-1]),
        codec=codec,
        pix_fmt=pix_fmt,
        has_audio=audio is not None,
        profile=profile,
        audio_codec=audio_codec,
        audio_rate=int(audio_rate.group(1)) if audio_rate else None,
    )


def h264_parameter_sets(path: str | Path) -> bytes:
    """The SPS and PPS NAL units an H.264 file decodes with (b"" when none are found).

    ffmpeg's concat demuxer with a stream copy keeps the first file's parameter sets for the whole film, so takes can
    be joined without re-encoding only when theirs are identical (same size and profile is not enough: the encoder's
    rate control writes e.g. its initial QP into the PPS).
    """
    completed = subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-c",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "h264",
            "-",
        ],
        capture_output=True,
    )
    if completed.returncode != 0:
        return b""
    units = re.split(rb"\x00\x00\x01", completed.stdout)
    # A NAL unit's type is the low 5 bits of its first byte: 7 = SPS, 8 = PPS. Trailing zero bytes belong to the
    # next 4-byte start code.
    return b"".join(b"\x00\x00\x01" + unit.rstrip(b"\x00") for unit in units if unit and unit[0] & 0x1F in (7, 8))


def has_audio_stream(path: str | Path) -> bool:
    return any(kind == "Audio" for kind, _ in _STREAM_RE.findall(_ffmpeg_header(Path(path))))


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
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ac",
            "2",
            "-ar",
            str(sample_rate),
            "-",
        ],
        capture_output=True,
    )
    if completed.returncode != 0:
        return np.zeros((0, 2), dtype=np.float32)
    return np.frombuffer(completed.stdout, dtype=np.float32).reshape(-1, 2)
