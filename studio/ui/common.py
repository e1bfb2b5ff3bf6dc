"""What every part of the studio page shares: the refusal toast and the status line (`refuse`, `said`, `guarded`),
the per-tab state (`Shared`: the open project, the selection, the open shot and character, the header, the status
line and the job timer) and the small service reads several tabs need.

Nothing about the storyboard is kept in `gr.State`: only the open project id, the shot whose takes are shown, the
open character and the selected shot ids of this browser tab; handlers read everything else from the services.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from studio.services.errors import ServiceError
from studio.storyboard_file import StoryboardError
from studio.ui.panels import esc, jobs_html

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0


def refuse(message: str, title: str = "Not done") -> dict:
    """Show `message` (HTML-escaped already) as a toast and leave every output of the event as it was.

    Raising `gr.Error` instead would put an "Error" badge over each of the event's outputs, and a click that fills
    a whole form (the shot editor, a character's fields) would hide the very fields the message asks to change
    until each badge is closed."""
    gr.Warning(message, title=title)
    return gr.skip()


def said(message: str) -> str:
    """A status line stamped with the time it was said: the line stays until the next message, and a film-maker
    who has since clicked something that says nothing should not read an old "Shot saved." as its answer."""
    return f"{message} · {datetime.now():%H:%M:%S}" if message else ""


def guarded(fn: Callable) -> Callable:
    """Turn service refusals into a readable toast and anything unexpected into a short message (trace in the log);
    either way the page keeps what it showed (`refuse`).

    Gradio renders toast text as (sanitised) HTML, so messages are escaped: a name quoted in a refusal shows as
    typed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as error:  # raised by the handler itself, its text escaped there
            return refuse(str(error.message))
        except (ServiceError, StoryboardError) as error:
            return refuse(esc(error))
        except Exception as error:
            logger.exception("UI handler %s failed", fn.__name__)
            return refuse(
                esc(f"Something went wrong ({type(error).__name__}: {error}); the server log has details."), "Error"
            )

    return wrapper


def require_project(project_id: int | None) -> int:
    if project_id is None:
        raise gr.Error("Open or create a project first (Projects tab).", print_exception=False)
    return int(project_id)


def upload_path(item: Any) -> Path:
    """The file of a `gr.File` value (a path, or Gradio's file data)."""
    if isinstance(item, str | Path):
        return Path(item)
    return Path(getattr(item, "path", None) or getattr(item, "name", None) or item["path"])


@dataclass
class Shared:
    """The page's per-browser-tab state and the components above and below the tabs that every tab's events use."""

    project_state: gr.State  # the open project's id
    selected_state: gr.State  # the selected shot ids on the board
    open_shot_state: gr.State  # the shot whose takes the shot panel shows
    shot_loaded_state: gr.State  # the open shot's fields as the panel loaded them (`shot_form_of`)
    character_state: gr.State  # the character open on the Characters tab
    jobs_seen_state: gr.State  # the job list the timer last drew (`jobs_signature`)
    project_title: gr.Markdown
    status: gr.Markdown
    timer: gr.Timer


def build_shared() -> Shared:
    """The states, the header with the open project's name, the status line and the job timer, in page order."""
    states = [gr.State(None), gr.State([]), gr.State(None), gr.State(None), gr.State(None), gr.State(None)]
    with gr.Row():
        gr.Markdown("## Shotline studio")
        project_title = gr.Markdown("No project open", elem_id="sl-project-title")
    status = gr.Markdown("", elem_id="sl-status")
    timer = gr.Timer(TICK_SECONDS, active=False)
    return Shared(*states, project_title=project_title, status=status, timer=timer)


def latest_adapters(services: Any, chars: list[Any]) -> dict[int, Any]:
    """Each character's newest adapter, as the character cards show it."""
    latest = {}
    for character in chars:
        adapters = services.characters.list_adapters(character.id)
        if adapters:
            latest[character.id] = max(adapters, key=lambda a: (a.version, a.id))
    return latest


def scene_choices(services: Any, project_id: int) -> list[tuple[str, int]]:
    """The project's scenes as "Move to scene" offers them."""
    return [(f"Scene {scene.position + 1}", scene.id) for scene in services.storyboard.list_scenes(project_id)]


def timer_runs(project_id: int | None) -> bool:
    """The timer runs whenever a project is open: it polls the job service, so a job queued from the CLI,
    another tab or the worker shows too (an idle tick costs one job query and sends nothing)."""
    return project_id is not None


def jobs_for(services: Any, project_id: int | None, preview: bool) -> str:
    """The Jobs panel for the open project (its 20 newest jobs)."""
    if project_id is None:
        return jobs_html([])
    return jobs_html(services.jobs.list_jobs(project_id=project_id)[:20], show_preview=preview)
