"""The studio side of export: a project's chosen takes -> film + OTIO, stored as assets with an Export row.

`run_export_job` is the worker's handler for `export_film` jobs; `export_project` is what the CLI (`python -m studio
export PROJECT --out film.mp4`) and the headless `render` command call. Both read the project through the services
only, and both go through `studio.export.film.render_film` and `studio.export.timeline.write_timeline`.

An `export_film` job carries an `ExportFilm` spec (`studio.services.job_specs`): music (an uploaded asset or a file
on the worker's disk) and its fade-out, grey cards for shots without a take, whether the takes may be joined without
a re-encode, and an optional `out_path` the film and its .otio are also written to (what `python -m studio render
STORYBOARD --out film.mp4` asks for).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.export.film import (
    ClipSpec,
    ExportCancelled,
    ExportError,
    ExportSettings,
    FilmResult,
    ProgressCallback,
    plan_film,
    render_film,
)
from studio.export.timeline import write_timeline
from studio.services.job_specs import spec_of

# Share of the job's progress bar given to the frames; the rest is the timeline and storing the assets.
RENDER_SHARE = 0.95
STALE_SCRATCH_S = 24 * 3600


def shot_label(number: int, scene_position: int | None, shot, max_caption: int = 48) -> str:
    """How a shot is named in errors and on placeholder cards: its place in the film and its caption."""
    caption = " ".join(str(shot.caption).split())
    if len(caption) > max_caption:
        caption = caption[: max_caption - 3] + "..."
    where = f" (scene {scene_position + 1}, shot {shot.position + 1})" if scene_position is not None else ""
    return f"shot {number}{where}: {caption!r}" if caption else f"shot {number}{where}"


def project_clips(services, project_id: int) -> list[ClipSpec]:
    """The film's clips: every live shot in film order, its chosen take (or None), trims and transition."""
    scene_positions = {scene.id: scene.position for scene in services.storyboard.list_scenes(project_id)}
    clips = []
    for number, shot in enumerate(services.storyboard.film_shots(project_id), start=1):
        video = None
        if shot.chosen_take_id is not None:
            take = services.takes.get(shot.chosen_take_id)
            video = services.assets.path_of(take.video_asset_id)
        clips.append(
            ClipSpec(
                video=video,
                trim_in=int(shot.trim_in or 0),
                # The shot stores frames cut from the end; a negative trim_out says the same to the renderer.
                trim_out=-int(shot.trim_out) if shot.trim_out else None,
                transition=shot.transition_type or "cut",
                transition_seconds=float(shot.transition_seconds or 0.0),
                label=shot_label(number, scene_positions.get(shot.scene_id), shot),
                placeholder_frames=int(shot.num_frames),
            )
        )
    if not clips:
        raise ExportError("the project has no shots to export; add shots to its storyboard first")
    return clips


def project_export_settings(
    project,
    music: Path | str | None = None,
    music_fade_seconds: float = 1.0,
    placeholder: bool = False,
    allow_fast_path: bool = True,
) -> ExportSettings:
    return ExportSettings(
        fps=project.fps,
        width=project.width,
        height=project.height,
        music=music,
        music_fade_seconds=music_fade_seconds,
        placeholder=placeholder,
        allow_fast_path=allow_fast_path,
    )


def check_music_file(path: Path, name: str) -> None:
    """Refuse a music track ffmpeg reads no audio from, naming it as the film-maker chose it (`name`), not by the
    asset store's path it was kept under."""
    from studio.export.probe import has_audio_stream

    if not has_audio_stream(path):
        raise ExportError(f"{name} has no audio ffmpeg can read; choose a music file (wav, mp3, m4a, ...)")


def _settings_record(settings: ExportSettings, result: FilmResult, music_asset_id: int | None) -> dict[str, Any]:
    """What the Export row keeps about how the film was made."""
    return {
        "fps": settings.fps,
        "width": settings.width,
        "height": settings.height,
        "music": str(settings.music) if settings.music is not None else None,
        "music_asset_id": music_asset_id,
        "music_fade_seconds": settings.music_fade_seconds,
        "placeholder": settings.placeholder,
        "allow_fast_path": settings.allow_fast_path,
        "method": result.method,
        "frames": result.frames,
        "duration": result.duration,
        "clip_starts": list(result.clip_starts),
    }


@dataclass(frozen=True)
class ProjectExport:
    film_path: Path
    timeline_path: Path
    result: FilmResult
    export: Any  # ExportView, or None when not stored


def export_project(
    services,
    project_id: int,
    out_path: str | Path,
    music: str | Path | None = None,
    music_fade_seconds: float = 1.0,
    placeholder: bool = False,
    allow_fast_path: bool = True,
    progress: ProgressCallback | None = None,
    store: bool = True,
    job_id: int | None = None,
) -> ProjectExport:
    """Write the project's film to `out_path` and its edit to the .otio beside it; `store` also records both as
    assets with an Export row (so the studio lists the export)."""
    out_path = Path(out_path)
    project = services.projects.get(project_id)
    clips = project_clips(services, project_id)
    settings = project_export_settings(project, music, music_fade_seconds, placeholder, allow_fast_path)
    plan = plan_film(clips, settings)  # refuses a bad edit before any file is written
    result = render_film(clips, out_path, settings, progress=progress, plan=plan)
    timeline_path = write_timeline(plan, out_path.with_suffix(".otio"), settings, name=project.name)
    export = None
    if store:
        export = services.exports.create(
            project_id, job_id, _settings_record(settings, result, None), out_path, timeline_path.read_bytes()
        )
    return ProjectExport(film_path=out_path, timeline_path=timeline_path, result=result, export=export)


def run_export_job(
    services,
    job,
    report_progress: Callable[..., None],
    should_cancel: Callable[[], bool],
) -> dict[str, Any]:
    """Handler of `export_film` jobs (`studio.services.job_specs.ExportFilm`).

    Progress is reported per frame written; a cancel request stops the render within one frame, removes the partial
    file and stores nothing (the worker then marks the job cancelled).
    """
    spec = spec_of(job)
    project_id = job.project_id
    if project_id is None:
        raise ExportError("the export job names no project; enqueue it with project_id")
    out_path = Path(spec.out_path) if spec.out_path else None
    music = None
    if spec.music_asset_id is not None:
        music = services.assets.path_of(spec.music_asset_id)
        check_music_file(music, services.assets.get(spec.music_asset_id).original_name or "the music file")
    elif spec.music_path:
        music = Path(spec.music_path)
    project = services.projects.get(project_id)
    settings = project_export_settings(
        project, music, float(spec.music_fade_seconds), spec.placeholder, spec.allow_fast_path
    )
    report_progress(0.0, "preparing the edit")
    clips = project_clips(services, project_id)
    plan = plan_film(clips, settings)

    def on_frame(done: int, total: int) -> None:
        if should_cancel():
            raise ExportCancelled(f"export job {job.id} was cancelled")
        report_progress(RENDER_SHARE * done / total, f"frame {done}/{total}", step=done, total=total)

    work_dir = Path(tempfile.mkdtemp(prefix="export-", dir=_scratch_dir(services)))
    try:
        film_path = work_dir / "film.mp4"
        try:
            result = render_film(clips, film_path, settings, progress=on_frame, plan=plan)
        except ExportCancelled:
            return {"cancelled": True}
        report_progress(RENDER_SHARE, "writing the timeline")
        timeline_path = write_timeline(plan, work_dir / "film.otio", settings, name=project.name)
        if should_cancel():
            return {"cancelled": True}
        report_progress(0.98, "storing the film")
        record = _settings_record(settings, result, spec.music_asset_id)
        export = services.exports.create(project_id, job.id, record, film_path, timeline_path.read_bytes())
        if out_path is not None:
            _publish(film_path, out_path)
            _publish(timeline_path, out_path.with_suffix(".otio"))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report_progress(1.0, f"exported {result.frames} frames ({result.method})", step=result.frames, total=result.frames)
    return {
        "export_id": export.id,
        "video_asset_id": export.video_asset_id,
        "timeline_asset_id": export.timeline_asset_id,
        "frames": result.frames,
        "fps": result.fps,
        "duration": result.duration,
        "width": result.width,
        "height": result.height,
        "method": result.method,
    }


def _publish(source: Path, target: Path) -> None:
    """Copy to `target` through a temp name in its folder, then rename: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _scratch_dir(services) -> Path:
    # Inside the data dir: the film is copied into the asset store next, and the same disk avoids a cross-device copy
    # of a large file through /tmp (often a small tmpfs).
    folder = Path(services.settings.data_dir) / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    # A worker killed mid-export leaves its folder behind; one a day old belongs to no running export.
    for stale in folder.glob("export-*"):
        try:
            if time.time() - stale.stat().st_mtime > STALE_SCRATCH_S:
                shutil.rmtree(stale, ignore_errors=True)
        except FileNotFoundError:
            continue
    return folder
