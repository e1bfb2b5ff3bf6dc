"""The film's edit as an OpenTimelineIO file, for a real editor.

The OTIO timeline is built from the same `FilmPlan` as the MP4 (see `studio.export.film` for the arithmetic), so the
two always agree:

- Track "V1" (video): one Clip per shot, referencing the take file (`ExternalReference`, file URL; available_range =
  the whole take at its own rate) with `source_range` = the part of the trimmed take seen between the cuts. A shot
  with no take rendered as a placeholder card is a Clip with a `MissingReference`.
- A dissolve of D frames is an SMPTE_Dissolve `Transition` centred on the cut: in_offset = D // 2 (taken from the
  incoming take before its source_range, as OTIO defines it), out_offset = D - D // 2 (from the outgoing take after
  its source_range). The cut sits inside the overlap, so each clip's visible range shrinks by its half and the track
  lasts exactly the film's N frames.
- A fade through black happens inside the two shots and needs no handles, so it is a Custom `Transition` named
  "fade_through_black" with zero offsets; its frame counts are in its metadata (`shotline`), and each clip's fade
  frames are in the clip's metadata too. A fade into the first shot is clip metadata only.
- Track "Music" (audio), when there is music: the music file trimmed to the film, or repeated back to back when it is
  shorter; the last clip carries an `AudioFadeOut` effect with the fade seconds.

Times on the video track are in the output rate; source ranges are in the take's own rate (they only differ when a
take was made at another fps). Every clip carries `metadata["shotline"]` with the trims, transition and film position,
so `clips_from_timeline` rebuilds the clip list from the file alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import opentimelineio as otio

from studio.export.film import (
    ClipSpec,
    ExportError,
    ExportSettings,
    FilmPlan,
    PlannedClip,
    plan_film,
    write_atomically,
)
from studio.export.probe import media_duration

METADATA_KEY = "shotline"
FADE_TRANSITION_NAME = "fade_through_black"


def _time(value: float, rate: float) -> otio.opentime.RationalTime:
    return otio.opentime.RationalTime(value, rate)


def _range(start: float, duration: float, rate: float) -> otio.opentime.TimeRange:
    return otio.opentime.TimeRange(_time(start, rate), _time(duration, rate))


def _cut_points(plan: FilmPlan) -> list[int]:
    """Output frame where each clip becomes the visible one on the track (the middle of an incoming dissolve)."""
    return [clip.start + clip.dissolve_in // 2 for clip in plan.clips]


def _clip_for(clip: PlannedClip, visible_from: int, visible_to: int, fps: float) -> otio.schema.Clip:
    spec = clip.spec
    offset = visible_from - clip.start  # output frames of the clip hidden under the incoming transition's first half
    metadata = {
        "label": clip.name,
        "transition": spec.transition if (clip.dissolve_in or (clip.fade_in and clip.index)) else "cut",
        "transition_seconds": float(spec.transition_seconds),
        "trim_in": clip.source_first,
        "trim_out": clip.source_first + clip.source_frames,
        "film_start_frame": clip.start,
        "film_frames": clip.frames,
        "dissolve_in_frames": clip.dissolve_in,
        "fade_in_frames": clip.fade_in,
        "fade_out_frames": clip.fade_out,
        "placeholder": clip.source is None,
    }
    if clip.index == 0:
        metadata["transition"] = spec.transition if clip.fade_in else "cut"
    visible = visible_to - visible_from
    if clip.source is None:
        return otio.schema.Clip(
            name=clip.name,
            media_reference=otio.schema.MissingReference(name="placeholder card"),
            source_range=_range(offset, visible, fps),
            metadata={METADATA_KEY: metadata},
        )
    source = clip.source
    scale = source.fps / fps  # output frames -> source frames
    reference = otio.schema.ExternalReference(
        target_url=Path(source.path).resolve().as_uri(),
        available_range=_range(0, source.frames, source.fps),
    )
    metadata["take_path"] = str(Path(source.path).resolve())
    return otio.schema.Clip(
        name=clip.name,
        media_reference=reference,
        source_range=_range(clip.source_first + offset * scale, visible * scale, source.fps),
        metadata={METADATA_KEY: metadata},
    )


def build_timeline(plan: FilmPlan, settings: ExportSettings, name: str = "Shotline film") -> otio.schema.Timeline:
    fps = plan.fps
    timeline = otio.schema.Timeline(name=name, global_start_time=_time(0, fps))
    timeline.metadata[METADATA_KEY] = {
        "fps": fps,
        "width": plan.width,
        "height": plan.height,
        "frames": plan.total_frames,
        "duration_seconds": plan.duration,
    }
    video = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    cuts = _cut_points(plan) + [plan.total_frames]
    for i, clip in enumerate(plan.clips):
        if i > 0 and clip.dissolve_in:
            half = clip.dissolve_in // 2
            video.append(
                otio.schema.Transition(
                    name="dissolve",
                    transition_type=otio.schema.TransitionTypes.SMPTE_Dissolve,
                    in_offset=_time(half, fps),
                    out_offset=_time(clip.dissolve_in - half, fps),
                    metadata={
                        METADATA_KEY: {
                            "type": "dissolve",
                            "frames": clip.dissolve_in,
                            "seconds": float(clip.spec.transition_seconds),
                        }
                    },
                )
            )
        elif i > 0 and clip.fade_in:
            previous = plan.clips[i - 1]
            video.append(
                otio.schema.Transition(
                    name=FADE_TRANSITION_NAME,
                    transition_type=otio.schema.TransitionTypes.Custom,
                    in_offset=_time(0, fps),
                    out_offset=_time(0, fps),
                    metadata={
                        METADATA_KEY: {
                            "type": "fade",
                            "frames": previous.fade_out + clip.fade_in,
                            "fade_out_frames": previous.fade_out,
                            "fade_in_frames": clip.fade_in,
                            "seconds": float(clip.spec.transition_seconds),
                        }
                    },
                )
            )
        video.append(_clip_for(clip, cuts[i], cuts[i + 1], fps))
    timeline.tracks.append(video)
    if settings.music is not None:
        timeline.tracks.append(_music_track(Path(settings.music), plan, settings))
    return timeline


def _music_track(music: Path, plan: FilmPlan, settings: ExportSettings) -> otio.schema.Track:
    fps = plan.fps
    music_frames = media_duration(music) * fps
    if music_frames <= 0:
        raise ExportError(f"music file {music} is empty; choose another file")
    track = otio.schema.Track(name="Music", kind=otio.schema.TrackKind.Audio)
    reference_url = music.resolve().as_uri()
    remaining = float(plan.total_frames)
    loop = 0
    while remaining > 1e-6:
        length = min(music_frames, remaining)
        track.append(
            otio.schema.Clip(
                name=f"{music.name}" if loop == 0 else f"{music.name} (loop {loop + 1})",
                media_reference=otio.schema.ExternalReference(
                    target_url=reference_url, available_range=_range(0, music_frames, fps)
                ),
                source_range=_range(0, length, fps),
            )
        )
        remaining -= length
        loop += 1
    fade = min(settings.music_fade_seconds, plan.duration)
    if fade > 0:
        track[-1].effects.append(
            otio.schema.Effect(
                name="fade_out", effect_name="AudioFadeOut", metadata={METADATA_KEY: {"seconds": float(fade)}}
            )
        )
    track.metadata[METADATA_KEY] = {"music": str(music.resolve()), "fade_seconds": float(fade), "loops": loop}
    return track


def write_timeline(
    clips: Sequence[ClipSpec] | FilmPlan,
    out_path: str | Path,
    settings: ExportSettings,
    name: str = "Shotline film",
) -> Path:
    """Write the edit as an .otio file (temp name, then rename). `clips` may be an already computed FilmPlan."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".otio":
        raise ExportError(f"the timeline is an OpenTimelineIO file; give a path ending in .otio, got {out_path}")
    plan = clips if isinstance(clips, FilmPlan) else plan_film(clips, settings)
    timeline = build_timeline(plan, settings, name=name)
    write_atomically(out_path, ".otio", lambda partial: otio.adapters.write_to_file(timeline, str(partial)))
    return out_path


def _path_of_url(url: str) -> Path:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(url)


def clips_from_timeline(timeline: otio.schema.Timeline | str | Path) -> list[ClipSpec]:
    """Rebuild the clip list (takes, trims, transitions) from an OTIO file this module wrote."""
    if not isinstance(timeline, otio.schema.Timeline):
        timeline = otio.adapters.read_from_file(str(timeline))
    video = next((track for track in timeline.tracks if track.kind == otio.schema.TrackKind.Video), None)
    if video is None:
        raise ExportError("the timeline has no video track")
    clips: list[ClipSpec] = []
    for item in video:
        if not isinstance(item, otio.schema.Clip):
            continue
        meta = dict(item.metadata.get(METADATA_KEY, {}))
        reference = item.media_reference
        video_path = None
        if isinstance(reference, otio.schema.ExternalReference):
            video_path = _path_of_url(reference.target_url)
        clips.append(
            ClipSpec(
                video=video_path,
                trim_in=int(meta.get("trim_in", 0)),
                trim_out=int(meta["trim_out"]) if "trim_out" in meta and video_path is not None else None,
                transition=str(meta.get("transition", "cut")),
                transition_seconds=float(meta.get("transition_seconds", 0.0)),
                label=str(meta.get("label", item.name)),
                placeholder_frames=int(meta["film_frames"]) if video_path is None and "film_frames" in meta else None,
            )
        )
    return clips
