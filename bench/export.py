"""Export benchmark: a 10-shot film, cuts only (concat fast path) and with dissolves, against a plain ffmpeg concat.

    .venv/bin/python bench/export.py                      # 10 shots of 33 frames, 832x480 at 16 fps (Wan 1.3B size)
    .venv/bin/python bench/export.py --width 64 --height 64 --frames 17 --fps 8    # demo-model size

The takes are ffmpeg `testsrc2` clips (moving pattern, so H.264 has real work to do, unlike solid colours),
H.264 yuv420p at the output size, written once before timing. Each case runs `--repeats` times; the table prints the
median wall time and the speed relative to the plain concat. Prints a Markdown table for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.export.film import ClipSpec, ExportSettings, render_film  # noqa: E402
from studio.export.probe import ffmpeg_exe, probe_video  # noqa: E402


def make_takes(folder: Path, shots: int, frames: int, width: int, height: int, fps: int) -> list[Path]:
    takes = []
    for index in range(shots):
        path = folder / f"take_{index:02d}.mp4"
        # A different hue per shot, so a dissolve blends two different pictures.
        subprocess.run(
            [
                ffmpeg_exe(),
                "-y",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={width}x{height}:rate={fps}",
                "-vf",
                f"hue=h={index * 36}",
                "-frames:v",
                str(frames),
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-preset",
                "medium",
                "-crf",
                "18",
                str(path),
            ],
            check=True,
        )
        takes.append(path)
    return takes


def plain_concat(takes: list[Path], out: Path, reencode_preset: str | None = None) -> None:
    """ffmpeg's concat demuxer alone: stream copy, or (with a preset) libx264 crf 18 like the export's re-encode."""
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{take}'\n" for take in takes))
    codec = (
        ["-c", "copy"]
        if reencode_preset is None
        else ["-c:v", "libx264", "-preset", reencode_preset, "-crf", "18", "-pix_fmt", "yuv420p"]
    )
    subprocess.run(
        [
            ffmpeg_exe(),
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            *codec,
            str(out),
        ],
        check=True,
    )


def timed(function, repeats: int) -> tuple[float, object]:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--frames", type=int, default=33, help="frames per take")
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--dissolve", type=float, default=0.5, help="dissolve seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="medium", help="x264 preset of the re-encode")
    args = parser.parse_args()

    import moviepy  # noqa: F401 - the first re-encode of a process pays this import (~0.4 s); keep it out of the timing

    with tempfile.TemporaryDirectory(prefix="shotline-bench-export-") as tmp:
        folder = Path(tmp)
        takes = make_takes(folder, args.shots, args.frames, args.width, args.height, args.fps)
        settings = ExportSettings(fps=args.fps, width=args.width, height=args.height, preset=args.preset)
        cuts = [ClipSpec(take) for take in takes]
        dissolves = [cuts[0]] + [
            ClipSpec(take, transition="dissolve", transition_seconds=args.dissolve) for take in takes[1:]
        ]
        cases = [
            ("plain ffmpeg concat (-c copy, no audio)", lambda: plain_concat(takes, folder / "p.mp4"), "p.mp4"),
            (
                f"plain ffmpeg concat, re-encoded (libx264 {args.preset}, no audio)",
                lambda: plain_concat(takes, folder / "plain_re.mp4", args.preset),
                "plain_re.mp4",
            ),
            ("export, cuts only (fast path)", lambda: render_film(cuts, folder / "cuts.mp4", settings), "cuts.mp4"),
            (
                "export, cuts only, re-encoded",
                lambda: render_film(
                    cuts,
                    folder / "cuts_re.mp4",
                    ExportSettings(**{**settings.__dict__, "allow_fast_path": False}),
                ),
                "cuts_re.mp4",
            ),
            (
                f"export, {args.dissolve:g} s dissolves",
                lambda: render_film(dissolves, folder / "dis.mp4", settings),
                "dis.mp4",
            ),
        ]
        rows = []
        baseline = None
        for name, function, output in cases:
            seconds, result = timed(function, args.repeats)
            baseline = baseline or seconds
            info = probe_video(folder / output)
            method = getattr(result, "method", "ffmpeg only")
            rows.append((name, method, info.frames, info.frames / info.fps, seconds, seconds / baseline))

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, python {platform.python_version()}")
    print(
        f"film: {args.shots} shots x {args.frames} frames, {args.width}x{args.height} at {args.fps} fps, "
        f"median of {args.repeats}, x264 preset {args.preset}"
    )
    print()
    print("| case | path | frames | film s | wall s | x plain concat |")
    print("|---|---|---:|---:|---:|---:|")
    for name, method, frames, duration, seconds, ratio in rows:
        print(f"| {name} | {method} | {frames} | {duration:.3f} | {seconds:.2f} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
