"""Importing a storyboard: bring a project in line with a parsed `StoryboardDoc`, creating it if needed.

An import is idempotent: the project is found by title (or an explicit name), every row is compared with the file and
only what differs is written, so importing the same file twice changes nothing (not even updated_at). A shot keeps
its identity across imports by its `id:` (written by the exporter); without one, by an unchanged caption in its
scene, and else by its position among the scene's remaining shots. A changed caption updates that shot and keeps
its takes; shots missing from the file go to the bin (their takes stay there).
Reference images are added when their content is new to the character; an import never removes characters or
references (they may have been added in the UI). A reference is a path or `{path: ..., caption: ...}`: the caption
says what the picture shows, naming the character by its trigger (`close-up shot, <kai> stays still`), and is what
its adapter trains that picture on. A caption in the file replaces the reference's caption (`caption: ''` clears
it); a plain path leaves the caption as it is (so captions written in the UI survive an old file's re-import), and
the exporter writes the mapping only for captioned references, so files without captions round-trip unchanged.
A shot's characters are kept in the order the file declares them.
An import is all or nothing: it runs as one unit of work, so an error on any item leaves the project (or its
absence), its rows and the asset store exactly as they were. It is linear in the shots and keeps the write
transaction short: parsing, checking every field, reading, hashing and checking the reference pictures happen
before it; inside it, the project's scenes and shots are read in a few queries, matched in memory and written with
one `StoryboardService.apply_plan` (a fixed number of statements whatever the number of shots).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from studio.characters.records import default_trigger
from studio.services.assets import read_capped
from studio.services.errors import NotFoundError, ServiceError
from studio.services.storyboard import PlanError, PlanResult, ScenePlan, ShotPlan
from studio.storyboard_file.doc import (
    StoryboardCharacter,
    StoryboardDoc,
    StoryboardError,
    StoryboardShot,
    file_under,
    relative_path,
)

_NOT_CHANGES = ("project_id", "project_name", "film_shot_ids", "notes")  # ImportReport fields that count no change


@dataclass
class ImportReport:
    """What an import changed (flags and counters), the film order it left and notes for the film-maker."""

    project_id: int
    project_name: str
    project_created: bool = False
    project_updated: bool = False
    characters_created: int = 0
    characters_updated: int = 0
    references_added: int = 0
    reference_captions_updated: int = 0
    scenes_created: int = 0
    scenes_updated: int = 0
    scenes_binned: int = 0
    shots_created: int = 0
    shots_updated: int = 0
    shots_moved: int = 0
    shots_binned: int = 0
    reordered: int = 0
    adapters_attached: int = 0  # shipped LoRAs (adapter_weights) registered as their characters' trained LoRA
    film_shot_ids: list[int] = field(default_factory=list)  # live shots in film order after the import
    notes: list[str] = field(default_factory=list)  # what the film-maker should know (e.g. a stale shipped LoRA)

    @property
    def changed(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name not in _NOT_CHANGES)

    def summary(self) -> str:
        notes = "".join(f"\nnote: {note}" for note in self.notes)
        if not self.changed:
            return f"project {self.project_name!r}: already up to date, nothing changed" + notes
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_CHANGES or not value:
                continue
            parts.append(f.name.replace("_", " ") if value is True else f"{f.name.replace('_', ' ')}: {value}")
        return f"project {self.project_name!r}: " + ", ".join(parts) + notes

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class _Reference:
    path: str
    data: bytes
    sha256: str
    line: int | None
    caption: str | None = None  # None: the file gives a plain path (the caption stays as it is)


def _resolve_reference(doc: StoryboardDoc, character: StoryboardCharacter, ref: str, base_dir: Path) -> Path:
    line = character.lines.get("references", character.line)
    field_path = f"characters[{doc.characters.index(character)}].references"
    relative = relative_path(ref)
    if relative is None:
        raise StoryboardError(
            f"{ref!r}: reference paths must be relative to the storyboard file, without '..'",
            doc.source,
            line,
            field_path,
        )
    path = file_under(base_dir, relative)
    if not path.is_file():
        raise StoryboardError(f"{ref!r}: file not found in {base_dir}", doc.source, line, field_path)
    return path


def _read_references(services, doc: StoryboardDoc, base_dir: Path) -> dict[str, list[_Reference]]:
    """Read and validate every reference image before anything is written."""
    result: dict[str, list[_Reference]] = {}
    for index, character in enumerate(doc.characters):
        items = []
        for ref, caption in zip(character.references, character.reference_captions, strict=True):
            path = _resolve_reference(doc, character, ref, base_dir)
            try:
                # Counted while reading: a file past the upload cap is refused without being read whole.
                data = read_capped(path, services.assets.upload_max_bytes, path.name, "(setting upload_max_bytes)")
                services.assets.validate_image(data, path.name)
            except ServiceError as error:
                raise StoryboardError(
                    str(error), doc.source, character.lines.get("references"), f"characters[{index}].references"
                ) from None
            items.append(
                _Reference(ref, data, hashlib.sha256(data).hexdigest(), character.lines.get("references"), caption)
            )
        result[character.name] = items
    return result


def _wrap(doc: StoryboardDoc, line: int | None, field_path: str):
    """Context manager turning a service refusal during import into a StoryboardError at the item's line."""

    class _Wrap:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, traceback):
            if error is not None and isinstance(error, ServiceError):
                raise StoryboardError(str(error), doc.source, line, field_path) from error
            return False

    return _Wrap()


def import_storyboard(
    services,
    doc: StoryboardDoc,
    base_dir: str | Path,
    project: str | int | None = None,
    attach_adapters: bool = True,
) -> ImportReport:
    """Bring a project in line with the document (creating it if needed); see the module docstring.

    All or nothing: every service call joins one unit of work, so an error on any item (raised as a
    StoryboardError naming its line) leaves the database and the asset store exactly as they were. The files are
    read and checked before that unit of work starts, so other writers wait only for its writes."""
    base = Path(base_dir)
    references = _read_references(services, doc, base)
    with services.db.unit_of_work():
        project_view, created = _find_or_create_project(services, doc, project)
        report = ImportReport(project_id=project_view.id, project_name=project_view.name, project_created=created)
        if not created:
            _sync_project(services, doc, project_view, report)
        characters = _sync_characters(services, doc, project_view.id, references, report)
        if attach_adapters:
            _attach_shipped_adapters(services, doc, base, characters, report)
        _sync_scenes(services, doc, project_view.id, characters, report)
    return report


def _attach_shipped_adapters(services, doc: StoryboardDoc, base: Path, character_ids, report: ImportReport) -> None:
    """Each `adapter_weights:` LoRA becomes its character's trained LoRA while its recipe is current (else a note)."""
    from studio.characters.shipped import attach_shipped_lora

    for index, spec in enumerate(doc.characters):
        if spec.adapter_weights is None:
            continue
        line, field_path = spec.lines.get("adapter_weights", spec.line), f"characters[{index}].adapter_weights"
        relative = relative_path(spec.adapter_weights)
        if relative is None:
            raise StoryboardError(
                f"{spec.adapter_weights!r}: the LoRA's path must be relative to the storyboard file, without '..'",
                doc.source,
                line,
                field_path,
            )
        file = file_under(base, relative)
        if not file.is_file():  # e.g. a page import, where only the pictures are uploaded: training makes one
            report.notes.append(
                f"{spec.name}: the shipped LoRA {spec.adapter_weights} is not beside the storyboard, so it is not "
                "used: a new one is trained before the first render"
            )
            continue
        with _wrap(doc, line, field_path):
            outcome = attach_shipped_lora(services, character_ids[spec.name.lower()], file)
        report.adapters_attached += int(outcome.attached)
        if outcome.note:
            report.notes.append(outcome.note)


def _find_or_create_project(services, doc: StoryboardDoc, project: str | int | None):
    name = project if project is not None else doc.title
    try:
        return services.projects.find(name), False
    except NotFoundError:
        if project is not None and isinstance(project, int):
            raise
    with _wrap(doc, doc.lines.get("title"), "title"):
        created = services.projects.create(
            str(name),
            preset=doc.model,
            width=doc.width,
            height=doc.height,
            fps=doc.fps,
            steps=doc.steps,
            guidance=doc.guidance,
            negative_prompt=doc.negative_prompt,
            acceleration=doc.speed,
        )
    return created, True


def _sync_project(services, doc: StoryboardDoc, project_view, report: ImportReport) -> None:
    wanted = {
        "preset": doc.model,
        "width": doc.width,
        "height": doc.height,
        "fps": doc.fps,
        "steps": doc.steps,
        "guidance": doc.guidance,
        "negative_prompt": doc.negative_prompt,
        "acceleration": doc.speed,
    }
    changes = {key: value for key, value in wanted.items() if getattr(project_view, key) != value}
    if changes:
        with _wrap(doc, doc.lines.get(next(iter(changes)).replace("preset", "model")), "model"):
            services.projects.update_settings(project_view.id, **changes)
        report.project_updated = True
    if project_view.in_bin:
        services.projects.restore(project_view.id)
        report.project_updated = True


def _sync_characters(services, doc, project_id: int, references, report: ImportReport) -> dict[str, int]:
    existing = {c.name.lower(): c for c in services.characters.list(project_id)}
    ids: dict[str, int] = {}
    for index, spec in enumerate(doc.characters):
        path = f"characters[{index}]"
        current = existing.get(spec.name.lower())
        with _wrap(doc, spec.line, path):
            if current is None:
                current = services.characters.create(
                    project_id, spec.name, spec.description, spec.trigger, adapter_kind=spec.adapter
                )
                report.characters_created += 1
            else:
                changes: dict[str, Any] = {}
                if current.name != spec.name:
                    changes["name"] = spec.name
                if current.description != spec.description:
                    changes["description"] = spec.description
                trigger = spec.trigger or default_trigger(spec.name)
                if current.trigger != trigger:
                    changes["trigger"] = trigger
                if current.adapter_kind != spec.adapter:
                    changes["adapter_kind"] = spec.adapter
                if changes:
                    current = services.characters.update(current.id, **changes)
                    report.characters_updated += 1
        ids[spec.name.lower()] = current.id
        known = {services.assets.get(r.asset_id).sha256: r for r in services.characters.list_references(current.id)}
        seen: set[str] = set()  # the same picture twice in the file: its first entry says what it is
        for reference in references.get(spec.name, []):
            if reference.sha256 in seen:
                continue
            seen.add(reference.sha256)
            present = known.get(reference.sha256)
            with _wrap(doc, reference.line, f"{path}.references"):
                if present is None:
                    known[reference.sha256] = services.characters.add_reference(
                        current.id, reference.path, reference.data, caption=reference.caption or ""
                    )
                    report.references_added += 1
                elif reference.caption is not None and present.caption != reference.caption:
                    known[reference.sha256] = services.characters.set_reference_caption(present.id, reference.caption)
                    report.reference_captions_updated += 1
    return ids


def _shot_fields(spec: StoryboardShot, character_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "caption": spec.caption,
        "num_frames": spec.frames,
        "characters": sorted(character_ids[name.lower()] for name in spec.characters),
        "shot_size": spec.shot_size,
        "camera_move": spec.camera_move,
        "transition": spec.transition,
        "transition_seconds": spec.transition_seconds,
        "seed": spec.seed,
        "trim_in": spec.trim_in,
        "trim_out": spec.trim_out,
    }


def _sync_scenes(services, doc: StoryboardDoc, project_id: int, character_ids: dict[str, int], report) -> None:
    """Match the file's scenes and shots with the project's, then write every change with one `apply_plan`.

    Scenes match by id first, then by position among the unclaimed. Shots match by id anywhere in the project, then
    (without an id) by an unchanged caption in the matched scene, then by position among what is left: a shot
    inserted above does not shift the others onto the wrong takes. Linear in the shots (dictionaries and queues, no
    search per shot)."""
    live_scenes = services.storyboard.outline(project_id)  # [(scene id, caption, [(shot id, caption)])]
    live_by_id = {scene[0]: scene for scene in live_scenes}
    all_live_shots = {shot_id for _, _, shots in live_scenes for shot_id, _ in shots}

    matched: list[Any] = [live_by_id.get(spec.id) if spec.id is not None else None for spec in doc.scenes]
    claimed = {m[0] for m in matched if m is not None}
    free = deque(s for s in live_scenes if s[0] not in claimed)
    for index in range(len(doc.scenes)):
        if matched[index] is None and free:
            matched[index] = free.popleft()

    claimed_shots = {
        spec.id for scene in doc.scenes for spec in scene.shots if spec.id is not None and spec.id in all_live_shots
    }
    plans: list[ScenePlan] = []
    for scene_spec, current in zip(doc.scenes, matched, strict=True):
        free_shots = [s for s in (current[2] if current is not None else ()) if s[0] not in claimed_shots]
        by_caption: dict[str, deque] = {}
        for shot_id, caption in free_shots:
            by_caption.setdefault(caption, deque()).append(shot_id)
        taken: set[int] = set()
        assigned: list[int | None] = [None] * len(scene_spec.shots)
        for shot_index, spec in enumerate(scene_spec.shots):
            if spec.id is not None and spec.id in all_live_shots:
                assigned[shot_index] = spec.id
                continue
            same = by_caption.get(spec.caption)
            if same:
                assigned[shot_index] = same.popleft()
                taken.add(assigned[shot_index])
        remaining = deque(shot_id for shot_id, _ in free_shots if shot_id not in taken)
        for shot_index in range(len(scene_spec.shots)):
            if assigned[shot_index] is None and remaining:
                assigned[shot_index] = remaining.popleft()
        shots = tuple(
            ShotPlan(shot_id, _shot_fields(spec, character_ids))
            for shot_id, spec in zip(assigned, scene_spec.shots, strict=True)
        )
        plans.append(ScenePlan(current[0] if current is not None else None, scene_spec.caption, shots))
    try:
        result = services.storyboard.apply_plan(project_id, plans)
    except PlanError as error:
        scene = doc.scenes[error.scene_index]
        if error.shot_index is None:
            raise StoryboardError(str(error), doc.source, scene.line, f"scenes[{error.scene_index}]") from error
        shot = scene.shots[error.shot_index]
        raise StoryboardError(
            str(error), doc.source, shot.line, f"scenes[{error.scene_index}].shots[{error.shot_index}]"
        ) from error
    for counter in fields(PlanResult):  # the plan's counters add to the report's of the same name
        if counter.name != "film_shot_ids":
            setattr(report, counter.name, getattr(report, counter.name) + getattr(result, counter.name))
    report.film_shot_ids = result.film_shot_ids
