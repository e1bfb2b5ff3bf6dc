"""The Storyboard tab: new scenes, "Generate selected shots", the timeline of scenes and shot cards (whose edits
`studio.ui.storyboard` applies) and, below it, the selected shot's panel (`studio.ui.shot_panel`)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.services import generations
from studio.services.errors import ServiceError
from studio.ui import storyboard as edits
from studio.ui.common import Shared, guarded, jobs_for, require_project, said, scene_choices, timer_runs
from studio.ui.panels import ActionPanel, esc
from studio.ui.shot_panel import ShotPanel, build_shot_panel, shot_outputs, shot_panel_refresh, wire_shot_panel
from studio.ui.timeline import Timeline, timeline_model

logger = logging.getLogger(__name__)


@dataclass
class BoardTab:
    scene_caption_new: gr.Textbox
    add_scene_button: gr.Button
    generate_selected_button: gr.Button
    timeline: Timeline
    shot: ShotPanel


def build_board_tab(services: Any, shared: Shared) -> BoardTab:
    def timeline_edit(payload: dict) -> dict:
        """The timeline's server function: apply one edit, answer with the storyboard as it now is."""
        payload = payload if isinstance(payload, dict) else {}
        project_id = payload.get("project_id")
        project_id = int(project_id) if isinstance(project_id, int | float) else None
        open_shot = payload.get("open_shot_id")
        open_shot = int(open_shot) if isinstance(open_shot, int | float) else None
        value, message = timeline_action(services, project_id, _ids(payload.get("selected")), open_shot, payload)
        return {"ok": not message.startswith(("Refused", "Something")), "message": message, "model": value}

    with gr.Tab("Storyboard", id="storyboard"):
        with gr.Row():
            scene_caption_new = gr.Textbox(label="New scene caption", scale=4, elem_id="sl-new-scene-caption")
            add_scene_button = gr.Button("Add scene", scale=1, elem_id="sl-add-scene")
            generate_selected_button = gr.Button(
                "Generate selected shots", variant="primary", scale=1, elem_id="sl-generate-selected"
            )
        timeline = Timeline(None, timeline_edit=timeline_edit, elem_id="sl-timeline")
        shot = build_shot_panel(shared)
    return BoardTab(scene_caption_new, add_scene_button, generate_selected_button, timeline, shot)


def timeline_action(services: Any, project_id, selected, open_shot, payload: dict) -> tuple[Any, str]:
    """One timeline action. A refusal shows why and redraws the timeline from the services."""
    s = services
    scenes = None
    try:
        message, scenes = edits.apply_edit(s, project_id, payload)
    except ServiceError as error:  # ConflictError included: a stale page gets the current storyboard
        message = f"Refused: {error}"
    except Exception as error:
        logger.exception("timeline edit failed")
        message = f"Something went wrong ({type(error).__name__}); the server log has details."
    if project_id is None:
        return None, esc(message)
    return timeline_model(s, project_id, selected, open_shot, scenes=scenes), esc(message)


def _ids(values: Any) -> list[int]:
    return [int(v) for v in values or [] if isinstance(v, int | float | str) and str(v).lstrip("-").isdigit()]


def wire_board(services: Any, shared: Shared, tab: BoardTab, jobs_panel: ActionPanel) -> None:
    """Timeline actions and selection, new scenes, "Generate selected shots", then the shot panel's events."""
    s = services
    project_state, selected_state, open_shot_state = (
        shared.project_state,
        shared.selected_state,
        shared.open_shot_state,
    )
    status, timer, timeline, panel = shared.status, shared.timer, tab.timeline, tab.shot
    shot_outputs_list = panel.outputs
    apply_timeline_action = functools.partial(timeline_action, s)
    _jobs_for = functools.partial(jobs_for, s)

    def on_generate(project_id, selected, open_shot, evt: gr.EventData):
        value, message = apply_timeline_action(project_id, selected, open_shot, evt._data or {})
        return value, said(message), gr.update(active=timer_runs(project_id)), _jobs_for(project_id, True)

    timeline.generate(
        on_generate,
        [project_state, selected_state, open_shot_state],
        [timeline, status, timer, jobs_panel],
        trigger_mode="multiple",
        concurrency_limit=1,
        concurrency_id="storyboard-edits",
        show_progress="hidden",
    )

    @guarded
    def on_select(project_id, open_shot, evt: gr.EventData):
        data = evt._data or {}
        selected = [int(i) for i in data.get("selected") or []]
        shot_id = data.get("shot_id")
        if shot_id is None and data.get("refresh_open") and open_shot is not None:  # after a timeline edit
            return (selected, *shot_panel_refresh(s, panel, project_id, int(open_shot), scene_pick=True))
        if shot_id is None:
            return (selected, *[gr.update() for _ in shot_outputs_list])
        return (selected, *shot_outputs(s, project_id, int(shot_id)))

    timeline.select(
        on_select,
        [project_state, open_shot_state],
        [selected_state, *shot_outputs_list],
        trigger_mode="multiple",
        concurrency_limit=1,
        concurrency_id="storyboard-edits",
        show_progress="hidden",
    )

    @guarded
    def on_add_scene(project_id, caption, selected):
        project_id = require_project(project_id)
        with edits.project_lock(project_id):
            scene = s.storyboard.add_scene(project_id, caption=caption or "")
            s.storyboard.add_shot(scene.id, generations.NEW_SHOT_CAPTION)
        return timeline_model(s, project_id, selected), "", gr.update(choices=scene_choices(s, project_id))

    tab.add_scene_button.click(
        on_add_scene,
        [project_state, tab.scene_caption_new, selected_state],
        [timeline, tab.scene_caption_new, panel.move_scene_pick],
        concurrency_id="storyboard-edits",
    )

    @guarded
    def on_generate_selected(project_id, selected):
        project_id = require_project(project_id)
        message = edits.queued_message(
            "Generation", generations.generate_selected(s, project_id, selected), services=s
        )
        message = message[:1].upper() + message[1:] + "."
        return gr.update(active=True), said(message), _jobs_for(project_id, True)

    tab.generate_selected_button.click(
        on_generate_selected, [project_state, selected_state], [timer, status, jobs_panel]
    )

    wire_shot_panel(s, shared, panel, timeline, jobs_panel)
