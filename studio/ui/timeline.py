"""The storyboard timeline: one `gr.HTML` component that draws every scene and shot card in the browser.

Why one component and not `@gr.render` cards: keyed re-renders reset text being typed, saving per keystroke lost
characters, quick clicks reached the wrong card and one move cost ~1.7 s at 64 shots (measured on a prototype). Here
the value is plain data (`timeline_model`), the browser builds the cards itself with `textContent` (no user string
is ever parsed as HTML or as a template, so `${document.title}`, `{{value}}` and `<img onerror>` stay text), cards
are reconciled by shot id (a caption being typed in is never replaced), and every user action is one delegated
listener that calls `trigger("edit", {...})` with the shot id and the structure version the page saw. The server
applies each edit as one small service command (see `storyboard_page.apply_edit`); a stale version is refused and
the page redraws from the services.

Captions are saved on change (blur) or Enter, never per keystroke.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from studio.services.model_limits import shot_notes
from studio.ui.security import asset_url, take_thumbnail_url

TIMELINE_HTML = """
<div class="tl-root" data-version="">
  <div class="tl-status" aria-live="polite"></div>
  <div class="tl-player" hidden>
    <div class="tl-screen"><video class="tl-video" playsinline></video><video class="tl-video" playsinline></video>
      <div class="tl-card-gap">no take yet</div></div>
    <div class="tl-player-bar"><span class="tl-now"></span>
      <button type="button" class="tl-btn" data-player="next">Next shot</button>
      <button type="button" class="tl-btn" data-player="close">Close</button></div>
  </div>
  <div class="tl-scenes"></div>
  <div class="tl-bin"></div>
  <div class="tl-empty">Open or create a project to see its storyboard.</div>
</div>
"""

TIMELINE_CSS = """
.tl-root { display: flex; flex-direction: column; gap: 12px; font-size: 14px; }
.tl-scene { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.tl-scene-head { display: flex; gap: 6px; align-items: center; margin-bottom: 6px; }
.tl-scene-head .tl-scene-label { font-weight: 600; white-space: nowrap; }
.tl-scene-head input { flex: 1; min-width: 120px; padding: 4px 6px; }
.tl-shots { display: flex; flex-wrap: wrap; gap: 8px; min-height: 60px; }
.tl-shots.tl-drop-target { outline: 2px dashed var(--color-accent); }
.tl-card { width: 200px; border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px;
  background: var(--background-fill-secondary); display: flex; flex-direction: column; gap: 4px; cursor: grab; }
.tl-card.tl-selected { outline: 2px solid var(--color-accent); }
.tl-card.tl-drop-before { box-shadow: -4px 0 0 0 var(--color-accent); }
.tl-card.tl-drop-after { box-shadow: 4px 0 0 0 var(--color-accent); }
.tl-card-head { display: flex; justify-content: space-between; align-items: center; gap: 4px; }
.tl-index { font-weight: 600; }
.tl-thumb { height: 105px; width: auto; max-width: 100%; aspect-ratio: 16 / 9; align-self: center;
  object-fit: contain; border-radius: 4px; background: #222; }
.tl-thumb-empty { display: flex; align-items: center; justify-content: center; color: #aaa; font-size: 12px; }
.tl-caption { width: 100%; min-height: 52px; resize: vertical; font: inherit; padding: 4px; box-sizing: border-box; }
.tl-caption.tl-unsaved { outline: 2px solid #c0392b; }
.tl-card.tl-busy { border-color: var(--color-accent); box-shadow: 0 0 0 1px var(--color-accent); }
.tl-busy-note { font-size: 12px; color: var(--color-accent); }
.tl-film { font-size: 13px; font-weight: 600; }
.tl-player { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.tl-screen { position: relative; width: 100%; max-width: 640px; aspect-ratio: 16 / 9; background: #000; }
.tl-screen video, .tl-card-gap { position: absolute; inset: 0; width: 100%; height: 100%; opacity: 0; }
.tl-card-gap { display: flex; align-items: center; justify-content: center; background: #777; color: #eee; }
.tl-meta { font-size: 12px; color: var(--body-text-color-subdued); }
.tl-drift { font-size: 12px; color: #b45309; }
.tl-limits { font-size: 12px; color: var(--body-text-color-subdued); font-style: italic; }
.tl-actions { display: flex; flex-wrap: wrap; gap: 2px; }
.tl-actions button, .tl-scene-head button, .tl-bin button { font-size: 12px; padding: 1px 6px; border-radius: 4px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary); cursor: pointer; }
.tl-bin { font-size: 12px; }
.tl-status { min-height: 1.2em; font-size: 13px; color: var(--body-text-color-subdued); }
.tl-status.tl-refused { color: #c0392b; }
.tl-bin-item { display: inline-flex; gap: 4px; align-items: center; margin-right: 10px; }
"""

# Delegated listeners on the root: cards come and go, the listeners stay. `trigger("edit", ...)` and
# `trigger("select", ...)` are the only two events; every payload carries ids, never positions in the DOM alone.
TIMELINE_JS = (Path(__file__).with_name("timeline.js")).read_text(encoding="utf-8")


def Timeline(  # noqa: N802 (reads as a component)
    value: dict[str, Any] | None = None, *, timeline_edit: Callable[[dict[str, Any]], dict[str, Any]], **kwargs: Any
) -> gr.HTML:
    """The storyboard timeline. Its value is `timeline_model(...)` (a dict) or None.

    `timeline_edit(payload) -> {"ok", "message", "model"}` applies one edit; the page calls it directly as a server
    function (no queue) and draws the model it returns. Events: `select` (selection, open a shot's takes) and
    `generate` (generate a scene, regenerate a shot: they also switch the job timer on).

    A plain `gr.HTML` (its pre/postprocess pass a dict through untouched), not a subclass: Gradio writes a `.pyi`
    stub next to the source file of every Component subclass it sees.
    """
    if timeline_edit.__name__ != "timeline_edit":
        raise ValueError("the edit function must be named timeline_edit (the page calls server.timeline_edit)")
    return gr.HTML(
        value=value,
        html_template=TIMELINE_HTML,
        css_template=TIMELINE_CSS,
        js_on_load=TIMELINE_JS,
        apply_default_css=False,
        server_functions=[timeline_edit],
        **kwargs,
    )


def structure_version(scenes: list[Any]) -> str:
    """A short digest of which shots sit where; an edit made against another version is refused as stale."""
    layout = [[scene.id, [shot.id for shot in scene.shots]] for scene in scenes]
    return hashlib.sha1(json.dumps(layout).encode()).hexdigest()[:12]


def running_times(scenes: list[Any], fps: int) -> tuple[dict[int, float], float]:
    """Seconds each scene and the whole film run, as the export cuts them: each shot's frames less its trims, less
    the frames a dissolve into a shot overlaps with the shot before (the film's first shot has none before it)."""
    from studio.export.film import transition_frames

    per_scene, total, first = {}, 0, True
    for scene in scenes:
        frames = 0
        for shot in scene.shots:
            frames += max(1, shot.num_frames - (shot.trim_in or 0) - (shot.trim_out or 0))
            if not first and shot.transition_type == "dissolve":
                frames -= transition_frames(shot.transition_seconds, fps)
            first = False
        per_scene[scene.id] = round(frames / fps, 2)
        total += frames
    return per_scene, round(total / fps, 2)


def busy_shots(services: Any, project_id: int, scenes: list[Any]) -> dict[int, dict[str, Any]]:
    """Shot id -> the queued or running generation making its take ({"job": id, "status": ...}): the card shows it."""
    from studio.services.jobs import GENERATION_KINDS

    shots_of = {scene.id: [shot.id for shot in scene.shots] for scene in scenes}
    busy: dict[int, dict[str, Any]] = {}
    pending = services.jobs.list_jobs(status="running", project_id=project_id)
    pending += services.jobs.list_jobs(status="queued", project_id=project_id)
    for job in pending:
        if job.kind not in GENERATION_KINDS:
            continue
        payload = job.payload or {}
        named = payload.get("target_shot_ids") or payload.get("shot_ids")
        if not named and payload.get("shot_id") is not None:
            named = [payload["shot_id"]]
        for shot_id in named or shots_of.get(payload.get("scene_id"), []):
            busy.setdefault(int(shot_id), {"job": job.id, "status": job.status})
    return busy


def timeline_model(
    services: Any,
    project_id: int | None,
    selected: list[int] | None = None,
    open_shot_id: int | None = None,
    scenes: list[Any] | None = None,
) -> dict[str, Any] | None:
    """The timeline's value: every live scene and shot of the project in film order, read from the services.

    `scenes` may pass a `list_scenes` result the caller just loaded (after its edit), saving a second load.
    Thumbnails are addressed by take id (`take_thumbnail_url`), so drawing needs no query per shot.
    """
    if project_id is None:
        return None
    project = services.projects.get(project_id)
    if scenes is None:
        scenes = services.storyboard.list_scenes(project_id)
    fps = max(1, int(project.fps))
    bin_view = services.storyboard.list_bin(project_id)
    drift = services.takes.chosen_take_drift(project_id)  # the film would show what the card no longer says
    limits = shot_notes(services, project_id, scenes)  # what the model cannot draw of what the caption asks
    bin_shots = list(getattr(bin_view, "shots", ()) or ())
    busy = busy_shots(services, project_id, scenes)
    videos = services.takes.chosen_take_videos(project_id)  # what "Play" plays
    scene_times, film_time = running_times(scenes, fps)
    return {
        "running_s": film_time,
        "project_id": project_id,
        "stamp": time.monotonic_ns(),
        "version": structure_version(scenes),
        "frame_aspect": f"{int(project.width)} / {int(project.height)}",  # card thumbnails take the film's shape
        "open_shot_id": open_shot_id,
        "selected": list(selected or []),
        "scenes": [
            {
                "id": scene.id,
                "caption": scene.caption,
                "running_s": scene_times[scene.id],
                "shots": [
                    {
                        "id": shot.id,
                        "scene_id": scene.id,
                        "caption": shot.caption,
                        "num_frames": shot.num_frames,
                        "seconds": round(shot.num_frames / fps, 2),
                        "characters": list(shot.character_names),
                        "shot_size": shot.shot_size,
                        "camera_move": shot.camera_move,
                        "transition": shot.transition_type,
                        "transition_seconds": shot.transition_seconds,
                        "take_count": shot.take_count,
                        "thumb": take_thumbnail_url(shot.chosen_take_id),
                        "drift": drift.get(shot.id),
                        "limits": " ".join(limits.get(shot.id, [])) or None,
                        "busy": busy.get(shot.id),
                        "video": asset_url(videos.get(shot.id)),
                        "trim_in_s": round((shot.trim_in or 0) / fps, 3),
                        "used_s": round(max(1, shot.num_frames - (shot.trim_in or 0) - (shot.trim_out or 0)) / fps, 3),
                    }
                    for shot in scene.shots
                ],
            }
            for scene in scenes
        ],
        "bin": [{"id": shot.id, "caption": shot.caption} for shot in bin_shots],
        "bin_scenes": [
            {"id": scene.id, "caption": scene.caption, "shot_count": len(scene.shots)}
            for scene in getattr(bin_view, "scenes", ()) or ()
        ],
    }
