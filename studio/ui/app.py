"""The studio's web UI (Gradio 6). `build_app(services)` builds the page; `launch_studio(services)` serves it safely.

The UI only calls services: every handler reads the current state from them and applies one service call per user
action; nothing about the storyboard is kept in `gr.State` (only the open project id, the shot whose takes are shown
and the selected shot ids of this browser tab). Service refusals reach the page as readable messages (toasts that
leave the page as it was, or the status line), never as stack traces; the page stays usable.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr

from pipelines.registry import PRESETS, get_preset, requirements
from studio.services import speed_form as speed
from studio.ui.board_tab import build_board_tab, wire_board
from studio.ui.character_view import character_outputs
from studio.ui.characters_tab import build_characters_tab, wire_characters
from studio.ui.common import (
    _file_path,
    _polls,
    _require_project,
    build_shared,
    guarded,
    latest_adapters,
    said,
    scene_choices,
)
from studio.ui.export_tab import build_export_tab, wire_export
from studio.ui.panels import (
    PANEL_CSS,
    ActionPanel,
    characters_html,
    esc,
    exports_html,
    file_stem,
    jobs_html,
    jobs_signature,
)
from studio.ui.security import UPLOAD_CACHE_CLEANUP_S, security_launch_kwargs
from studio.ui.shot_panel import shot_panel_refresh
from studio.ui.timeline import timeline_model

logger = logging.getLogger(__name__)

PAGE_CSS = (
    PANEL_CSS
    + """
#sl-status { min-height: 1.5em; }
"""
)


class StudioBlocks(gr.Blocks):
    """`gr.Blocks` whose `launch()` applies the studio's security defaults unless told otherwise (docs/ARCHITECTURE.md,
    "Security defaults")."""

    studio_services: Any = None

    def launch(self, **kwargs: Any):  # type: ignore[override]
        if self.studio_services is not None:
            defaults = security_launch_kwargs(self.studio_services)
            if "share" in kwargs and kwargs["share"]:
                raise ValueError("the studio never opens a share link; expose it with --host and --auth instead")
            for key, value in defaults.items():
                kwargs.setdefault(key, value)
            kwargs.setdefault("ssr_mode", False)
            kwargs.setdefault("css", PAGE_CSS)
            kwargs.setdefault("favicon_path", None)
            if self.delete_cache is None:
                self.delete_cache = UPLOAD_CACHE_CLEANUP_S
        return super().launch(**kwargs)


def launch_studio(services: Any, **kwargs: Any):
    """Build and serve the studio on the settings' host and port (blocks unless prevent_thread_lock=True)."""
    app = build_app(services)
    return app.launch(**kwargs)


# The open project goes into the address (`?project=<id>`, what `on_load` reads), so a reload, a bookmark or a
# restored tab reopens it with its jobs instead of "No project open"; no project open: the address loses it.
REMEMBER_PROJECT_JS = """(projectId) => {
    const url = new URL(window.location.href);
    if (projectId) url.searchParams.set('project', projectId); else url.searchParams.delete('project');
    if (url.href !== window.location.href) window.history.replaceState(window.history.state, '', url.href);
    return [];
}"""


def preview_frames_info(settings: Any) -> str:
    """What "Show preview frames" will show: a worker sends a preview only every `preview_every` steps, and none at
    all when that is 0 (the default), which must be said where the box is."""
    every = int(getattr(settings, "preview_every", 0) or 0)
    if every <= 0:
        return (
            "The worker sends no preview frames (STUDIO_PREVIEW_EVERY / --preview-every is 0): set it to N to see "
            "the shot every N denoising steps."
        )
    return f"A preview of the shot every {every} denoising steps while a generation runs."


def ended_jobs_message(jobs: list[Any], watched: list[int]) -> tuple[str, list[str]]:
    """What the status line says of the jobs in `watched` (unfinished at the last look) that have ended since, and the
    failures to show as toasts too; ("", []) when none has."""
    from studio.ui.panels import JOB_LABELS

    ended = [job for job in jobs if job.id in watched and job.is_finished]
    parts, failures = [], []
    for job in sorted(ended, key=lambda j: j.id):
        label = f"{JOB_LABELS.get(job.kind, job.kind)} (job {job.id})"
        if job.status == "failed":
            failures.append(f"{label} failed: {job.error or job.message}")
            parts.append(failures[-1])
        else:
            parts.append(f"{label} {'done' if job.status == 'done' else job.status}")
    return ("; ".join(parts) + "." if parts else ""), failures


def watch_jobs(services: Any, timer: gr.Timer, project_state: gr.State, status: gr.Markdown) -> None:
    """The status line follows the jobs it announced: "Export queued (job 12)" is replaced when the job ends by
    what became of it, and a failure is a toast too, so a failed job never leaves "queued" standing on the page."""
    watched_state = gr.State(None)  # ids of the open project's unfinished jobs at the last tick

    def on_jobs_ended(project_id, watched):
        if project_id is None:
            return gr.skip(), None
        jobs = services.jobs.list_jobs(project_id=int(project_id))[:50]
        pending = sorted(job.id for job in jobs if not job.is_finished)
        message, failures = ended_jobs_message(jobs, watched or [])
        for failure in failures:
            gr.Warning(esc(failure), title="Job failed")
        if not message:
            return gr.skip(), (pending if pending != watched else gr.skip())
        return said(esc(message)), pending

    timer.tick(
        on_jobs_ended,
        [project_state, watched_state],
        [status, watched_state],
        concurrency_id="job-endings",
        concurrency_limit=1,
        trigger_mode="once",
        show_progress="hidden",
    )


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


def build_app(services: Any) -> gr.Blocks:
    """The whole studio page: Projects, Characters, Storyboard, Export tabs and the job queue."""
    s = services
    with StudioBlocks(title="Shotline studio", analytics_enabled=False) as app:
        app.studio_services = services
        shared = build_shared()
        project_state, selected_state, open_shot_state = (
            shared.project_state,
            shared.selected_state,
            shared.open_shot_state,
        )
        character_state, jobs_seen_state = shared.character_state, shared.jobs_seen_state
        project_title, status, timer = shared.project_title, shared.status, shared.timer

        with gr.Tabs():
            # ---------------------------------------------------------------- Projects
            with gr.Tab("Projects", id="projects"):
                with gr.Row():
                    project_pick = gr.Dropdown(
                        label="Project", choices=[], interactive=True, elem_id="sl-project-pick"
                    )
                    open_button = gr.Button("Open", elem_id="sl-open-project")
                with gr.Row():
                    new_name = gr.Textbox(label="New project name", elem_id="sl-new-project-name")
                    new_preset = gr.Dropdown(
                        label="Model preset",
                        choices=list(PRESETS),
                        value=s.settings.model_preset,
                        elem_id="sl-new-project-preset",
                    )
                    create_button = gr.Button("Create project", variant="primary", elem_id="sl-create-project")
                with gr.Accordion("Rename, delete, restore", open=False):
                    with gr.Row():
                        rename_box = gr.Textbox(label="New name", elem_id="sl-rename-box")
                        rename_button = gr.Button("Rename", elem_id="sl-rename-project")
                        delete_project_button = gr.Button(
                            "Delete (to bin)", variant="stop", elem_id="sl-delete-project"
                        )
                    with gr.Row():
                        bin_pick = gr.Dropdown(label="Projects in the bin", choices=[], elem_id="sl-project-bin")
                        restore_project_button = gr.Button("Restore", elem_id="sl-restore-project")
                gr.Markdown("### Settings")
                preset_info = gr.Markdown(_preset_text(s.settings.model_preset), elem_id="sl-preset-info")
                with gr.Row():
                    set_preset = gr.Dropdown(label="Preset", choices=list(PRESETS), elem_id="sl-set-preset")
                    set_width = gr.Number(label="Width", precision=0, elem_id="sl-set-width")
                    set_height = gr.Number(label="Height", precision=0, elem_id="sl-set-height")
                    set_fps = gr.Number(label="FPS", precision=0, elem_id="sl-set-fps")
                    set_steps = gr.Number(label="Steps", precision=0, elem_id="sl-set-steps")
                    set_guidance = gr.Number(label="Guidance", elem_id="sl-set-guidance")
                set_negative = gr.Textbox(label="Negative prompt", elem_id="sl-set-negative")
                save_settings_button = gr.Button("Save settings", elem_id="sl-save-settings")
                with gr.Accordion("Speed and memory", open=False, elem_id="sl-speed"):
                    gr.Markdown(speed.SPEED_HELP)
                    with gr.Row():
                        speed_cache = gr.Dropdown(
                            label="Step cache", choices=speed.STEP_CACHE_CHOICES, value="off", elem_id="sl-speed-cache"
                        )
                        speed_threshold = gr.Number(label="Cache threshold", elem_id="sl-speed-threshold")
                        speed_interval = gr.Number(label="Taylorseer every N steps", precision=0, elem_id="sl-speed-n")
                        speed_backend = gr.Dropdown(
                            label="Attention", choices=speed.ATTENTION_CHOICES, value="native", elem_id="sl-speed-attn"
                        )
                        speed_vram = gr.Dropdown(
                            label="VRAM profile", choices=speed.VRAM_CHOICES, value="default", elem_id="sl-speed-vram"
                        )
                        speed_compile = gr.Checkbox(label="Compile blocks", elem_id="sl-speed-compile")
                        speed_accelerator = gr.Textbox(label="Accelerator LoRA", elem_id="sl-speed-accelerator")
                    save_speed_button = gr.Button("Save speed settings", elem_id="sl-save-speed")
                gr.Markdown("### Storyboard file")
                with gr.Row():
                    import_file = gr.File(
                        label="Storyboard YAML", file_types=[".yaml", ".yml"], elem_id="sl-import-file"
                    )
                    import_refs = gr.File(
                        label="Reference images it names (optional)",
                        file_count="multiple",
                        file_types=["image"],
                        elem_id="sl-import-refs",
                    )
                with gr.Row():
                    import_button = gr.Button("Import storyboard", elem_id="sl-import")
                    export_sb_button = gr.Button("Export storyboard file", elem_id="sl-export-storyboard")
                storyboard_download = gr.File(label="Storyboard file", interactive=False, elem_id="sl-storyboard-file")

            characters = build_characters_tab()

            # ---------------------------------------------------------------- Storyboard
            board = build_board_tab(s, shared)
            export = build_export_tab()

        with gr.Accordion("Jobs", open=True):
            show_preview = gr.Checkbox(
                label="Show preview frames",
                value=True,
                info=preview_frames_info(s.settings),
                elem_id="sl-show-preview",
            )
            jobs_panel = ActionPanel(jobs_html([]), elem_id="sl-jobs")

        # ==================================================================== handlers
        def project_choices(current: int | None = None):
            live = s.projects.list()
            binned = [p for p in s.projects.list(include_binned=True) if p.in_bin]
            pick = gr.update(choices=[(p.name, p.id) for p in live], value=current)
            bin_update = gr.update(choices=[(p.name, p.id) for p in binned], value=None)
            return pick, bin_update

        def project_outputs(project_id: int | None):
            """Everything that depends on which project is open."""
            pick, bin_update = project_choices(project_id)
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
                gr.update(active=_polls(project_id)),
            )

        project_outputs_list = [
            project_state,
            project_title,
            project_pick,
            bin_pick,
            set_preset,
            set_width,
            set_height,
            set_fps,
            set_steps,
            set_guidance,
            set_negative,
            preset_info,
            board.timeline,
            selected_state,
            open_shot_state,
            characters.characters_panel,
            export.exports_panel,
            jobs_panel,
            board.shot.shot_characters,
            board.shot.move_scene_pick,
            timer,
        ]

        @guarded
        def on_load(request: gr.Request):
            """Open `?project=<id or name>` when the address names one, else the only project if there is one."""
            wanted = (request.query_params.get("project") if request is not None else None) or ""
            if wanted:
                return (*project_outputs(s.projects.find(wanted).id), "")
            projects = s.projects.list()
            return (*project_outputs(projects[0].id if len(projects) == 1 else None), "")

        @guarded
        def on_open(project_id):
            if project_id is None:
                raise gr.Error("Pick a project to open.", print_exception=False)
            return (*project_outputs(int(project_id)), "")  # the last line was about the project left

        @guarded
        def on_create(name, preset):
            project = s.projects.create(name, preset=preset or None)
            s.storyboard.add_scene(project.id, caption="")
            return (*project_outputs(project.id), said(f"Project {esc(project.name)} created."), "")

        @guarded
        def on_rename(project_id, name):
            project = s.projects.rename(_require_project(project_id), name)
            return (*project_outputs(project_id), said(f"Renamed to {esc(project.name)}."), "")

        @guarded
        def on_delete_project(project_id):
            project = s.projects.delete(_require_project(project_id))
            message = f"{esc(project.name)} moved to the bin: “Rename, delete, restore” brings it back."
            return (*project_outputs(None), said(message))

        @guarded
        def on_restore_project(project_id):
            if project_id is None:
                raise gr.Error("Pick a project from the bin.", print_exception=False)
            project = s.projects.restore(int(project_id))
            return (*project_outputs(int(project_id)), said(f"{esc(project.name)} restored."))

        @guarded
        def on_save_settings(project_id, preset, width, height, fps, steps, guidance, negative):
            project_id = _require_project(project_id)
            s.projects.update_settings(
                project_id,
                preset=preset,
                width=width,
                height=height,
                fps=fps,
                steps=steps,
                guidance=guidance,
                negative_prompt=negative or "",
            )
            return (*project_outputs(project_id)[:-1], gr.update(), said("Settings saved."))

        app.load(on_load, None, [*project_outputs_list, status])
        remember_project(project_state)
        open_button.click(on_open, project_pick, [*project_outputs_list, status])
        project_pick.input(on_open, project_pick, [*project_outputs_list, status])
        # a name field empties once its project exists, as a film-maker expects of a "new ..." box
        create_button.click(on_create, [new_name, new_preset], [*project_outputs_list, status, new_name])
        rename_button.click(on_rename, [project_state, rename_box], [*project_outputs_list, status, rename_box])
        delete_project_button.click(on_delete_project, project_state, [*project_outputs_list, status])
        restore_project_button.click(on_restore_project, bin_pick, [*project_outputs_list, status])
        save_settings_button.click(
            on_save_settings,
            [project_state, set_preset, set_width, set_height, set_fps, set_steps, set_guidance, set_negative],
            [*project_outputs_list, status],
        )
        speed_fields = [
            *(speed_cache, speed_threshold, speed_interval, speed_backend, speed_vram, speed_compile),
            speed_accelerator,
        ]

        @guarded
        def on_speed_fields(project_id):
            if project_id is None:
                return speed.form_values({})
            return speed.form_values(s.projects.get(int(project_id)).acceleration)

        @guarded
        def on_save_speed(project_id, *values):
            project_id = _require_project(project_id)
            kept = s.projects.get(project_id).acceleration
            saved = s.projects.update_settings(project_id, acceleration=speed.settings_from_form(*values, keep=kept))
            # an accelerator set or cleared brings its step count and guidance: show them
            return said("Speed settings saved."), saved.steps, saved.guidance

        project_state.change(on_speed_fields, project_state, speed_fields)
        save_speed_button.click(on_save_speed, [project_state, *speed_fields], [status, set_steps, set_guidance])
        set_preset.input(_preset_text, set_preset, preset_info)
        new_preset.input(_preset_text, new_preset, preset_info)

        # ---- storyboard file
        @guarded
        def on_import(project_id, yaml_file, ref_files):
            from studio.storyboard_file import (
                StoryboardLimits,
                held_reference_images,
                import_storyboard,
                parse_storyboard,
            )

            if yaml_file is None:
                raise gr.Error("Choose a storyboard YAML file first.", print_exception=False)
            path = _file_path(yaml_file)
            text = path.read_text(encoding="utf-8")
            doc = parse_storyboard(text, source=path.name, limits=StoryboardLimits.from_settings(s.settings))
            # The file names its pictures by path; here they come as uploads (matched by file name), or are the ones
            # the project already holds under those paths (re-importing a file exported from here).
            uploaded = {_file_path(item).name: _file_path(item) for item in ref_files or []}
            held = held_reference_images(s, doc)
            named = {ref: PurePosixPath(ref.replace("\\", "/")) for c in doc.characters for ref in c.references}
            pictures: dict[str, bytes] = {}
            for ref, relative in named.items():
                upload = uploaded.get(relative.name)
                data = upload.read_bytes() if upload is not None else held.get(ref)
                if data is not None:
                    pictures[ref] = data
            missing = sorted({relative.name for ref, relative in named.items() if ref not in pictures})
            if missing:
                raise gr.Error(
                    esc(
                        f"{path.name} names reference pictures that were not added: {', '.join(missing)}. Add them "
                        "under “Reference images it names” and import again (nothing was imported)."
                    ),
                    print_exception=False,
                )
            with tempfile.TemporaryDirectory(prefix="shotline-import-") as base:
                base_dir = Path(base)
                for ref, data in pictures.items():
                    relative = named[ref]
                    if relative.is_absolute() or ".." in relative.parts or ":" in ref:
                        continue  # never written outside the folder; the import refuses the path, naming its line
                    target = base_dir / Path(*relative.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                report = import_storyboard(s, doc, base_dir)
            project_id = getattr(report, "project_id", None) or project_id
            return (*project_outputs(project_id), said(f"Imported: {esc(_report_text(report))}"), None, None)

        @guarded
        def on_export_storyboard(project_id):
            from studio.storyboard_file import export_storyboard

            project_id = _require_project(project_id)
            text = export_storyboard(s, project_id)
            project = s.projects.get(project_id)
            folder = Path(tempfile.mkdtemp(prefix="shotline-storyboard-"))
            path = folder / f"{file_stem(project.name, 'storyboard')}.yaml"
            path.write_text(text, encoding="utf-8")
            return str(path)

        import_button.click(
            on_import,
            [project_state, import_file, import_refs],
            [*project_outputs_list, status, import_file, import_refs],
        )
        export_sb_button.click(on_export_storyboard, project_state, storyboard_download)

        wire_characters(s, shared, characters, board.shot.shot_characters)

        wire_board(s, shared, board, jobs_panel)

        wire_export(s, shared, export, jobs_panel, project_outputs, project_outputs_list)

        # ---- jobs and the timer
        def _jobs_for(project_id: int | None, preview: bool) -> str:
            if project_id is None:
                return jobs_html([])
            return jobs_html(s.jobs.list_jobs(project_id=project_id)[:20], show_preview=preview)

        @guarded
        def on_job_action(project_id, preview, evt: gr.EventData):
            data = evt._data or {}
            if data.get("action") != "cancel_job":
                raise gr.Error("Unknown action; reload the page.", print_exception=False)
            s.jobs.request_cancel(int(data["id"]))
            return _jobs_for(project_id, preview), said("Cancel requested.")

        jobs_panel.action(on_job_action, [project_state, show_preview], [jobs_panel, status])

        def on_tick(project_id, selected, open_shot, character_id, preview, seen):
            """Polls the job service for the open project's jobs, wherever they were queued. While jobs are queued
            or running: progress, elapsed time, new takes and exports, adapter status and the live loss curve; once
            more when the last one ends (its result); an idle tick with nothing new sends nothing."""
            closed_panel = [gr.update()] * len(board.shot.outputs)
            nothing = (gr.update(), gr.update(), gr.update(), *closed_panel, *[gr.update()] * 5, seen)
            try:
                if project_id is None:
                    return (gr.update(active=False), *nothing[1:])
                jobs = s.jobs.list_jobs(project_id=project_id)
                signature = jobs_signature(jobs)
                active = any(not job.is_finished for job in jobs)
                if not active and signature == seen:
                    return nothing
                character = character_outputs(s, project_id, character_id) if character_id is not None else None
                changed = signature != seen
                chars = s.characters.list(project_id) if changed else []
                return (
                    gr.update(),
                    jobs_html(jobs[:20], show_preview=preview),
                    timeline_model(s, project_id, selected, open_shot),
                    *(
                        shot_panel_refresh(s, board.shot, project_id, open_shot)
                        if open_shot is not None
                        else closed_panel
                    ),
                    exports_html(s.exports.list(project_id), project_name=s.projects.get(project_id).name),
                    character[8] if character else gr.update(),
                    character[10] if character and signature != seen else gr.update(),
                    # a finished training changes the card's "lora v2"; a finished take adds identity scores
                    characters_html(chars, latest_adapters(s, chars)) if changed else gr.update(),
                    character[11] if character and changed else gr.update(),
                    signature,
                )
            except Exception:
                logger.exception("timer refresh failed")
                return nothing

        watch_jobs(s, timer, project_state, status)

        timer.tick(
            on_tick,
            [project_state, selected_state, open_shot_state, character_state, show_preview, jobs_seen_state],
            [
                timer,
                jobs_panel,
                board.timeline,
                *board.shot.outputs,
                export.exports_panel,
                characters.adapter_status,
                characters.loss_plot,
                characters.characters_panel,
                characters.identity_table,
                jobs_seen_state,
            ],
            concurrency_id="ticks",
            concurrency_limit=1,
            trigger_mode="once",  # a slow refresh drops the ticks that come meanwhile instead of queueing them
            show_progress="hidden",
        )
    return app


def _report_text(report: Any) -> str:
    if hasattr(report, "summary"):
        summary = report.summary
        return summary() if callable(summary) else str(summary)
    return str(report)
