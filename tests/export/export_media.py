"""Tiny synthetic media for the export tests: solid-colour takes (32x32 at 8 fps by default), so pixel checks are
easy, and a sine-wave music file."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def write_solid_video(
    path: Path,
    colours: Sequence[int | tuple[int, int, int]],
    width: int = 32,
    height: int = 32,
    fps: float = 8,
    preset: str = "ultrafast",
    crf: int = 1,
) -> Path:
    """One frame per colour (a grey level or an RGB triple), H.264 yuv420p."""
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-crf", str(crf), "-preset", preset],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for colour in colours:
        rgb = (colour, colour, colour) if isinstance(colour, int) else colour
        writer.send(np.full((height, width, 3), rgb, dtype=np.uint8).tobytes())
    writer.close()
    return path


def write_sine_wav(path: Path, seconds: float, frequency: float = 440.0, rate: int = 44100) -> Path:
    t = np.arange(int(round(seconds * rate))) / rate
    samples = (0.5 * np.sin(2 * np.pi * frequency * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return path
