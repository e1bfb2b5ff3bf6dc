"""The studio's web UI (Gradio 6). `build_app(services)` builds the page; `launch_studio(services)` serves it safely.

The UI only calls services: every handler reads the current state from them and applies one service call per user
action; nothing about the storyboard is kept in `gr.State` (only the open project id, the shot whose takes are shown
and the selected shot ids of this browser tab). Service refusals reach the page as readable messages (toasts that
leave the page as it was, or the status line), never as stack traces; the page stays usable.

Each part of the page is a module: `projects_tab`, `characters_tab`, `board_tab` (with `shot_panel`), `export_tab`
and `jobs_panel`, sharing `common` (the per-tab state, refusals, the status line); `project_view` and
`character_view` are what opening a project or a character shows.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.ui.board_tab import build_board_tab, wire_board
from studio.ui.characters_tab import build_characters_tab, wire_characters
from studio.ui.common import build_shared
from studio.ui.export_tab import build_export_tab, wire_export
from studio.ui.jobs_panel import build_jobs_panel, wire_jobs
from studio.ui.panels import PANEL_CSS
from studio.ui.project_view import project_outputs_list
from studio.ui.projects_tab import build_projects_tab, wire_projects
from studio.ui.security import UPLOAD_CACHE_CLEANUP_S, security_launch_kwargs

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


def build_app(services: Any) -> gr.Blocks:
    """The whole studio page: Projects, Characters, Storyboard, Export tabs and the job queue.

    Each part first lays out its components (in page order), then its events are wired, in the same order; the
    components a part's events fill on other tabs (opening a project fills every tab) are handed to it."""
    with StudioBlocks(title="Shotline studio", analytics_enabled=False) as app:
        app.studio_services = services
        shared = build_shared()
        with gr.Tabs():
            projects = build_projects_tab(services)
            characters = build_characters_tab()
            board = build_board_tab(services, shared)
            export = build_export_tab()
        jobs = build_jobs_panel(services)

        opened = project_outputs_list(shared, projects, characters, board, export, jobs)
        wire_projects(app, services, shared, projects, opened)
        wire_characters(services, shared, characters, board.shot.shot_characters)
        wire_board(services, shared, board, jobs.jobs_panel)
        wire_export(services, shared, export, jobs.jobs_panel, opened)
        wire_jobs(services, shared, characters, board, export, jobs)
    return app
