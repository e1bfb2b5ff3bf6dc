"""The Projects tab: open, create, rename, bin and restore projects; the project's settings and its speed and memory
settings; the storyboard file (YAML) imported, with the reference pictures it names, or exported."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import gradio as gr

from pipelines.registry import PRESETS
from studio.services import speed_form as speed
from studio.ui.common import Shared, guarded, require_project, said, upload_path
from studio.ui.panels import esc, file_stem
from studio.ui.project_view import _preset_text, project_outputs, remember_project


@dataclass
class ProjectsTab:
    project_pick: gr.Dropdown
    open_button: gr.Button
    new_name: gr.Textbox
    new_preset: gr.Dropdown
    create_button: gr.Button
    rename_box: gr.Textbox
    rename_button: gr.Button
    delete_project_button: gr.Button
    bin_pick: gr.Dropdown
    restore_project_button: gr.Button
    preset_info: gr.Markdown
    set_preset: gr.Dropdown
    set_width: gr.Number
    set_height: gr.Number
    set_fps: gr.Number
    set_steps: gr.Number
    set_guidance: gr.Number
    set_negative: gr.Textbox
    save_settings_button: gr.Button
    speed_fields: list[Any]  # the "Speed and memory" fields, in `speed.form_values` order
    save_speed_button: gr.Button
    import_file: gr.File
    import_refs: gr.File
    import_button: gr.Button
    export_sb_button: gr.Button
    storyboard_download: gr.File


def build_projects_tab(services: Any) -> ProjectsTab:
    with gr.Tab("Projects", id="projects"):
        with gr.Row():
            project_pick = gr.Dropdown(label="Project", choices=[], interactive=True, elem_id="sl-project-pick")
            open_button = gr.Button("Open", elem_id="sl-open-project")
        with gr.Row():
            new_name = gr.Textbox(label="New project name", elem_id="sl-new-project-name")
            new_preset = gr.Dropdown(
                label="Model preset",
                choices=list(PRESETS),
                value=services.settings.model_preset,
                elem_id="sl-new-project-preset",
            )
            create_button = gr.Button("Create project", variant="primary", elem_id="sl-create-project")
        with gr.Accordion("Rename, delete, restore", open=False):
            with gr.Row():
                rename_box = gr.Textbox(label="New name", elem_id="sl-rename-box")
                rename_button = gr.Button("Rename", elem_id="sl-rename-project")
                delete_project_button = gr.Button("Delete (to bin)", variant="stop", elem_id="sl-delete-project")
            with gr.Row():
                bin_pick = gr.Dropdown(label="Projects in the bin", choices=[], elem_id="sl-project-bin")
                restore_project_button = gr.Button("Restore", elem_id="sl-restore-project")
        gr.Markdown("### Settings")
        preset_info = gr.Markdown(_preset_text(services.settings.model_preset), elem_id="sl-preset-info")
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
        speed_fields = [
            *(speed_cache, speed_threshold, speed_interval, speed_backend, speed_vram, speed_compile),
            speed_accelerator,
        ]
        gr.Markdown("### Storyboard file")
        with gr.Row():
            import_file = gr.File(label="Storyboard YAML", file_types=[".yaml", ".yml"], elem_id="sl-import-file")
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
    return ProjectsTab(
        project_pick,
        open_button,
        new_name,
        new_preset,
        create_button,
        rename_box,
        rename_button,
        delete_project_button,
        bin_pick,
        restore_project_button,
        preset_info,
        set_preset,
        set_width,
        set_height,
        set_fps,
        set_steps,
        set_guidance,
        set_negative,
        save_settings_button,
        speed_fields,
        save_speed_button,
        import_file,
        import_refs,
        import_button,
        export_sb_button,
        storyboard_download,
    )


def wire_projects(app: gr.Blocks, services: Any, shared: Shared, tab: ProjectsTab, opened: list[Any]) -> None:
    """The page's first load, every way of opening a project (filling `opened`, `project_outputs_list`), the
    settings, and the storyboard file."""
    s = services
    project_state, status = shared.project_state, shared.status
    speed_fields = tab.speed_fields

    @guarded
    def on_load(request: gr.Request):
        """Open `?project=<id or name>` when the address names one, else the only project if there is one."""
        wanted = (request.query_params.get("project") if request is not None else None) or ""
        if wanted:
            return (*project_outputs(s, s.projects.find(wanted).id), "")
        projects = s.projects.list()
        return (*project_outputs(s, projects[0].id if len(projects) == 1 else None), "")

    @guarded
    def on_open(project_id):
        if project_id is None:
            raise gr.Error("Pick a project to open.", print_exception=False)
        return (*project_outputs(s, int(project_id)), "")  # the last line was about the project left

    @guarded
    def on_create(name, preset):
        project = s.projects.create(name, preset=preset or None)
        s.storyboard.add_scene(project.id, caption="")
        return (*project_outputs(s, project.id), said(f"Project {esc(project.name)} created."), "")

    @guarded
    def on_rename(project_id, name):
        project = s.projects.rename(require_project(project_id), name)
        return (*project_outputs(s, project_id), said(f"Renamed to {esc(project.name)}."), "")

    @guarded
    def on_delete_project(project_id):
        project = s.projects.delete(require_project(project_id))
        message = f"{esc(project.name)} moved to the bin: “Rename, delete, restore” brings it back."
        return (*project_outputs(s, None), said(message))

    @guarded
    def on_restore_project(project_id):
        if project_id is None:
            raise gr.Error("Pick a project from the bin.", print_exception=False)
        project = s.projects.restore(int(project_id))
        return (*project_outputs(s, int(project_id)), said(f"{esc(project.name)} restored."))

    @guarded
    def on_save_settings(project_id, preset, width, height, fps, steps, guidance, negative):
        project_id = require_project(project_id)
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
        return (*project_outputs(s, project_id)[:-1], gr.update(), said("Settings saved."))

    app.load(on_load, None, [*opened, status])
    remember_project(project_state)
    tab.open_button.click(on_open, tab.project_pick, [*opened, status])
    tab.project_pick.input(on_open, tab.project_pick, [*opened, status])
    # a name field empties once its project exists, as a film-maker expects of a "new ..." box
    tab.create_button.click(on_create, [tab.new_name, tab.new_preset], [*opened, status, tab.new_name])
    tab.rename_button.click(on_rename, [project_state, tab.rename_box], [*opened, status, tab.rename_box])
    tab.delete_project_button.click(on_delete_project, project_state, [*opened, status])
    tab.restore_project_button.click(on_restore_project, tab.bin_pick, [*opened, status])
    tab.save_settings_button.click(
        on_save_settings,
        [
            project_state,
            tab.set_preset,
            tab.set_width,
            tab.set_height,
            tab.set_fps,
            tab.set_steps,
            tab.set_guidance,
            tab.set_negative,
        ],
        [*opened, status],
    )

    @guarded
    def on_speed_fields(project_id):
        if project_id is None:
            return speed.form_values({})
        return speed.form_values(s.projects.get(int(project_id)).acceleration)

    @guarded
    def on_save_speed(project_id, *values):
        project_id = require_project(project_id)
        kept = s.projects.get(project_id).acceleration
        saved = s.projects.update_settings(project_id, acceleration=speed.settings_from_form(*values, keep=kept))
        # an accelerator set or cleared brings its step count and guidance: show them
        return said("Speed settings saved."), saved.steps, saved.guidance

    project_state.change(on_speed_fields, project_state, speed_fields)
    tab.save_speed_button.click(
        on_save_speed, [project_state, *speed_fields], [status, tab.set_steps, tab.set_guidance]
    )
    tab.set_preset.input(_preset_text, tab.set_preset, tab.preset_info)
    tab.new_preset.input(_preset_text, tab.new_preset, tab.preset_info)

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
        path = upload_path(yaml_file)
        text = path.read_text(encoding="utf-8")
        doc = parse_storyboard(text, source=path.name, limits=StoryboardLimits.from_settings(s.settings))
        # The file names its pictures by path; here they come as uploads (matched by file name), or are the ones
        # the project already holds under those paths (re-importing a file exported from here).
        uploaded = {upload_path(item).name: upload_path(item) for item in ref_files or []}
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
        return (*project_outputs(s, project_id), said(f"Imported: {esc(_report_text(report))}"), None, None)

    @guarded
    def on_export_storyboard(project_id):
        from studio.storyboard_file import export_storyboard

        project_id = require_project(project_id)
        text = export_storyboard(s, project_id)
        project = s.projects.get(project_id)
        folder = Path(tempfile.mkdtemp(prefix="shotline-storyboard-"))
        path = folder / f"{file_stem(project.name, 'storyboard')}.yaml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    tab.import_button.click(
        on_import,
        [project_state, tab.import_file, tab.import_refs],
        [*opened, status, tab.import_file, tab.import_refs],
    )
    tab.export_sb_button.click(on_export_storyboard, project_state, tab.storyboard_download)


def _report_text(report: Any) -> str:
    if hasattr(report, "summary"):
        summary = report.summary
        return summary() if callable(summary) else str(summary)
    return str(report)
