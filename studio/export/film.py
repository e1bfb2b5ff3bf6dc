"""Render a film from takes: trims, transitions, size/fps normalisation, music, H.264 yuv420p + AAC in an MP4.

This layer knows nothing of the database: it takes a list of `ClipSpec` (one per shot, in film order) and
`ExportSettings`, and writes one MP4. The studio's export job (`studio.export.jobs`) builds the clip list from a
project's chosen takes.

Timeline arithmetic (exact, in output frames; `fps` is the output rate)
---------------------------------------------------------------------
For clip i with a source of rate r_i and trim [trim_in, trim_out) (source frames, trim_out exclusive):

    m_i = trim_out - trim_in                      source frames used
    n_i = max(1, round(m_i * fps / r_i))          output frames (n_i = m_i when r_i == fps)
    output frame j of clip i shows source frame   trim_in + min(floor(j * r_i / fps), m_i - 1)

The transition *into* clip i lasts D_i = round(seconds_i * fps) frames:

- cut: D_i = 0, whatever the seconds say.
- dissolve: the last D_i frames of clip i-1 and the first D_i frames of clip i are the same D_i output frames.
  Output frame k of the overlap (0 <= k < D_i) is `(1 - w) * A + w * B` with w = (k + 1) / (D_i + 1), so every frame
  of a dissolve is a true blend (never a copy of either shot) and the weights step evenly.
- fade (through black): nothing overlaps. The last F_out = D_i // 2 frames of clip i-1 fade out, frame k having gain
  1 - (k + 1) / F_out (its last frame is black); the first F_in = D_i - F_out frames of clip i fade in, frame k having
  gain k / F_in (its first frame is black).
- The first clip has nothing before it: a fade or a dissolve into it is a fade in from black over all D_0 frames
  (gain k / D_0).

Clip i starts at S_0 = 0, S_i = S_{i-1} + n_{i-1} - (D_i if dissolve else 0), so the film has

    N = sum_i n_i - sum_{i >= 1, dissolve} D_i    frames,    duration = N / fps seconds.

A clip must hold its transitions: (frames used by its incoming transition) + (frames used by the outgoing one)
<= n_i; otherwise the export is refused with a message naming the shot.

Size: each frame is scaled to fit inside width x height keeping its aspect ratio, centred on black (letterbox or
pillarbox), so a take of another shape is never stretched.

Audio: the film always has an AAC stream lasting the film. With no music it is silence; music is trimmed to the film,
or looped when shorter, and fades out over its last `music_fade_seconds`.

Two ways to write the file, reported in `FilmResult.method`:
- "concat": every transition is a cut, no clip is trimmed or a placeholder, and every take already is H.264 yuv420p
  at the output size and fps, all with the same H.264 parameter sets (SPS/PPS). The takes are joined by ffmpeg's
  concat demuxer with the video stream copied, not re-encoded (only the audio is encoded), so the frames are the
  takes' own, bit for bit.
- "reencode": anything else. Frames are composed here (so the arithmetic above is the code, not moviepy's float
  time arithmetic) and written through moviepy 2 with libx264.

The file is written to a temporary name beside `out_path`, fsynced, then renamed, so a reader never sees half a film.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import imageio_ffmpeg
import numpy as np

from studio.export.probe import VideoInfo, ffmpeg_exe, h264_parameter_sets, has_audio_stream, probe_video

TransitionKind = Literal["cut", "dissolve", "fade"]
TRANSITIONS: tuple[str, ...] = ("cut", "dissolve", "fade")
ProgressCallback = Callable[[int, int], None]
"""Called with (frames written, total frames); raising from it (e.g. `ExportCancelled`) aborts the export."""

AUDIO_RATE = 44100
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


class ExportError(ValueError):
    """The export cannot be made as asked; the message says what to change."""


class ExportCancelled(Exception):
    """Raised from a progress callback to stop an export; the partial file is removed."""


@dataclass(frozen=True)
class ClipSpec:
    """One shot of the film.

    video: the take file, or None for a shot with no take (a placeholder card when the settings allow it).
    trim_in / trim_out: source frames used, trim_out exclusive; None = to the end of the take; a negative trim_out
        counts from the end, like a slice (-2 drops the last two frames).
    transition / transition_seconds: how this clip comes in after the previous one.
    label: names the shot in errors, and is written on a placeholder card.
    placeholder_frames: length of the placeholder card in output frames (default: 2 seconds).
    """

    video: Path | str | None
    trim_in: int = 0
    trim_out: int | None = None
    transition: TransitionKind = "cut"
    transition_seconds: float = 0.0
    label: str = ""
    placeholder_frames: int | None = None


@dataclass(frozen=True)
class ExportSettings:
    """Output format. width and height must be even (H.264 yuv420p); fps has at most two decimals (moviepy writes
    the rate as `%.02f`)."""

    fps: float
    width: int
    height: int
    music: Path | str | None = None
    music_fade_seconds: float = 1.0
    placeholder: bool = False
    allow_fast_path: bool = True
    crf: int = 18
    preset: str = "medium"
    audio_bitrate: str = "192k"

    def validate(self) -> None:
        if not (isinstance(self.width, int) and isinstance(self.height, int)) or self.width <= 0 or self.height <= 0:
            raise ExportError(f"width and height must be positive integers, got {self.width}x{self.height}")
        if self.width % 2 or self.height % 2:
            raise ExportError(
                f"H.264 yuv420p needs an even width and height, got {self.width}x{self.height}; "
                "set the project's size to even numbers"
            )
        if not (self.fps > 0) or round(self.fps, 2) != self.fps or self.fps > 240:
            raise ExportError(f"fps must be a positive number with at most two decimals (<= 240), got {self.fps}")
        if self.music is not None and not Path(self.music).is_file():
            raise ExportError(f"music file not found: {self.music}")
        if self.music is not None and not has_audio_stream(self.music):
            raise ExportError(f"{self.music} has no audio ffmpeg can read; choose a music file (wav, mp3, m4a, ...)")
        if self.music_fade_seconds < 0:
            raise ExportError(f"music_fade_seconds must be >= 0, got {self.music_fade_seconds}")
        if not 0 <= self.crf <= 51:
            raise ExportError(f"crf must be between 0 and 51, got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ExportError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")


@dataclass(frozen=True)
class PlannedClip:
    """Where one clip lands in the film (all counts in output frames unless named source_)."""

    index: int
    spec: ClipSpec
    source: VideoInfo | None
    source_first: int
    source_frames: int
    frames: int
    start: int
    dissolve_in: int
    dissolve_out: int
    fade_in: int
    fade_out: int
    output_fps: float

    @property
    def end(self) -> int:
        return self.start + self.frames

    @property
    def name(self) -> str:
        return self.spec.label or f"clip {self.index + 1}"

    def source_index(self, j: int) -> int:
        if self.source is None:
            return 0
        return self.source_first + min(int(j * self.source.fps / self.output_fps + 1e-9), self.source_frames - 1)

    def weight(self, j: int) -> float:
        """Blend weight times fade gain of this clip's output frame j."""
        weight = 1.0
        if j < self.dissolve_in:
            weight = (j + 1) / (self.dissolve_in + 1)
        elif j >= self.frames - self.dissolve_out:
            k = j - (self.frames - self.dissolve_out)
            weight = 1.0 - (k + 1) / (self.dissolve_out + 1)
        if j < self.fade_in:
            weight *= j / self.fade_in
        if j >= self.frames - self.fade_out:
            k = j - (self.frames - self.fade_out)
            weight *= 1.0 - (k + 1) / self.fade_out
        return weight


@dataclass(frozen=True)
class FilmPlan:
    clips: list[PlannedClip]
    fps: float
    width: int
    height: int
    total_frames: int

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps

    def contributions(self, k: int) -> list[tuple[PlannedClip, int, float]]:
        """(clip, clip frame j, weight) for every clip seen in output frame k (one, or two inside a dissolve)."""
        inside = [clip for clip in self.clips if clip.start <= k < clip.end]
        return [(clip, k - clip.start, clip.weight(k - clip.start)) for clip in inside]


@dataclass(frozen=True)
class FilmResult:
    out_path: Path
    frames: int
    fps: float
    duration: float
    width: int
    height: int
    method: Literal["concat", "reencode"]
    clip_starts: list[int] = field(default_factory=list)


def transition_frames(seconds: float, fps: float) -> int:
    return int(round(seconds * fps))


def plan_film(
    clips: Sequence[ClipSpec], settings: ExportSettings, sources: Sequence[VideoInfo | None] | None = None
) -> FilmPlan:
    """Apply the timeline arithmetic of this module's docstring. `sources` (one VideoInfo or None per clip) skips
    probing; by default each clip's video is probed."""
    settings.validate()
    if not clips:
        raise ExportError("the film has no shots; add a shot to the storyboard first")
    if sources is None:
        # Each probe is one ffmpeg process: run a few at once (a 10-shot film probes in about the time of 3).
        with ThreadPoolExecutor(max_workers=4) as pool:
            sources = list(
                pool.map(
                    lambda item: _probe_clip(item[1], item[0]) if item[1].video is not None else None, enumerate(clips)
                )
            )
    if len(sources) != len(clips):
        raise ExportError(f"got {len(sources)} sources for {len(clips)} clips")
    fps = settings.fps

    # Frames each clip occupies, and each transition's length.
    lengths: list[int] = []
    firsts: list[int] = []
    used: list[int] = []
    for i, (spec, source) in enumerate(zip(clips, sources, strict=True)):
        name = spec.label or f"clip {i + 1}"
        if spec.transition not in TRANSITIONS:
            raise ExportError(f"{name}: transition must be one of {', '.join(TRANSITIONS)}, got {spec.transition!r}")
        if spec.transition_seconds < 0 or not math.isfinite(spec.transition_seconds):
            raise ExportError(f"{name}: transition seconds must be >= 0, got {spec.transition_seconds}")
        if source is None:
            if not settings.placeholder:
                raise ExportError(
                    f"{name} has no take; generate it, or export with placeholder cards for shots without takes "
                    "(CLI: --placeholders)"
                )
            frames = spec.placeholder_frames if spec.placeholder_frames is not None else int(round(2 * fps))
            if frames < 1:
                raise ExportError(f"{name}: placeholder_frames must be >= 1, got {frames}")
            firsts.append(0)
            used.append(frames)
            lengths.append(frames)
            continue
        trim_out = source.frames if spec.trim_out is None else spec.trim_out
        if trim_out < 0:
            trim_out += source.frames
        if not 0 <= spec.trim_in < trim_out <= source.frames:
            raise ExportError(
                f"{name}: trim [{spec.trim_in}, {trim_out}) is outside the take's {source.frames} frames; "
                f"trim_in must be >= 0 and < trim_out <= {source.frames}"
            )
        m = trim_out - spec.trim_in
        firsts.append(spec.trim_in)
        used.append(m)
        lengths.append(max(1, int(round(m * fps / source.fps))))

    kinds = [spec.transition if transition_frames(spec.transition_seconds, fps) > 0 else "cut" for spec in clips]
    durations = [
        transition_frames(spec.transition_seconds, fps) if kind != "cut" else 0
        for spec, kind in zip(clips, kinds, strict=True)
    ]

    planned: list[PlannedClip] = []
    start = 0
    for i, spec in enumerate(clips):
        dissolve_in = durations[i] if i > 0 and kinds[i] == "dissolve" else 0
        fade_in = 0
        if i == 0 and kinds[0] != "cut":
            fade_in = durations[0]
        elif kinds[i] == "fade":
            fade_in = durations[i] - durations[i] // 2
        nxt = i + 1 < len(clips)
        dissolve_out = durations[i + 1] if nxt and kinds[i + 1] == "dissolve" else 0
        fade_out = durations[i + 1] // 2 if nxt and kinds[i + 1] == "fade" else 0
        need = max(dissolve_in, fade_in) + max(dissolve_out, fade_out)
        name = spec.label or f"clip {i + 1}"
        if need > lengths[i]:
            raise ExportError(
                f"{name} lasts {lengths[i]} frames but its transitions need {need} "
                f"(in: {kinds[i]} {max(dissolve_in, fade_in)} frames, out: {max(dissolve_out, fade_out)} frames); "
                "shorten the transitions or lengthen the shot"
            )
        start -= dissolve_in
        clip = PlannedClip(
            index=i,
            spec=spec,
            source=sources[i],
            source_first=firsts[i],
            source_frames=used[i],
            frames=lengths[i],
            start=start,
            dissolve_in=dissolve_in,
            dissolve_out=dissolve_out,
            fade_in=fade_in,
            fade_out=fade_out,
            output_fps=fps,
        )
        planned.append(clip)
        start += lengths[i]
    return FilmPlan(clips=planned, fps=fps, width=settings.width, height=settings.height, total_frames=start)


def _probe_clip(spec: ClipSpec, index: int) -> VideoInfo:
    name = spec.label or f"clip {index + 1}"
    try:
        return probe_video(spec.video)
    except FileNotFoundError as exc:
        raise ExportError(f"{name}: take file is missing: {spec.video}") from exc
    except ValueError as exc:
        raise ExportError(f"{name}: {exc}") from exc


def can_concat(plan: FilmPlan) -> bool:
    """True when the takes can be joined without re-encoding (see the module docstring)."""
    # The concat demuxer keeps the first take's decoder setup: every take must share the H.264 profile too.
    profiles = {clip.source.profile for clip in plan.clips if clip.source is not None}
    if len(profiles) > 1:
        return False
    for clip in plan.clips:
        source = clip.source
        if source is None or clip.dissolve_in or clip.fade_in or clip.fade_out:
            return False
        if clip.source_first != 0 or clip.source_frames != source.frames:
            return False
        if (source.codec, source.pix_fmt) != ("h264", "yuv420p"):
            return False
        if (source.width, source.height) != (plan.width, plan.height) or abs(source.fps - plan.fps) > 1e-6:
            return False
    return True


def same_parameter_sets(plan: FilmPlan) -> bool:
    """True when every take decodes with the same H.264 SPS/PPS (see `probe.h264_parameter_sets`)."""
    paths = list(dict.fromkeys(Path(clip.source.path) for clip in plan.clips if clip.source is not None))
    with ThreadPoolExecutor(max_workers=4) as pool:
        sets = set(pool.map(h264_parameter_sets, paths))
    return len(sets) == 1 and b"" not in sets


def write_atomically(out_path: Path, suffix: str, write: Callable[[Path], object]) -> None:
    """Make `out_path` through `write(partial)` on a hidden partial file (ending in `suffix`) beside it, fsync it,
    then rename it into place: a reader never sees half a file, and on any failure the partial file goes."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.stem}.{uuid.uuid4().hex[:8]}.partial{suffix}")
    try:
        write(partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def render_film(
    clips: Sequence[ClipSpec],
    out_path: str | Path,
    settings: ExportSettings,
    progress: ProgressCallback | None = None,
    plan: FilmPlan | None = None,
) -> FilmResult:
    """Write the film to `out_path` (.mp4) and say how: see the module docstring for the exact arithmetic.

    `plan`: the `plan_film(clips, settings)` the caller already made (saves probing every take again)."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise ExportError(f"the film is an MP4; give an output path ending in .mp4, got {out_path}")
    plan = plan if plan is not None else plan_film(clips, settings)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    method: Literal["concat", "reencode"] = (
        "concat" if settings.allow_fast_path and can_concat(plan) and same_parameter_sets(plan) else "reencode"
    )
    write = _write_concat if method == "concat" else _write_reencode
    write_atomically(out_path, ".mp4", lambda partial: write(plan, partial, settings, progress))
    return FilmResult(
        out_path=out_path,
        frames=plan.total_frames,
        fps=plan.fps,
        duration=plan.duration,
        width=plan.width,
        height=plan.height,
        method=method,
        clip_starts=[clip.start for clip in plan.clips],
    )


# ----------------------------------------------------------------------------------------------------------------
# concat fast path


def _music_ffmpeg_args(settings: ExportSettings, duration: float) -> tuple[list[str], list[str]]:
    """(input args, audio filter args) for the film's audio in an ffmpeg command."""
    if settings.music is None:
        return ["-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo"], []
    fade = min(settings.music_fade_seconds, duration)
    inputs = ["-stream_loop", "-1", "-i", str(settings.music)]
    filters = ["-af", f"afade=t=out:st={duration - fade:.6f}:d={fade:.6f}"] if fade > 0 else []
    return inputs, filters


def _write_concat(plan: FilmPlan, out: Path, settings: ExportSettings, progress: ProgressCallback | None) -> None:
    with tempfile.TemporaryDirectory(prefix="shotline-concat-") as tmp:
        listing = Path(tmp) / "takes.txt"
        lines = []
        for clip in plan.clips:
            escaped = str(Path(clip.source.path).resolve()).replace("'", "'\\''")
            lines.append(f"file '{escaped}'")
        listing.write_text("\n".join(lines) + "\n")
        audio_inputs, audio_filters = _music_ffmpeg_args(settings, plan.duration)
        command = [
            ffmpeg_exe(),
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostats",
            "-progress",
            "pipe:1",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            *audio_inputs,
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:v",
            "copy",
            "-c:a",
            "aac",
            "-b:a",
            settings.audio_bitrate,
            "-ar",
            str(AUDIO_RATE),
            *audio_filters,
            "-t",
            f"{plan.duration:.6f}",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            str(out),
        ]
        _run_ffmpeg_with_progress(command, plan.total_frames, progress)


def _run_ffmpeg_with_progress(command: list[str], total: int, progress: ProgressCallback | None) -> None:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if progress is not None and line.startswith("frame="):
                progress(min(int(line.split("=", 1)[1].strip() or 0), total), total)
        stderr = process.stderr.read()
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if code != 0:
        raise RuntimeError(f"ffmpeg failed ({code}): {stderr.strip()[-2000:]}")
    if progress is not None:
        progress(total, total)


# ----------------------------------------------------------------------------------------------------------------
# re-encode path


class _SequentialReader:
    """Decodes one take front to back, resized to the output size; going back restarts the decoder (moviepy reads
    frame 0 once before writing, then every frame in order, so a take is decoded about once)."""

    def __init__(self, path: Path, width: int, height: int):
        self.path = path
        self.width = width
        self.height = height
        self._frames = None
        self._next_index = 0
        self._last: tuple[int, np.ndarray] | None = None

    def _restart(self) -> None:
        if self._frames is not None:
            self._frames.close()
        self._frames = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        meta = next(self._frames)
        self._source_size = tuple(meta["size"])
        self._next_index = 0

    def get(self, index: int) -> np.ndarray:
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if self._frames is None or index < self._next_index:
            self._restart()
        width, height = self._source_size
        chunk = None
        while self._next_index <= index:
            try:
                chunk = next(self._frames)
            except StopIteration as exc:
                raise ExportError(f"{self.path} ended before frame {index}; the take file may be damaged") from exc
            self._next_index += 1
        frame = np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)
        frame = fit_frame(frame, self.width, self.height)
        self._last = (index, frame)
        return frame

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None


def fit_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to fit inside width x height keeping the aspect ratio, centred on black."""
    source_height, source_width = frame.shape[:2]
    if (source_width, source_height) == (width, height):
        return frame
    scale = min(width / source_width, height / source_height)
    fit_width = max(1, min(width, int(round(source_width * scale))))
    fit_height = max(1, min(height, int(round(source_height * scale))))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (fit_width, fit_height), interpolation=interpolation)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top = (height - fit_height) // 2
    left = (width - fit_width) // 2
    canvas[top : top + fit_height, left : left + fit_width] = resized
    return canvas


def placeholder_card(label: str, width: int, height: int) -> np.ndarray:
    """A dark grey card saying which shot is missing."""
    card = np.full((height, width, 3), 48, dtype=np.uint8)
    text = label or "missing take"
    scale = max(0.25, min(2.0, width / 320))
    thickness = max(1, int(round(scale)))
    (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    origin = (max(0, (width - text_width) // 2), (height + text_height) // 2)
    cv2.putText(card, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (220, 220, 220), thickness, cv2.LINE_AA)
    return card


class _FrameComposer:
    """Output frame k of the plan, composed exactly as the module docstring says."""

    def __init__(self, plan: FilmPlan):
        self.plan = plan
        self.readers: dict[int, _SequentialReader] = {}
        self.cards: dict[int, np.ndarray] = {}
        for clip in plan.clips:
            if clip.source is None:
                self.cards[clip.index] = placeholder_card(clip.name, plan.width, plan.height)
            else:
                self.readers[clip.index] = _SequentialReader(Path(clip.source.path), plan.width, plan.height)

    def clip_frame(self, clip: PlannedClip, j: int) -> np.ndarray:
        if clip.source is None:
            return self.cards[clip.index]
        return self.readers[clip.index].get(clip.source_index(j))

    def frame(self, k: int) -> np.ndarray:
        parts = self.plan.contributions(k)
        if len(parts) == 1 and parts[0][2] == 1.0:
            clip, j, _ = parts[0]
            return self.clip_frame(clip, j)
        mixed = np.zeros((self.plan.height, self.plan.width, 3), dtype=np.float32)
        for clip, j, weight in parts:
            if weight:
                mixed += weight * self.clip_frame(clip, j).astype(np.float32)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


def _film_audio(settings: ExportSettings, duration: float):
    from moviepy import AudioClip, AudioFileClip, afx

    if settings.music is None:

        def silence(t):
            t = np.asarray(t)
            return np.zeros((t.size, 2)) if t.ndim else np.zeros(2)

        return AudioClip(silence, duration=duration, fps=AUDIO_RATE)
    music = AudioFileClip(str(settings.music), fps=AUDIO_RATE)
    if music.duration < duration:
        music = music.with_effects([afx.AudioLoop(duration=duration)])
    else:
        music = music.subclipped(0, duration)
    music = music.with_duration(duration)
    fade = min(settings.music_fade_seconds, duration)
    if fade > 0:
        music = music.with_effects([afx.AudioFadeOut(fade)])
    return music


def _write_reencode(plan: FilmPlan, out: Path, settings: ExportSettings, progress: ProgressCallback | None) -> None:
    from moviepy import VideoClip

    composer = _FrameComposer(plan)
    total = plan.total_frames
    written = 0
    reporting = False  # moviepy renders frame 0 once to learn the size; that is not progress

    def frame_function(t: float) -> np.ndarray:
        nonlocal written
        k = min(int(round(t * plan.fps)), total - 1)
        frame = composer.frame(k)
        if reporting and progress is not None and k + 1 > written:
            written = k + 1
            progress(written, total)
        return frame

    audio = None
    try:
        # The tiny epsilon makes moviepy's int(duration * fps) land on exactly `total` frames.
        video = VideoClip(frame_function, duration=(total + 1e-6) / plan.fps)
        reporting = True
        audio = _film_audio(settings, plan.duration)
        video = video.with_audio(audio)
        with tempfile.TemporaryDirectory(prefix="shotline-audio-") as tmp:
            video.write_videofile(
                str(out),
                fps=plan.fps,
                codec="libx264",
                audio_codec="aac",
                audio_fps=AUDIO_RATE,
                audio_bitrate=settings.audio_bitrate,
                preset=settings.preset,
                temp_audiofile=str(Path(tmp) / "audio.m4a"),
                ffmpeg_params=["-crf", str(settings.crf), "-movflags", "+faststart", "-f", "mp4"],
                logger=None,
            )
    finally:
        composer.close()
        if audio is not None:
            audio.close()
