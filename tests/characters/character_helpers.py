"""Helpers of the character tests: PNG/MP4 bytes of synthetic face pictures, a tiny project, an uploaded reference."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

RED, GREEN, BLUE = (250, 60, 60), (60, 250, 60), (60, 60, 250)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4_bytes(frames: np.ndarray, fps: int = 8) -> bytes:
    import tempfile
    from pathlib import Path

    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "take.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=9, macro_block_size=1
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return path.read_bytes()


def tiny_project(services, name: str = "Lighthouse"):
    return services.projects.create(name, preset="tiny")


def add_analysed(services, character_id: int, filename: str, data: bytes, analyzer=None):
    """A reference as the page's upload adds it: stored, then its face found (`ReferenceResult`)."""
    from studio.characters.references import analyze_reference

    return analyze_reference(services, services.characters.add_reference(character_id, filename, data).id, analyzer)
