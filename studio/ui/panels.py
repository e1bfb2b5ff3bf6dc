"""Small read-mostly panels drawn on the server as HTML: takes of a shot, the job queue, references, exports.

Every user string goes through `esc`, which escapes HTML and also `$`, braces and backticks, so nothing a user
typed can be read as markup or as a template expression. Buttons carry `data-action` and `data-id`; `ActionPanel`
turns a click into one `action` event with those two values.
"""

from __future__ import annotations

import hashlib
import html
from datetime import UTC, datetime
from typing import Any

import gradio as gr

from studio.services.takes import take_drift
from studio.ui.security import asset_url

_EXTRA_ESCAPES = str.maketrans({"$": "&#36;", "{": "&#123;", "}": "&#125;", "`": "&#96;", "\\": "&#92;"})


def esc(value: Any) -> str:
    """HTML-escape a user string, `$ { } ` \\` included."""
    return html.escape("" if value is None else str(value), quote=True).translate(_EXTRA_ESCAPES)


ACTION_JS = r"""
element.addEventListener('click', (event) => {
  const target = event.target.closest('[data-action]');
  if (!target || target.disabled) return;
  if (target.dataset.confirm && !confirm(target.dataset.confirm)) return;
  trigger('action', {action: target.dataset.action, id: Number(target.dataset.id)});
});
"""

PANEL_CSS = """
.sl-row { display: flex; flex-wrap: wrap; gap: 10px; }
.sl-take { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px; width: 260px; }
.sl-take.sl-chosen { outline: 2px solid var(--color-accent); }
.sl-take video { width: 100%; border-radius: 4px; background: #000; }
.sl-small { font-size: 12px; color: var(--body-text-color-subdued); }
.sl-bar { height: 8px; background: var(--background-fill-secondary); border-radius: 4px; overflow: hidden; }
.sl-bar > div { height: 100%; background: var(--color-accent); }
.sl-job { padding: 4px 0; border-bottom: 1px solid var(--border-color-primary); }
.sl-ref { width: 140px; border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 4px; }
.sl-ref img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 4px; }
.sl-caption { font-size: 12px; font-style: italic; overflow-wrap: anywhere; }
.sl-flag { color: #c0392b; font-size: 12px; }
.sl-card { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 6px; min-width: 160px; }
button.sl-btn { font-size: 12px; padding: 2px 8px; border-radius: 4px; border: 1px solid var(--border-color-primary);
  background: var(--background-fill-primary); cursor: pointer; }
"""


def ActionPanel(value: str = "", **kwargs: Any) -> gr.HTML:  # noqa: N802 (reads as a component)
    """An HTML panel (value: an HTML string built with `esc`) whose `[data-action]` buttons fire `action`."""
    return gr.HTML(value=value, html_template="${value}", css_template=PANEL_CSS, js_on_load=ACTION_JS, **kwargs)


def _button(action: str, label: str, item_id: int, confirm: str | None = None, disabled: bool = False) -> str:
    extra = f' data-confirm="{esc(confirm)}"' if confirm else ""
    extra += " disabled" if disabled else ""
    return (
        f'<button class="sl-btn" type="button" data-action="{action}" data-id="{int(item_id)}"{extra}>'
        f"{esc(label)}</button>"
    )


def format_scores(scores: dict[str, Any] | None) -> str:
    if not scores:
        return "identity: n/a"
    parts = []
    for name, value in scores.items():
        if isinstance(value, int | float):
            parts.append(f"{name} {value:.2f}")
        elif isinstance(value, dict) and isinstance(value.get("mean"), int | float):
            parts.append(f"{name} {value['mean']:.2f}")
        else:
            parts.append(f"{name} {value}")
    return "identity: " + ", ".join(parts)


def takes_html(shot: Any | None, takes: list[Any], number: int | None = None, binned: list[Any] | None = None) -> str:
    """The takes of one shot side by side, each with its player, seed, identity scores, Choose and Delete buttons,
    then the shot's take bin (`binned`) with a Restore button each.
    `number`: the shot's place in the film, as its card shows it (#7); not its database id."""
    if shot is None:
        return '<p class="sl-small">Click “Takes” on a shot card to see its takes here.</p>'
    head = f"<p><b>Shot #{number}</b>: {esc(shot.caption)}</p>" if number else f"<p>{esc(shot.caption)}</p>"
    bin_html = _take_bin_html(binned or [])
    if not takes:
        return head + '<p class="sl-small">No takes yet: generate the scene or regenerate this shot.</p>' + bin_html
    items = []
    for take in takes:
        video = asset_url(take.video_asset_id)
        caption = (take.params or {}).get("caption") or (take.params or {}).get("captions_as_sent")
        drift = take_drift(shot.caption, shot.num_frames, take.params)
        items.append(
            f'<div class="sl-take{" sl-chosen" if take.is_chosen else ""}" data-take-id="{take.id}">'
            # the thumbnail as poster: a take reads at a glance before it is played, not as a black box
            f'<video controls preload="metadata" poster="{esc(asset_url(take.thumbnail_asset_id))}" '
            f'src="{esc(video)}"></video>'
            f"<div><b>Take {take.number}</b>{' (chosen)' if take.is_chosen else ''}</div>"
            f'<div class="sl-small">seed {take.seed} · {esc(format_scores(take.identity_scores))}</div>'
            + (f'<div class="sl-small">caption: {esc(caption)}</div>' if isinstance(caption, str) else "")
            + (f'<div class="sl-flag">{esc(drift)}</div>' if drift else "")
            + ("" if take.is_chosen else _button("choose_take", "Choose this take", take.id))
            + _button("delete_take", "Delete (to bin)", take.id)
            + "</div>"
        )
    return head + '<div class="sl-row">' + "".join(items) + "</div>" + bin_html


def _take_bin_html(binned: list[Any]) -> str:
    if not binned:
        return ""
    entries = "".join(
        f'<span class="sl-bin-take" data-take-id="{take.id}">Take {take.number} (seed {take.seed}) '
        f"{_button('restore_take', 'Restore', take.id)}</span> "
        for take in binned
    )
    return f'<div class="sl-small sl-take-bin">Take bin: {entries}</div>'


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f" · ETA {seconds // 60}:{seconds % 60:02d}"


def _elapsed(job: Any, now: datetime | None = None) -> str:
    """How long a running job has run (from its start), or a queued one has waited; read from the job's times."""
    start = getattr(job, "started_at" if job.status == "running" else "created_at", None)
    if start is None:
        return ""
    now = now or datetime.now(UTC).replace(tzinfo=None)  # the database keeps naive UTC
    seconds = max(0, int((now - start).total_seconds()))
    label = "running" if job.status == "running" else "waiting"
    return f' · <span class="sl-elapsed">{label} {seconds // 60}:{seconds % 60:02d}</span>'


def jobs_signature(jobs: list[Any]) -> str:
    """What the queue panel shows of these jobs, as a short digest: the timer redraws only when it changes (or while a
    job is queued or running, whose elapsed time moves)."""
    parts = [
        (job.id, job.status, round(job.progress or 0.0, 4), job.message, job.step, job.cancel_requested)
        for job in jobs
    ]
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


JOB_LABELS = {
    "generate_scene": "Generate scene",
    "regenerate_shot": "Regenerate shot",
    "train_adapter": "Train adapter",
    "export_film": "Export film",
}


def jobs_html(jobs: list[Any], show_preview: bool = True, now: datetime | None = None) -> str:
    """The queue: newest first, with progress bar, message, elapsed time, ETA, Cancel, and the latest preview
    frame. Every job of the project shows, wherever it was queued (page, CLI, another tab, the worker)."""
    if not jobs:
        return '<p class="sl-small">No jobs yet.</p>'
    rows = []
    for job in jobs:
        percent = int(round(100 * max(0.0, min(1.0, job.progress or 0.0))))
        status = job.status + (" (cancel requested)" if job.cancel_requested and not job.is_finished else "")
        line = f"<b>#{job.id} {esc(JOB_LABELS.get(job.kind, job.kind))}</b> · {esc(status)} · {percent}%"
        line += _elapsed(job, now) if job.status in ("queued", "running") else ""
        line += _eta(job.eta_s) if job.status == "running" else ""
        detail = esc(job.error or job.message or "")
        cancel = "" if job.is_finished else _button("cancel_job", "Cancel", job.id)
        preview = ""
        if show_preview and job.preview_asset_id and not job.is_finished:
            preview = f'<div><img alt="preview" style="max-width:160px" src="{asset_url(job.preview_asset_id)}"></div>'
        rows.append(
            f'<div class="sl-job" data-job-id="{job.id}" data-status="{esc(job.status)}">{line} {cancel}'
            f'<div class="sl-bar"><div style="width:{percent}%"></div></div>'
            f'<div class="sl-small">{detail}</div>{preview}</div>'
        )
    return "".join(rows)


FLAG_TEXT = {
    "no_face": "no face found",
    "several_faces": "several faces: the largest was used",
    "multiple_faces": "several faces: the largest was used",
    "low_quality": "low quality face",
    "small_face": "face is small",
}


def references_html(references: list[Any], note: str = "") -> str:
    """Each reference with the face crop the studio found (or the image), its caption, why it was flagged and a
    Remove button (asking first: a removed picture is gone); `note` (why none is analysed, e.g. the face models are
    missing) stays above them for as long as it holds, not only in the status line after an upload.

    `data-caption` is what the caption box loads when the reference is picked (`PICKED_REFERENCE_CAPTION_JS`):
    in the page, at once, so nothing typed meanwhile is overwritten by a late answer from the server."""
    if not references:
        return '<p class="sl-small">No references yet: upload one or more images of the character.</p>'
    items = []
    for ref in references:
        src = asset_url(ref.crop_asset_id or ref.asset_id)
        flags = [FLAG_TEXT.get(flag, flag) for flag in (ref.flags or ())]
        if ref.analyzed_at is None and not flags:
            state = '<div class="sl-small">not analysed yet</div>'
        elif flags:
            state = "".join(f'<div class="sl-flag">{esc(flag)}</div>' for flag in flags)
        else:
            state = '<div class="sl-small">face found</div>'
        label = "face crop" if ref.crop_asset_id else "reference"
        caption_html = (
            f'<div class="sl-caption">{esc(ref.caption)}</div>'
            if ref.caption
            else '<div class="sl-small">no caption: trained on the trigger and description</div>'
        )
        remove = _button(
            "remove_reference", "Remove", ref.id, confirm=f"Remove {ref.original_name or 'this reference'} for good?"
        )
        items.append(
            f'<div class="sl-ref" data-reference-id="{ref.id}" data-caption="{esc(ref.caption or "")}">'
            f'<img alt="{label}" src="{esc(src)}">'
            f'<div class="sl-small">{esc(ref.original_name)}</div>{caption_html}{state}{remove}</div>'
        )
    head = f'<p class="sl-flag sl-ref-note">{esc(note[:1].upper() + note[1:])}</p>' if note else ""
    return head + '<div class="sl-row">' + "".join(items) + "</div>"


# The caption box's value when a reference is picked in the dropdown: read from the references panel the server drew
# with the same references. A server round trip here could land after the film-maker had started typing.
PICKED_REFERENCE_CAPTION_JS = """(referenceId) => {
    const card = document.querySelector(`#sl-references [data-reference-id="${referenceId}"]`);
    return card ? card.dataset.caption : "";
}"""


def reference_choices(references: list[Any]) -> list[tuple[str, int]]:
    """(label, id) for a dropdown of a character's references: position and file name (names may repeat)."""
    return [(f"{index}. {ref.original_name or 'reference'}", ref.id) for index, ref in enumerate(references, 1)]


def characters_html(characters: list[Any], adapters: dict[int, Any]) -> str:
    if not characters:
        return '<p class="sl-small">No characters yet.</p>'
    items = []
    for character in characters:
        adapter = adapters.get(character.id)
        status = f"{adapter.kind} v{adapter.version}: {adapter.status}" if adapter else "no adapter"
        count = character.reference_count
        items.append(
            f'<div class="sl-card" data-character-id="{character.id}"><b>{esc(character.name)}</b> '
            f'<span class="sl-small">{esc(character.trigger)}</span>'
            f'<div class="sl-small">{count} reference{"" if count == 1 else "s"} · {esc(status)}</div>'
            f"{_button('open_character', 'Open', character.id)}</div>"
        )
    return '<div class="sl-row">' + "".join(items) + "</div>"


def file_stem(name: str, fallback: str) -> str:
    """A project's name as a file name a download can carry on any system: letters, digits, - and _ kept (accents
    too), everything else a dash; `fallback` when nothing is left."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or fallback


def _export_details(settings: dict) -> str:
    """How one export was made, so two exports of a film can be told apart: length, size, music, grey cards."""
    parts = []
    if isinstance(settings.get("duration"), int | float):
        parts.append(f"{settings['duration']:.1f} s")
    if settings.get("width") and settings.get("height"):
        parts.append(f"{settings['width']}×{settings['height']}")
    if settings.get("music") or settings.get("music_asset_id"):
        fade = settings.get("music_fade_seconds") or 0
        parts.append(f"music, fade-out {fade:g} s" if fade else "music")
    else:
        parts.append("no music")
    if settings.get("placeholder"):
        parts.append("grey cards for shots without a take")
    return " · ".join(parts)


def exports_html(
    exports: list[Any], bundle_asset_ids: dict[int, int] | None = None, project_name: str = "film"
) -> str:
    """Exported films, newest first: the film plays in the page; MP4, OpenTimelineIO and bundle download links,
    saved under the project's name and the export's number (`The-Lighthouse-3.mp4`), so several films and several
    exports of one film do not arrive in the downloads folder as indistinguishable `film-3.mp4`s.

    `exports` are all of one project's: an export is numbered 1, 2, ... within its project (the third export of this
    film is Export 3, whatever other projects exported meanwhile)."""
    if not exports:
        return '<p class="sl-small">No exports yet.</p>'
    stem = file_stem(project_name, "film")
    items = []
    for index, export in enumerate(exports):
        number = len(exports) - index
        links = [f'<a href="{asset_url(export.video_asset_id, f"{stem}-{number}.mp4")}" download>MP4</a>']
        if export.timeline_asset_id:
            otio_url = asset_url(export.timeline_asset_id, f"{stem}-{number}.otio")
            links.append(f'<a href="{otio_url}" download>OpenTimelineIO</a>')
        bundle_id = (bundle_asset_ids or {}).get(export.id) or (export.settings or {}).get("bundle_asset_id")
        if bundle_id:
            bundle_url = asset_url(int(bundle_id), f"{stem}-{number}-project.zip")
            links.append(f'<a href="{bundle_url}" download>Project bundle</a>')
        items.append(
            f'<div class="sl-take" data-export-id="{export.id}"><video controls preload="metadata" '
            f'src="{asset_url(export.video_asset_id)}"></video><div><b>Export {number}</b> '
            f'<span class="sl-small">{esc(export.created_at.strftime("%Y-%m-%d %H:%M"))}</span></div>'
            f'<div class="sl-small">{esc(_export_details(export.settings or {}))}</div>'
            f"<div>{' · '.join(links)}</div></div>"
        )
    return '<div class="sl-row">' + "".join(items) + "</div>"
