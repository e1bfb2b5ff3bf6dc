"""What opening a project changes on every tab (`project_outputs`, filling `project_outputs_list`), and the page's
address naming the open project (`remember_project`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.registry import get_preset, requirements
from studio.ui.common import Shared, latest_adapters, scene_choices, timer_runs
from studio.ui.panels import characters_html, esc, exports_html, jobs_html
from studio.ui.timeline import timeline_model

if TYPE_CHECKING:
    from studio.ui.board_tab import BoardTab
    from studio.ui.characters_tab import CharactersTab
    from studio.ui.export_tab import ExportTab
    from studio.ui.jobs_panel import JobsPanel
    from studio.ui.projects_tab import ProjectsTab

# The open project goes into the address (`?project=<id>`, what `on_load` reads), so a reload, a bookmark or a
# restored tab reopens it with its jobs instead of "No project open"; no project open: the address loses it.
REMEMBER_PROJECT_JS = """(projectId) => {
    const url = new URL(window.location.href);
    if (projectId) url.searchParams.set('project', projectId); else url.searchParams.delete('project');
    if (url.href !== window.location.href) window.history.replaceState(window.history.state, '', url.href);
    return [];
}"""


def remember_project(project_state: gr.State) -> None:
    """Keep the page's address naming the open project (`REMEMBER_PROJECT_JS`), through a hidden box: a state's
    value never reaches the browser."""
    relay = gr.Textbox(visible="hidden", elem_id="sl-project-address")
    project_state.change(lambda project_id: "" if project_id is None else str(project_id), project_state, relay)
    relay.change(None, relay, None, js=REMEMBER_PROJECT_JS)


def _preset_text(name: str) -> str:
    try:
        preset = get_preset(name)
    except Exception:
        return ""
    return (
        f"**{esc(preset.name)}**: {esc(preset.description)}  \nDefaults: {preset.width}×{preset.height}, "
        f"{preset.fps} fps, {preset.num_inference_steps} steps, guidance {preset.guidance_scale}, "
        f"shots of {preset.min_frames}–{preset.max_frames} frames (new shot: {preset.default_frames})  \n"
        f"{esc(requirements(preset))}"
    )


def project_choices(services: Any, current: int | None = None):
    """The project picker (live projects, `current` picked) and the bin's picker."""
    s = services
    live = s.projects.list()
    binned = [p for p in s.projects.list(include_binned=True) if p.in_bin]
    pick = gr.update(choices=[(p.name, p.id) for p in live], value=current)
    bin_update = gr.update(choices=[(p.name, p.id) for p in binned], value=None)
    return pick, bin_update


def project_outputs(services: Any, project_id: int | None):
    """Everything that depends on which project is open, in `project_outputs_list` order."""
    s = services
    pick, bin_update = project_choices(s, project_id)
    if project_id is None:
        empty = gr.update(value=None)
        return (
            None,
            "No project open",
            pick,
            bin_update,
            empty,
            empty,
            empty,
            empty,
            empty,
            empty,
            empty,
            "",
            None,
            [],
            None,
            characters_html([], {}),
            "",
            jobs_html([]),
            gr.update(choices=[]),
            gr.update(choices=[]),
            gr.update(active=False),
        )
    project = s.projects.get(project_id)
    chars = s.characters.list(project_id)
    return (
        project_id,
        f"**Project:** {esc(project.name)} ({esc(project.preset)})",
        pick,
        bin_update,
        project.preset,
        project.width,
        project.height,
        project.fps,
        project.steps,
        project.guidance,
        project.negative_prompt,
        _preset_text(project.preset),
        timeline_model(s, project_id),
        [],
        None,
        characters_html(chars, latest_adapters(s, chars)),
        exports_html(s.exports.list(project_id), project_name=project.name),
        jobs_html(s.jobs.list_jobs(project_id=project_id)[:20]),
        gr.update(choices=[(c.name, c.id) for c in chars], value=[]),
        gr.update(choices=scene_choices(s, project_id)),
        gr.update(active=timer_runs(project_id)),
    )


def project_outputs_list(
    shared: Shared,
    projects: ProjectsTab,
    characters: CharactersTab,
    board: BoardTab,
    export: ExportTab,
    jobs: JobsPanel,
) -> list[Any]:
    """The components `project_outputs` fills, across every tab, in its order."""
    return [
        shared.project_state,
        shared.project_title,
        projects.project_pick,
        projects.bin_pick,
        projects.set_preset,
        projects.set_width,
        projects.set_height,
        projects.set_fps,
        projects.set_steps,
        projects.set_guidance,
        projects.set_negative,
        projects.preset_info,
        board.timeline,
        shared.selected_state,
        shared.open_shot_state,
        characters.characters_panel,
        export.exports_panel,
        jobs.jobs_panel,
        board.shot.shot_characters,
        board.shot.move_scene_pick,
        shared.timer,
    ]
