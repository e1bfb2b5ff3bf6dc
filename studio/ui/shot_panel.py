"""The Storyboard tab's "Selected shot" panel: the open shot's fields (saved as far as they changed since the panel
showed them), its scene, regeneration with a new seed or the typed caption, and its takes (choose, bin, restore)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio.services import generations
from studio.services.storyboard import CAMERA_MOVES as SERVICE_CAMERA_MOVES
from studio.services.storyboard import SHOT_SIZES as SERVICE_SHOT_SIZES
from studio.ui import storyboard as edits
from studio.ui.common import Shared, guarded, jobs_for, require_project, said, scene_choices
from studio.ui.panels import ActionPanel, esc, takes_html
from studio.ui.timeline import Timeline, timeline_model

SHOT_SIZES = ["", *SERVICE_SHOT_SIZES]
CAMERA_MOVES = ["", *SERVICE_CAMERA_MOVES]
TRANSITIONS = ["cut", "dissolve", "fade"]
NO_SHOT_OPEN = "No shot open: click “Takes” on a card."

# What the takes panel's buttons do, as the status line then says it.
TAKE_ACTIONS = {
    "choose_take": "Take {number} chosen.",
    "delete_take": "Take {number} moved to the shot's take bin (Restore puts it back).",
    "restore_take": "Take {number} restored.",
}

# The shot panel's fields as `update_shot` takes them, and how a refusal names them.
FORM_FIELD_NAMES = {
    "caption": "caption",
    "characters": "characters",
    "num_frames": "frames",
    "shot_size": "shot size",
    "camera_move": "camera move",
    "transition": "transition",
    "transition_seconds": "transition seconds",
    "seed": "seed",
}


def shot_form(caption, characters, frames, size, camera, transition, transition_s, seed) -> dict[str, Any]:
    """The shot panel's values as `update_shot` fields (empty Frames: not sent)."""
    fields = {
        "caption": caption or "",
        "characters": [int(c) for c in characters or []],
        "shot_size": size or None,
        "camera_move": camera or None,
        "transition": transition or "cut",
        "transition_seconds": float(transition_s or 0.0),
        "seed": None if seed in (None, "") else int(seed),
    }
    if frames not in (None, ""):
        fields["num_frames"] = int(frames)
    return fields


def shot_form_of(shot: Any) -> dict[str, Any]:
    """A stored shot as the panel shows it, in `shot_form`'s terms."""
    return shot_form(
        shot.caption,
        list(shot.character_ids),
        shot.num_frames,
        shot.shot_size,
        shot.camera_move,
        shot.transition_type,
        shot.transition_seconds,
        shot.seed,
    )


def same_field(a: Any, b: Any) -> bool:
    """Equal as the panel means it: the characters of a shot are a set."""
    if isinstance(a, list) and isinstance(b, list):
        return sorted(a) == sorted(b)
    return a == b


def regenerate_caption(stored: str, loaded: str, typed: str | None) -> str | None:
    """The caption "Regenerate with this caption" saves before queueing, or None to keep the shot's own.

    The panel's box was filled when the panel opened: a caption edited on the card since then is the newer one and
    must not be put back by a box the film-maker did not touch. Typed in the panel while the card changed too: refused,
    as Save refuses it, rather than one of the two edits silently lost."""
    typed = typed or ""
    if typed == loaded or typed == stored:
        return None
    if stored != loaded:
        raise gr.Error(
            esc(
                "Not queued: the shot's caption changed elsewhere (on its card or in another tab) since this panel "
                "showed it. Your caption is still in the box: copy it, click “Takes” on the card to reload the "
                "shot, then regenerate again."
            ),
            print_exception=False,
        )
    return typed


@dataclass
class ShotPanel:
    shot_title: gr.Markdown
    shot_editor: gr.Column
    shot_caption: gr.Textbox
    shot_characters: gr.CheckboxGroup
    shot_frames: gr.Number
    shot_size: gr.Dropdown
    shot_camera: gr.Dropdown
    shot_transition: gr.Dropdown
    shot_transition_s: gr.Number
    shot_seed: gr.Number
    save_shot_button: gr.Button
    move_scene_pick: gr.Dropdown
    move_scene_button: gr.Button
    regen_seed_button: gr.Button
    regen_caption_button: gr.Button
    takes_panel: ActionPanel
    outputs: list[Any] = field(default_factory=list)  # what `shot_outputs` fills, in its order


def build_shot_panel(shared: Shared) -> ShotPanel:
    with gr.Accordion("Selected shot", open=True):
        shot_title = gr.Markdown(NO_SHOT_OPEN, elem_id="sl-shot-title")
        # shown once a card's "Takes" opens a shot (`shot_outputs`): with none open there is nothing to
        # edit, and an empty gr.Number shows 0, which read as the shot's own frames and seed
        with gr.Column(visible=False, elem_id="sl-shot-editor") as shot_editor:
            with gr.Row():
                shot_caption = gr.Textbox(label="Caption", scale=3, elem_id="sl-shot-caption")
                shot_characters = gr.CheckboxGroup(
                    label="Characters", choices=[], scale=2, elem_id="sl-shot-characters"
                )
            with gr.Row():
                shot_frames = gr.Number(label="Frames", precision=0, elem_id="sl-shot-frames")
                shot_size = gr.Dropdown(SHOT_SIZES, label="Shot size", allow_custom_value=True, elem_id="sl-shot-size")
                shot_camera = gr.Dropdown(
                    CAMERA_MOVES, label="Camera move", allow_custom_value=True, elem_id="sl-shot-camera"
                )
                shot_transition = gr.Dropdown(TRANSITIONS, label="Transition in", elem_id="sl-shot-transition")
                shot_transition_s = gr.Number(label="Transition seconds", elem_id="sl-shot-transition-s")
                shot_seed = gr.Number(
                    label="Seed (empty = random)", precision=0, placeholder="random", elem_id="sl-shot-seed"
                )
            with gr.Row():
                save_shot_button = gr.Button("Save shot", elem_id="sl-save-shot")
                move_scene_pick = gr.Dropdown(label="Move to scene", choices=[], elem_id="sl-move-scene")
                move_scene_button = gr.Button("Move", elem_id="sl-move-shot")
            with gr.Row():
                regen_seed_button = gr.Button("Regenerate (new seed)", elem_id="sl-regen-seed")
                regen_caption_button = gr.Button("Regenerate with this caption", elem_id="sl-regen-caption")
        takes_panel = ActionPanel(takes_html(None, []), elem_id="sl-takes")
    # the fields a shot fills, in the order both the panel and its outputs list them
    fields = (
        shot_title,
        shot_editor,
        shot_caption,
        shot_characters,
        shot_frames,
        shot_size,
        shot_camera,
        shot_transition,
        shot_transition_s,
        shot_seed,
    )
    panel = ShotPanel(
        *fields,
        save_shot_button,
        move_scene_pick,
        move_scene_button,
        regen_seed_button,
        regen_caption_button,
        takes_panel,
    )
    panel.outputs = [
        shared.open_shot_state,
        *fields,
        move_scene_pick,
        takes_panel,
        shared.shot_loaded_state,  # what the fields showed when loaded: Save sends only what changed since
    ]
    return panel


def shot_outputs(services: Any, project_id: int | None, shot_id: int | None):
    """The shot panel with `shot_id` open (None: closed), in `ShotPanel.outputs` order."""
    s = services
    if project_id is None or shot_id is None:
        return (
            None,
            NO_SHOT_OPEN,
            gr.update(visible=False),
            "",
            gr.update(value=[]),
            None,
            None,
            None,
            "cut",
            0.0,
            None,
            gr.update(),
            takes_html(None, []),
            None,
        )
    film = s.storyboard.film_shots(project_id)
    number = next((n for n, x in enumerate(film, 1) if x.id == shot_id), None)
    if number is None:  # binned or gone meanwhile: nothing left to edit
        return shot_outputs(s, project_id, None)
    shot = film[number - 1]
    takes = s.takes.list_takes(shot_id)
    return (
        shot_id,
        f"**Shot #{number}** ({len(takes)} take{'' if len(takes) == 1 else 's'})",  # numbered as its card
        gr.update(visible=True),
        shot.caption,
        gr.update(value=list(shot.character_ids)),
        shot.num_frames,
        shot.shot_size or "",
        shot.camera_move or "",
        shot.transition_type,
        shot.transition_seconds,
        shot.seed,
        gr.update(choices=scene_choices(s, project_id), value=shot.scene_id),
        takes_html(shot, takes, number, s.takes.list_takes(shot_id, in_bin=True)),
        shot_form_of(shot),
    )


def shot_panel_refresh(
    services: Any, panel: ShotPanel, project_id: int | None, shot_id: int | None, scene_pick: bool = False
):
    """After the storyboard changed around the open shot (a take added; with `scene_pick`, a card moved): its
    number, take count and takes, and its scene in "Move to scene", leaving the fields alone (the film-maker
    may be typing or picking there; the timer's refresh never resets a scene being picked). A shot gone to
    the bin closes the panel."""
    outputs = shot_outputs(services, project_id, shot_id)
    if outputs[0] is None:
        return outputs
    kept = [panel.shot_title, panel.takes_panel, *([panel.move_scene_pick] if scene_pick else [])]
    keep = {panel.outputs.index(component) for component in kept}
    return tuple(value if index in keep else gr.update() for index, value in enumerate(outputs))


def wire_shot_panel(
    services: Any, shared: Shared, panel: ShotPanel, timeline: Timeline, jobs_panel: ActionPanel
) -> None:
    """Save and move the open shot, regenerate it, and act on its takes."""
    s = services
    project_state, open_shot_state = shared.project_state, shared.open_shot_state
    selected_state, shot_loaded_state = shared.selected_state, shared.shot_loaded_state
    status, timer = shared.status, shared.timer
    shot_outputs_list = panel.outputs
    _jobs_for = functools.partial(jobs_for, s)

    @guarded
    def on_save_shot(project_id, shot_id, selected, loaded, *form):
        project_id = require_project(project_id)
        if shot_id is None:
            raise gr.Error("Open a shot first: click “Takes” on a card.", print_exception=False)
        fields = shot_form(*form)
        if all(shot.id != int(shot_id) for shot in s.storyboard.film_shots(project_id)):
            # deleted from its card while open here: close the panel instead of editing a shot in the bin
            return (
                timeline_model(s, project_id, selected, None),
                *shot_outputs(s, project_id, None),
                said("Not saved: that shot was deleted (it is in the bin); restore it to edit it."),
            )
        with edits.project_lock(project_id):
            # Only what was changed in the panel is saved: a field the film-maker did not touch here may have
            # been edited on the card since the panel showed it (its caption, most often), and must stay so.
            current = shot_form_of(s.storyboard.get_shot(int(shot_id)))
            loaded = loaded or current
            changed = {key: value for key, value in fields.items() if not same_field(value, loaded.get(key))}
            clashes = [
                key
                for key, value in changed.items()
                if not same_field(current.get(key), loaded.get(key)) and not same_field(current.get(key), value)
            ]
            if clashes:
                raise gr.Error(
                    esc(
                        f"Not saved: the shot's {', '.join(FORM_FIELD_NAMES[k] for k in clashes)} changed "
                        "elsewhere (on its card or in another tab) since this panel showed it. Your edits are "
                        "still here: copy what you need, click “Takes” on the card to reload it, then save again."
                    ),
                    print_exception=False,
                )
            if changed:
                s.storyboard.update_shot(int(shot_id), **changed)
        return (
            timeline_model(s, project_id, selected, shot_id),
            *shot_outputs(s, project_id, shot_id),
            said("Shot saved." if changed else "Nothing to save: the panel matches the shot."),
        )

    panel.save_shot_button.click(
        on_save_shot,
        [
            project_state,
            open_shot_state,
            selected_state,
            shot_loaded_state,
            panel.shot_caption,
            panel.shot_characters,
            panel.shot_frames,
            panel.shot_size,
            panel.shot_camera,
            panel.shot_transition,
            panel.shot_transition_s,
            panel.shot_seed,
        ],
        [timeline, *shot_outputs_list, status],
        concurrency_id="storyboard-edits",
    )

    @guarded
    def on_move_scene(project_id, shot_id, scene_id, selected):
        project_id = require_project(project_id)
        if shot_id is None or scene_id is None:
            raise gr.Error("Open a shot and pick the scene to move it to.", print_exception=False)
        with edits.project_lock(project_id):
            target = next(x for x in s.storyboard.list_scenes(project_id) if x.id == int(scene_id))
            s.storyboard.move_shot(int(shot_id), target.id, len(target.shots))
        return (
            timeline_model(s, project_id, selected, shot_id),
            *shot_panel_refresh(s, panel, project_id, int(shot_id), scene_pick=True),  # its new number
            said("Shot moved."),
        )

    panel.move_scene_button.click(
        on_move_scene,
        [project_state, open_shot_state, panel.move_scene_pick, selected_state],
        [timeline, *shot_outputs_list, status],
        concurrency_id="storyboard-edits",
    )

    @guarded
    def on_regenerate(project_id, shot_id, loaded, caption, use_caption: bool):
        project_id = require_project(project_id)
        if shot_id is None:
            raise gr.Error("Open a shot first: click “Takes” on a card.", print_exception=False)
        with edits.project_lock(project_id):
            stored = s.storyboard.get_shot(int(shot_id)).caption
            sent = regenerate_caption(stored, (loaded or {}).get("caption", stored), caption) if use_caption else None
            queued = generations.regenerate_shot(s, project_id, int(shot_id), caption=sent)
        message = edits.queued_message("Regeneration", [queued], services=s)
        message = message[:1].upper() + message[1:] + "."
        if not use_caption:  # whatever is typed in the box stays there, unsaved
            return gr.update(active=True), said(message), _jobs_for(project_id, True), gr.update(), gr.update()
        shown = s.storyboard.get_shot(int(shot_id)).caption
        return (
            gr.update(active=True),
            said(message),
            _jobs_for(project_id, True),
            shown,  # the caption the take is made from
            {**(loaded or {}), "caption": shown},
        )

    panel.regen_seed_button.click(
        functools.partial(on_regenerate, use_caption=False),
        [project_state, open_shot_state, shot_loaded_state, panel.shot_caption],
        [timer, status, jobs_panel, panel.shot_caption, shot_loaded_state],
        concurrency_id="storyboard-edits",
    )
    panel.regen_caption_button.click(
        functools.partial(on_regenerate, use_caption=True),
        [project_state, open_shot_state, shot_loaded_state, panel.shot_caption],
        [timer, status, jobs_panel, panel.shot_caption, shot_loaded_state],
        concurrency_id="storyboard-edits",
    )

    @guarded
    def on_take_action(project_id, shot_id, selected, evt: gr.EventData):
        data = evt._data or {}
        project_id = require_project(project_id)
        action = data.get("action")
        if action not in TAKE_ACTIONS or shot_id is None:
            raise gr.Error("Unknown action; reload the page.", print_exception=False)
        take = s.takes.get(int(data["id"]))
        if take.shot_id != int(shot_id):
            raise gr.Error("That take is not the open shot's; reload the page.", print_exception=False)
        if action == "choose_take":
            s.takes.choose_take(int(shot_id), take.id)
        elif action == "delete_take":
            s.takes.delete_take(take.id)
        else:
            s.takes.restore_take(take.id)
        return (
            timeline_model(s, project_id, selected, shot_id),
            *shot_outputs(s, project_id, shot_id),
            said(TAKE_ACTIONS[action].format(number=take.number)),
        )

    panel.takes_panel.action(
        on_take_action, [project_state, open_shot_state, selected_state], [timeline, *shot_outputs_list, status]
    )
