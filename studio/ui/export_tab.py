"""The Export tab: the film (music, fade-out, grey cards for shots without a take) as an export job, and the
project bundle (zip) downloaded or imported as a new project."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from studio.services.job_specs import ExportFilm
from studio.ui.common import Shared, guarded, jobs_for, require_project, said, upload_path
from studio.ui.panels import ActionPanel, esc, file_stem
from studio.ui.project_view import project_outputs


@dataclass
class ExportTab:
    export_music: gr.File
    export_fade: gr.Number
    export_placeholder: gr.Checkbox
    export_button: gr.Button
    exports_panel: ActionPanel
    bundle_button: gr.Button
    bundle_file: gr.File
    bundle_upload: gr.File
    bundle_name: gr.Textbox
    bundle_import_button: gr.Button


def build_export_tab() -> ExportTab:
    with gr.Tab("Export", id="export"):
        with gr.Row():
            export_music = gr.File(label="Music track (optional)", file_types=["audio"], elem_id="sl-export-music")
            with gr.Column():
                export_fade = gr.Number(
                    label="Music fade-out (s)", value=1.0, minimum=0, maximum=30, elem_id="sl-export-fade"
                )
                export_placeholder = gr.Checkbox(
                    label="Grey card for shots without a take (else refused)",
                    value=False,
                    elem_id="sl-export-placeholder",
                )
        gr.Markdown("The film uses each shot's chosen take, the project's size and fps, and each shot's transition.")
        with gr.Row():
            export_button = gr.Button("Export film", variant="primary", elem_id="sl-export")
        exports_panel = ActionPanel("", elem_id="sl-exports")
        with gr.Row():
            bundle_button = gr.Button("Download the project bundle (zip)", elem_id="sl-bundle")
            bundle_file = gr.File(label="Project bundle", interactive=False, elem_id="sl-bundle-file")
        with gr.Row():
            bundle_upload = gr.File(label="Import a project bundle", file_types=[".zip"], elem_id="sl-bundle-in")
            bundle_name = gr.Textbox(label="Name for the imported project (optional)", elem_id="sl-bundle-name")
            bundle_import_button = gr.Button("Import bundle", elem_id="sl-bundle-import")
    return ExportTab(
        export_music,
        export_fade,
        export_placeholder,
        export_button,
        exports_panel,
        bundle_button,
        bundle_file,
        bundle_upload,
        bundle_name,
        bundle_import_button,
    )


def wire_export(services: Any, shared: Shared, tab: ExportTab, jobs_panel: ActionPanel, opened: list[Any]) -> None:
    """Export film, download and import a bundle; an imported bundle opens as the project (`opened`, the
    components `project_outputs` fills)."""
    s = services
    project_state, status, timer = shared.project_state, shared.status, shared.timer
    _jobs_for = functools.partial(jobs_for, s)

    @guarded
    def on_export(project_id, music, fade, placeholder):
        project_id = require_project(project_id)
        shots = s.storyboard.film_shots(project_id)
        if not shots:
            raise gr.Error("The storyboard has no shots to export.", print_exception=False)
        # Refused here rather than by the export job a moment later in the Jobs panel, naming this page's box.
        missing = [f"#{i}" for i, shot in enumerate(shots, 1) if shot.chosen_take_id is None]
        if missing and not placeholder:
            raise gr.Error(
                f"Shot{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"{'have' if len(missing) > 1 else 'has'} no take yet: generate "
                f"{'them' if len(missing) > 1 else 'it'}, or tick “Grey card for shots without a take”.",
                print_exception=False,
            )
        music_asset_id = None
        if music is not None:
            path = upload_path(music)
            check_music_upload(path)
            asset = s.assets.put_bytes(path.read_bytes(), "music", _audio_mime(path.name), filename=path.name)
            music_asset_id = asset.id
        spec = ExportFilm(
            music_asset_id=music_asset_id, music_fade_seconds=float(fade or 0.0), placeholder=bool(placeholder)
        )
        job = s.jobs.enqueue(spec, project_id=project_id)
        message = f"Export queued (job {job.id})."
        drift = s.takes.chosen_take_drift(project_id)  # queued all the same: an older take may be the one wanted
        if drift:
            numbers = ", ".join(f"#{i}" for i, shot in enumerate(shots, 1) if shot.id in drift)
            message += f" Note: {numbers} will show takes that differ from their cards (⚠ on the card says how)."
        return gr.update(active=True), said(message), _jobs_for(project_id, True)

    tab.export_button.click(
        on_export,
        [project_state, tab.export_music, tab.export_fade, tab.export_placeholder],
        [timer, status, jobs_panel],
    )

    @guarded
    def on_bundle(project_id):
        from studio.export.bundle import export_bundle

        project_id = require_project(project_id)
        project = s.projects.get(project_id)
        path = Path(tempfile.mkdtemp(prefix="shotline-bundle-")) / f"{file_stem(project.name, 'project')}.zip"
        export_bundle(s, project_id, path)
        return str(path)

    tab.bundle_button.click(on_bundle, project_state, tab.bundle_file)

    @guarded
    def on_import_bundle(bundle, name):
        from studio.export.bundle import import_bundle

        if bundle is None:
            raise gr.Error("Choose a project bundle (.zip) first.", print_exception=False)
        report = import_bundle(s, upload_path(bundle), name=name or None)
        project = s.projects.get(report.project_id)
        return (*project_outputs(s, project.id), said(f"Imported the bundle as the project {esc(project.name)}."))

    tab.bundle_import_button.click(on_import_bundle, [tab.bundle_upload, tab.bundle_name], [*opened, status])


def check_music_upload(path: Path) -> None:
    """A music file ffmpeg cannot read is refused here, by the name it was chosen under, rather than by the export
    job a moment later in the Jobs panel."""
    from studio.export.film import ExportError
    from studio.export.jobs import check_music_file

    try:
        check_music_file(path, path.name)
    except ExportError as error:
        raise gr.Error(esc(f"Not exported: {error}."), print_exception=False) from None


def _audio_mime(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return {
        ".mp3": "audio/mpeg",
        ".wav": "audio/wav",
        ".ogg": "audio/ogg",
        ".m4a": "audio/mp4",
        ".aac": "audio/aac",
        ".flac": "audio/flac",
    }.get(suffix, "application/octet-stream")
