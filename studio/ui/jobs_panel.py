"""The Jobs panel under the tabs and the job timer: the open project's jobs (cancel, preview frames), and each tick
the parts of every tab a running or finished job changes; the status line says what became of the jobs it announced."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.ui.board_tab import BoardTab
from studio.ui.character_view import character_outputs
from studio.ui.characters_tab import CharactersTab
from studio.ui.common import Shared, guarded, jobs_for, latest_adapters, said
from studio.ui.export_tab import ExportTab
from studio.ui.panels import ActionPanel, characters_html, esc, exports_html, jobs_html, jobs_signature
from studio.ui.shot_panel import shot_panel_refresh
from studio.ui.timeline import timeline_model

logger = logging.getLogger(__name__)


@dataclass
class JobsPanel:
    show_preview: gr.Checkbox
    jobs_panel: ActionPanel


def build_jobs_panel(services: Any) -> JobsPanel:
    with gr.Accordion("Jobs", open=True):
        show_preview = gr.Checkbox(
            label="Show preview frames",
            value=True,
            info=preview_frames_info(services.settings),
            elem_id="sl-show-preview",
        )
        jobs_panel = ActionPanel(jobs_html([]), elem_id="sl-jobs")
    return JobsPanel(show_preview, jobs_panel)


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


def wire_jobs(
    services: Any, shared: Shared, characters: CharactersTab, board: BoardTab, export: ExportTab, jobs: JobsPanel
) -> None:
    """Cancel from the Jobs panel; the timer's refresh of every tab and its word on ended jobs (`watch_jobs`)."""
    s = services
    project_state, selected_state, open_shot_state, character_state, jobs_seen_state = (
        shared.project_state,
        shared.selected_state,
        shared.open_shot_state,
        shared.character_state,
        shared.jobs_seen_state,
    )
    status, timer, panel = shared.status, shared.timer, board.shot
    show_preview, jobs_panel = jobs.show_preview, jobs.jobs_panel

    @guarded
    def on_job_action(project_id, preview, evt: gr.EventData):
        data = evt._data or {}
        if data.get("action") != "cancel_job":
            raise gr.Error("Unknown action; reload the page.", print_exception=False)
        s.jobs.request_cancel(int(data["id"]))
        return jobs_for(s, project_id, preview), said("Cancel requested.")

    jobs_panel.action(on_job_action, [project_state, show_preview], [jobs_panel, status])

    def on_tick(project_id, selected, open_shot, character_id, preview, seen):
        """Polls the job service for the open project's jobs, wherever they were queued. While jobs are queued
        or running: progress, elapsed time, new takes and exports, adapter status and the live loss curve; once
        more when the last one ends (its result); an idle tick with nothing new sends nothing."""
        closed_panel = [gr.update()] * len(panel.outputs)
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
                *(shot_panel_refresh(s, panel, project_id, open_shot) if open_shot is not None else closed_panel),
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
