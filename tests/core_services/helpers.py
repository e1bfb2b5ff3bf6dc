"""Small builders shared by the studio core tests (projects, shots, takes, PNG bytes)."""

from __future__ import annotations

import io
import json
import struct
import zlib

from PIL import Image


def png_bytes(width: int = 8, height: int = 8, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def safetensors_bytes(tensors: dict[str, list[float]] | None = None) -> bytes:
    """A valid .safetensors file of float32 vectors, built by hand (no torch needed)."""
    tensors = tensors or {"w": [1.0, 2.0]}
    header, blobs, offset = {}, [], 0
    for name, values in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)], "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)


def add_take(services, shot_id: int, seed: int = 1, job_id: int | None = None, video: bytes | None = None):
    shot = services.storyboard.get_shot(shot_id)
    return services.takes.add_take(
        shot_id,
        job_id,
        video=video or f"video of shot {shot_id} seed {seed}".encode(),
        thumbnail=png_bytes(color=(seed % 255, 0, 0)),
        latents=f"latents {shot_id} {seed}".encode(),
        seed=seed,
        # what a generation records of the card it was made from (see `takes.take_drift`)
        params={"model": "demo", "seed": seed, "num_frames": shot.num_frames, "shot_caption": shot.caption},
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels but carries one tiny compressed row: a decompression bomb shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
