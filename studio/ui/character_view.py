"""What the Characters tab shows of a character (`character_outputs`): its fields, references, adapter status
with the running training's progress, the loss curve and the identity scores of its recent takes."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.services.job_specs import spec_of
from studio.ui.common import latest_adapters
from studio.ui.panels import characters_html, esc, reference_choices, references_html


def character_outputs(
    services: Any, project_id: int | None, character_id: int | None, reference_id: int | None = None
):
    """The Characters tab with `character_id` open (None: the cards only), `reference_id` picked for its caption."""
    s = services
    chars = s.characters.list(project_id) if project_id is not None else []
    gallery = characters_html(chars, latest_adapters(s, chars))
    if character_id is None or project_id is None:
        return (
            None,
            gallery,
            gr.update(visible=False),
            "",
            "",
            "",
            "",
            "",
            "",
            gr.update(value="Train"),
            None,
            None,
            gr.update(choices=[(c.name, c.id) for c in chars]),
            gr.update(choices=[], value=None),
            gr.update(value=""),
        )
    character = s.characters.get(character_id)
    refs = s.characters.list_references(character_id)
    picked = next((r for r in refs if reference_id is not None and r.id == int(reference_id)), None)
    adapters = s.characters.list_adapters(character_id)
    adapter = max(adapters, key=lambda a: (a.version, a.id)) if adapters else None
    return (
        character_id,
        gallery,
        gr.update(visible=True),
        f"### {esc(character.name)}",
        character.name,
        character.trigger,
        character.description,
        references_html(refs, face_models_note(s, refs)),
        _adapter_text(s, adapter, character_id),
        gr.update(value="Retrain" if adapter else "Train"),
        _loss_frame(adapter, _training_job(s, character)),
        _identity_rows(s, project_id, character),
        gr.update(choices=[(c.name, c.id) for c in chars]),
        gr.update(choices=reference_choices(refs), value=picked.id if picked else None),
        gr.update(
            value=picked.caption if picked else "",
            placeholder=f"e.g. close-up shot, {character.trigger} stays still, camera is static",
        ),
    )


def face_models_note(services: Any, references: list[Any]) -> str:
    """Why a character's references have no face analysis, for as long as that holds: the face models are missing."""
    if not any(ref.analyzed_at is None for ref in references):
        return ""
    from studio.characters.faces import missing_pack_message
    from studio.characters.references import face_analyzer_for

    analyzer = face_analyzer_for(services.settings)
    return "" if analyzer.is_available() else missing_pack_message(analyzer.pack_dir)


def _adapter_text(services: Any, adapter: Any | None, character_id: int | None = None) -> str:
    """Adapter status and, while a training job of this character runs, its progress bar and message."""
    job = _training_job(services, services.characters.get(character_id)) if character_id is not None else None
    training = job is not None and not job.is_finished
    if adapter is None:
        # not "upload references, then Train" while its first training runs
        text = (
            "<div>First adapter in training.</div>"
            if training
            else ("<div>No adapter yet: upload references, then Train.</div>")
        )
    else:
        text = f"<div><b>{esc(adapter.kind)} v{adapter.version}</b>: {esc(adapter.status)}"
        text += f" — {esc(adapter.message)}</div>" if adapter.message else "</div>"
    if job is not None:
        if training:
            percent = int(round(100 * max(0.0, min(1.0, job.progress or 0.0))))
            text += (
                f'<div class="sl-training" data-job-id="{job.id}">Training ({esc(job.status)}): {percent}%'
                f'<div class="sl-bar"><div style="width:{percent}%"></div></div>'
                f'<div class="sl-small">{esc(job.message)}</div></div>'
            )
        elif job is not None and job.status == "failed":
            text += f'<div class="sl-flag">Training failed: {esc(job.error or job.message)}</div>'
    return text


def _training_job(services: Any, character: Any) -> Any | None:
    """The character's latest train_adapter job, if any."""
    training = [
        job
        for job in services.jobs.list_jobs(project_id=character.project_id)
        if job.kind == "train_adapter" and spec_of(job).character_id == character.id
    ]
    return max(training, key=lambda j: j.id) if training else None


def _loss_frame(adapter: Any | None, job: Any | None = None):
    """The loss curve: the running training job's points so far (its partial result), else the adapter's."""
    import pandas as pd

    metrics = (adapter.metrics or {}) if adapter else {}
    if job is not None and not job.is_finished and (job.result or {}).get("loss_curve"):
        metrics = job.result
    losses = metrics.get("loss_curve") or metrics.get("loss")
    if not losses:
        return pd.DataFrame({"step": [], "loss": []})
    if isinstance(losses, dict):
        steps, values = list(losses.get("step", range(len(losses.get("value", []))))), losses.get("value", [])
    elif losses and isinstance(losses[0], list | tuple):
        steps, values = [p[0] for p in losses], [p[1] for p in losses]
    else:
        steps, values = list(range(1, len(losses) + 1)), list(losses)
    return pd.DataFrame({"step": steps, "loss": [float(v) for v in values]})


def _identity_rows(services: Any, project_id: int, character: Any) -> list[list[Any]]:
    rows = []
    for number, shot in enumerate(services.storyboard.film_shots(project_id), 1):  # numbered as the cards are
        if character.id not in shot.character_ids:
            continue
        for take in services.takes.list_takes(shot.id)[-3:]:
            # Scores are keyed by character name (or id); a string says why there is no number.
            scores = take.identity_scores or {}
            score = next((scores[k] for k in (character.name, str(character.id)) if k in scores), None)
            if isinstance(score, dict):
                score = score.get("mean")
            shown = round(float(score), 3) if isinstance(score, int | float) else (score or "not scored")
            rows.append([f"#{number}", take.number, str(shown)])
    return rows[-12:]
