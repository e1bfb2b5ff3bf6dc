"""Scenes and shots: add, insert, duplicate, edit, reorder, move, delete to the bin, restore, empty the bin.

Positions are 0-based and dense among live (not binned) items: a scene's live shots are 0..n-1, a project's live
scenes are 0..m-1. Binned items keep their last position only as a hint for restoring. Deleting a shot keeps its
takes until the bin is emptied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import selectinload

from studio.db import models
from studio.db.engine import Database
from studio.db.models import TRANSITION_TYPES, utcnow
from studio.services import validation as check
from studio.services.assets import AssetStore
from studio.services.convert import scene_view, shot_view
from studio.services.errors import ConflictError, NotFoundError, ValidationError, get_or_not_found
from studio.services.validation import MAX_CAPTION_CHARS
from studio.services.views import BinView, SceneView, ShotView

SHOT_SIZES = ("extreme-wide", "wide", "full", "medium", "medium-close-up", "close-up", "extreme-close-up", "insert")
CAMERA_MOVES = (
    "static",
    "pan-left",
    "pan-right",
    "tilt-up",
    "tilt-down",
    "dolly-in",
    "dolly-out",
    "truck-left",
    "truck-right",
    "crane-up",
    "crane-down",
    "zoom-in",
    "zoom-out",
    "orbit",
    "handheld",
    "tracking",
)
MAX_TRANSITION_SECONDS = 10.0
# The shot columns a storyboard plan sets (`StoryboardService.apply_plan`).
_PLAN_COLUMNS = (
    "caption",
    "num_frames",
    "shot_size",
    "camera_move",
    "seed",
    "transition_type",
    "transition_seconds",
    "trim_in",
    "trim_out",
)
SHOT_FIELDS = (
    "caption",
    "num_frames",
    "characters",
    "shot_size",
    "camera_move",
    "transition",
    "transition_type",
    "transition_seconds",
    "seed",
    "trim_in",
    "trim_out",
)


def check_choice(value: str | None, allowed: Sequence[str], what: str) -> str | None:
    """`value` as one of `allowed` (case, spaces and underscores normalized to `close-up` style), None for empty;
    anything else is refused naming `what`."""
    if value is None or value == "":
        return None
    normalized = "-".join(str(value).strip().lower().replace("_", " ").split())
    if normalized not in allowed:
        raise ValidationError(f"unknown {what} {value!r}; use one of: {', '.join(allowed)}")
    return normalized


def check_transition(kind: str | None, seconds: object) -> tuple[str, float]:
    """(type, seconds) of a shot's transition into the next: a cut has no duration, a dissolve or fade needs one."""
    transition_type = (kind or "cut").strip().lower()
    if transition_type not in TRANSITION_TYPES:
        raise ValidationError(f"unknown transition {kind!r}; use one of: {', '.join(TRANSITION_TYPES)}")
    duration = check.number(seconds if seconds is not None else 0.0, "transition seconds", 0.0, MAX_TRANSITION_SECONDS)
    if transition_type == "cut":
        duration = 0.0  # a cut has no duration; a leftover value from a dissolve would only confuse the export
    elif duration <= 0:
        raise ValidationError(f"a {transition_type} needs a duration above 0 seconds (e.g. 0.5)")
    return transition_type, duration


# Load a scene's shots, their characters and their takes' ids in three queries instead of two per shot.
_SCENE_LOADS = (
    selectinload(models.Scene.shots).selectinload(models.Shot.characters),
    selectinload(models.Scene.shots)
    .selectinload(models.Shot.takes)
    .load_only(models.Take.id, models.Take.shot_id, models.Take.number),
)


def live_scenes(session, project_id: int, with_shots: bool = False) -> list[models.Scene]:
    """The project's scenes outside the bin, in film order."""
    query = (
        select(models.Scene)
        .where(models.Scene.project_id == project_id, models.Scene.deleted_at.is_(None))
        .order_by(models.Scene.position, models.Scene.id)
    )
    if with_shots:
        query = query.options(*_SCENE_LOADS)
    return list(session.scalars(query))


def film_shot_rows(session, project_id: int) -> list[models.Shot]:
    """The project's live shots in film order (scene by scene): the order `film_shots` gives and the storyboard
    cards number (#1, #2, ...)."""
    return [
        shot
        for scene in live_scenes(session, project_id, with_shots=True)
        for shot in sorted(scene.shots, key=lambda shot: (shot.position, shot.id))
        if shot.deleted_at is None
    ]


@dataclass(frozen=True)
class ShotPlan:
    """One shot of a `StoryboardService.apply_plan`: an existing live shot of the project (`id`) or a new one, with
    the fields it must have (the names of `update_shot`; `characters` are ids)."""

    id: int | None
    fields: dict[str, Any]


@dataclass(frozen=True)
class ScenePlan:
    id: int | None  # an existing live scene of the project, or None for a new one
    caption: str
    shots: tuple[ShotPlan, ...] = ()


@dataclass
class PlanResult:
    scenes_created: int = 0
    scenes_updated: int = 0
    scenes_binned: int = 0
    shots_created: int = 0
    shots_updated: int = 0
    shots_moved: int = 0
    shots_binned: int = 0
    reordered: int = 0
    film_shot_ids: list[int] = field(default_factory=list)  # live shots in film order after the plan


class PlanError(ValidationError):
    """A refused item of a plan; `scene_index` and `shot_index` (None for the scene itself) say which."""

    def __init__(self, message: str, scene_index: int, shot_index: int | None = None) -> None:
        super().__init__(message)
        self.scene_index = scene_index
        self.shot_index = shot_index


class StoryboardService:
    def __init__(
        self,
        db: Database,
        assets: AssetStore,
        max_shots: int = 10_000,
        max_caption_chars: int = MAX_CAPTION_CHARS,
    ) -> None:
        self.db = db
        self.assets = assets
        self.max_shots = max_shots  # live shots per project
        self.max_caption_chars = max_caption_chars

    # Scenes ------------------------------------------------------------------------------------------------------

    def add_scene(self, project_id: int, caption: str = "", position: int | None = None) -> SceneView:
        text = check.caption(caption or "", "scene caption", allow_empty=True, limit=self.max_caption_chars)
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            scenes = live_scenes(session, project.id)
            index = self._insert_index(position, len(scenes), "scene position")
            scene = models.Scene(project_id=project.id, position=index, caption=text)
            session.add(scene)
            scenes.insert(index, scene)
            self._renumber(scenes)
            session.flush()
            return scene_view(scene)

    def update_scene(self, scene_id: int, caption: str | None = None) -> SceneView:
        with self.db.unit_of_work() as session:
            scene = self._scene(session, scene_id)
            if caption is not None:
                text = check.caption(caption, "scene caption", allow_empty=True, limit=self.max_caption_chars)
                if scene.caption != text:
                    scene.caption = text
            session.flush()
            return scene_view(scene)

    def get_scene(self, scene_id: int) -> SceneView:
        with self.db.unit_of_work(read_only=True) as session:
            scene = session.scalars(
                select(models.Scene).where(models.Scene.id == scene_id).options(*_SCENE_LOADS)
            ).first()
            if scene is None:
                raise NotFoundError(f"scene {scene_id} does not exist")
            return scene_view(scene)

    def delete_scene(self, scene_id: int) -> SceneView:
        """Move the scene (with its shots and takes) to the bin."""
        with self.db.unit_of_work() as session:
            scene = self._scene(session, scene_id)
            self._to_bin(scene, lambda: live_scenes(session, scene.project_id))
            session.flush()
            return scene_view(scene)

    def restore_scene(self, scene_id: int) -> SceneView:
        with self.db.unit_of_work() as session:
            scene = self._scene(session, scene_id)
            if scene.deleted_at is not None:
                self._check_room(session, scene.project_id, sum(1 for shot in scene.shots if shot.deleted_at is None))
            self._from_bin(scene, lambda: live_scenes(session, scene.project_id))
            session.flush()
            return scene_view(scene)

    def reorder_scenes(self, project_id: int, ordered_scene_ids: Sequence[int]) -> list[SceneView]:
        with self.db.unit_of_work() as session:
            scenes = live_scenes(session, project_id)
            by_id = {s.id: s for s in scenes}
            if sorted(ordered_scene_ids) != sorted(by_id) or len(set(ordered_scene_ids)) != len(ordered_scene_ids):
                raise ConflictError("the project's scenes changed since this order was made; reload and try again")
            self._renumber([by_id[i] for i in ordered_scene_ids])
            session.flush()
            return [scene_view(by_id[i]) for i in ordered_scene_ids]

    def list_scenes(self, project_id: int) -> list[SceneView]:
        """Live scenes in order, each with its live shots in order."""
        with self.db.unit_of_work(read_only=True) as session:
            self._project(session, project_id)
            return [scene_view(s) for s in live_scenes(session, project_id, with_shots=True)]

    # Shots -------------------------------------------------------------------------------------------------------

    def add_shot(
        self,
        scene_id: int,
        caption: str,
        num_frames: int | None = None,
        characters: Iterable[int | str] = (),
        shot_size: str | None = None,
        camera_move: str | None = None,
        transition: str | None = None,
        transition_seconds: float = 0.0,
        position: int | None = None,
        seed: int | None = None,
        trim_in: int = 0,
        trim_out: int = 0,
    ) -> ShotView:
        text = check.caption(caption, "shot caption", limit=self.max_caption_chars)
        with self.db.unit_of_work() as session:
            scene = self._scene(session, scene_id)
            project = scene.project
            self._check_room(session, project.id, 1)
            preset = check.preset_of(project.preset)
            frames = check.frames(num_frames if num_frames is not None else preset.default_frames, preset)
            transition_type, seconds = check_transition(transition, transition_seconds)
            shot = models.Shot(
                scene_id=scene.id,
                caption=text,
                num_frames=frames,
                shot_size=check_choice(shot_size, SHOT_SIZES, "shot size"),
                camera_move=check_choice(camera_move, CAMERA_MOVES, "camera move"),
                transition_type=transition_type,
                transition_seconds=seconds,
                seed=check.seed(seed),
                position=0,
            )
            shot.trim_in, shot.trim_out = self._trims(trim_in, trim_out, frames)
            shot.characters = self._characters(session, project.id, characters)
            shots = self._live_shots(session, scene.id)
            index = self._insert_index(position, len(shots), "shot position")
            session.add(shot)
            shots.insert(index, shot)
            self._renumber(shots)
            session.flush()
            return shot_view(shot, project.id)

    def get_shot(self, shot_id: int) -> ShotView:
        with self.db.unit_of_work(read_only=True) as session:
            return shot_view(self._shot(session, shot_id))

    def update_shot(self, shot_id: int, **fields) -> ShotView:
        """Edit caption, num_frames, characters, shot_size, camera_move, transition (type), transition_seconds,
        seed, trim_in, trim_out. Only the fields given change."""
        unknown = set(fields) - set(SHOT_FIELDS)
        if unknown:
            raise ValidationError(f"unknown shot field(s) {', '.join(sorted(unknown))}; use {', '.join(SHOT_FIELDS)}")
        with self.db.unit_of_work() as session:
            shot = self._shot(session, shot_id)
            project = shot.scene.project
            preset = check.preset_of(project.preset)
            values: dict = {}
            if "caption" in fields:
                values["caption"] = check.caption(fields["caption"], "shot caption", limit=self.max_caption_chars)
            if "num_frames" in fields:
                values["num_frames"] = check.frames(fields["num_frames"], preset)
            if "shot_size" in fields:
                values["shot_size"] = check_choice(fields["shot_size"], SHOT_SIZES, "shot size")
            if "camera_move" in fields:
                values["camera_move"] = check_choice(fields["camera_move"], CAMERA_MOVES, "camera move")
            if "seed" in fields:
                values["seed"] = check.seed(fields["seed"])
            kind = fields.get("transition", fields.get("transition_type", shot.transition_type))
            if any(key in fields for key in ("transition", "transition_type", "transition_seconds")):
                seconds = fields.get("transition_seconds", shot.transition_seconds)
                if kind != "cut" and shot.transition_type == "cut" and "transition_seconds" not in fields:
                    seconds = 0.5  # switching a cut to a dissolve/fade without a duration: a common default
                values["transition_type"], values["transition_seconds"] = check_transition(kind, seconds)
            frames = values.get("num_frames", shot.num_frames)
            if any(key in fields for key in ("trim_in", "trim_out", "num_frames")):
                values["trim_in"], values["trim_out"] = self._trims(
                    fields.get("trim_in", shot.trim_in), fields.get("trim_out", shot.trim_out), frames
                )
            for key, value in values.items():
                if getattr(shot, key) != value:
                    setattr(shot, key, value)
            if "characters" in fields:
                wanted = self._characters(session, project.id, fields["characters"] or ())
                if [c.id for c in wanted] != [c.id for c in shot.characters]:
                    shot.characters = wanted
                    shot.updated_at = utcnow()
            session.flush()
            return shot_view(shot, project.id)

    def duplicate_shot(self, shot_id: int) -> ShotView:
        """A copy right after the original, without takes (it has not been generated yet)."""
        with self.db.unit_of_work() as session:
            original = self._shot(session, shot_id)
            if original.deleted_at is not None:
                raise ConflictError(f"shot {shot_id} is in the bin; restore it before duplicating")
            self._check_room(session, original.scene.project_id, 1)
            copy = models.Shot(
                scene_id=original.scene_id,
                caption=original.caption,
                num_frames=original.num_frames,
                shot_size=original.shot_size,
                camera_move=original.camera_move,
                transition_type=original.transition_type,
                transition_seconds=original.transition_seconds,
                trim_in=original.trim_in,
                trim_out=original.trim_out,
                seed=original.seed,
                position=0,
            )
            copy.characters = list(original.characters)
            shots = self._live_shots(session, original.scene_id)
            session.add(copy)
            shots.insert(shots.index(original) + 1, copy)
            self._renumber(shots)
            session.flush()
            return shot_view(copy)

    def delete_shot(self, shot_id: int) -> ShotView:
        """To the bin; its takes stay until the bin is emptied."""
        with self.db.unit_of_work() as session:
            shot = self._shot(session, shot_id)
            self._to_bin(shot, lambda: self._live_shots(session, shot.scene_id))
            session.flush()
            return shot_view(shot)

    def restore_shot(self, shot_id: int) -> ShotView:
        """Back at its old position (or the end of the scene); a shot of a binned scene brings its scene back."""
        with self.db.unit_of_work() as session:
            shot = self._shot(session, shot_id)
            scene = shot.scene
            if shot.deleted_at is not None or scene.deleted_at is not None:
                live_in_scene = sum(1 for other in scene.shots if other.deleted_at is None and other.id != shot.id)
                self._check_room(session, scene.project_id, 1 + (live_in_scene if scene.deleted_at else 0))
            self._from_bin(scene, lambda: live_scenes(session, scene.project_id))
            self._from_bin(shot, lambda: self._live_shots(session, scene.id))
            session.flush()
            return shot_view(shot)

    def list_bin(self, project_id: int) -> BinView:
        with self.db.unit_of_work(read_only=True) as session:
            self._project(session, project_id)
            scenes = session.scalars(
                select(models.Scene)
                .where(models.Scene.project_id == project_id, models.Scene.deleted_at.is_not(None))
                .order_by(models.Scene.deleted_at, models.Scene.id)
            ).all()
            shots = session.scalars(
                select(models.Shot)
                .join(models.Scene)
                .where(
                    models.Scene.project_id == project_id,
                    models.Scene.deleted_at.is_(None),
                    models.Shot.deleted_at.is_not(None),
                )
                .order_by(models.Shot.deleted_at, models.Shot.id)
            ).all()
            return BinView(
                scenes=tuple(scene_view(s, include_binned_shots=True) for s in scenes),
                shots=tuple(shot_view(s, project_id) for s in shots),
            )

    def empty_bin(self, project_id: int) -> tuple[int, int, int]:
        """Remove binned scenes and shots for good, with their takes and now-unused files. Returns counts
        (scenes, shots, takes) removed."""
        with self.db.unit_of_work() as session:
            self._project(session, project_id)
            scenes = session.scalars(
                select(models.Scene).where(models.Scene.project_id == project_id, models.Scene.deleted_at.is_not(None))
            ).all()
            shots = session.scalars(
                select(models.Shot)
                .join(models.Scene)
                .where(
                    models.Scene.project_id == project_id,
                    (models.Shot.deleted_at.is_not(None)) | (models.Scene.deleted_at.is_not(None)),
                )
            ).all()
            takes = [t for s in shots for t in s.takes]
            asset_ids = {a for t in takes for a in (t.video_asset_id, t.thumbnail_asset_id, t.latents_asset_id) if a}
            for shot in shots:
                shot.chosen_take_id = None
            session.flush()
            for shot in shots:
                session.delete(shot)
            for scene in scenes:
                session.delete(scene)
            session.flush()
            self.assets.delete_unreferenced(session, asset_ids)
            return len(scenes), len(shots), len(takes)

    def reorder_shots(self, scene_id: int, ordered_shot_ids: Sequence[int]) -> SceneView:
        """Set the order of a scene's live shots. The list must be exactly those shots, else ConflictError."""
        with self.db.unit_of_work() as session:
            scene = self._scene(session, scene_id)
            shots = self._live_shots(session, scene.id)
            by_id = {s.id: s for s in shots}
            ids = list(ordered_shot_ids)
            if sorted(ids) != sorted(by_id) or len(set(ids)) != len(ids):
                raise ConflictError(
                    f"the shots of scene {scene.position + 1} changed since this order was made "
                    f"(expected {len(by_id)} shots); reload and try again"
                )
            self._renumber([by_id[i] for i in ids])
            session.flush()
            return scene_view(scene)

    def move_shot(self, shot_id: int, to_scene_id: int, position: int | None = None) -> ShotView:
        """Move a live shot to another scene of the same project (or within its scene) at `position`."""
        with self.db.unit_of_work() as session:
            shot = self._shot(session, shot_id)
            if shot.deleted_at is not None:
                raise ConflictError(f"shot {shot_id} is in the bin; restore it before moving it")
            target = self._scene(session, to_scene_id)
            source = shot.scene
            if target.project_id != source.project_id:
                raise ValidationError("a shot can only move to a scene of its own project")
            if target.deleted_at is not None:
                raise ConflictError("the target scene is in the bin; restore it first")
            source_shots = [s for s in self._live_shots(session, source.id) if s.id != shot.id]
            target_shots = source_shots if target.id == source.id else self._live_shots(session, target.id)
            index = self._insert_index(position, len(target_shots), "shot position")
            shot.scene_id = target.id
            shot.scene = target
            target_shots.insert(index, shot)
            self._renumber(source_shots)
            self._renumber(target_shots)
            session.flush()
            return shot_view(shot, target.project_id)

    def film_shots(self, project_id: int) -> list[ShotView]:
        """Every live shot of the project in film order (scene by scene)."""
        with self.db.unit_of_work(read_only=True) as session:
            self._project(session, project_id)
            return [shot_view(shot, project_id) for shot in film_shot_rows(session, project_id)]

    def outline(self, project_id: int) -> list[tuple[int, str, list[tuple[int, str]]]]:
        """The live storyboard as (scene id, caption, [(shot id, caption), ...]) in film order: what an import
        matches a file against, in two queries and no views."""
        with self.db.unit_of_work(read_only=True) as session:
            self._project(session, project_id)
            scenes = session.execute(
                select(models.Scene.id, models.Scene.caption)
                .where(models.Scene.project_id == project_id, models.Scene.deleted_at.is_(None))
                .order_by(models.Scene.position, models.Scene.id)
            ).all()
            shots = session.execute(
                select(models.Shot.scene_id, models.Shot.id, models.Shot.caption)
                .join(models.Scene)
                .where(
                    models.Scene.project_id == project_id,
                    models.Scene.deleted_at.is_(None),
                    models.Shot.deleted_at.is_(None),
                )
                .order_by(models.Shot.scene_id, models.Shot.position, models.Shot.id)
            ).all()
            by_scene: dict[int, list[tuple[int, str]]] = {}
            for scene_id, shot_id, caption in shots:
                by_scene.setdefault(scene_id, []).append((shot_id, caption))
            return [(scene_id, caption, by_scene.get(scene_id, [])) for scene_id, caption in scenes]

    def apply_plan(self, project_id: int, scenes: Sequence[ScenePlan]) -> PlanResult:
        """Make the project's live storyboard exactly `scenes`, in that order, in one unit of work: planned scenes
        and shots with an id are updated (and moved) in place, those without are created, live scenes and shots the
        plan leaves out go to the bin with their takes. What a storyboard import writes.

        Linear in the shots and short: the project's scenes, shots and characters are read in a few queries, every
        item is checked before anything is written, changed rows are updated and new shots (with their characters)
        are inserted in bulk. A refused item raises PlanError naming it, and nothing is written.
        """
        result = PlanResult()
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            preset = check.preset_of(project.preset)
            live = list(
                session.scalars(
                    select(models.Scene)
                    .where(models.Scene.project_id == project_id, models.Scene.deleted_at.is_(None))
                    .order_by(models.Scene.position, models.Scene.id)
                )
            )
            scenes_by_id = {scene.id: scene for scene in live}
            # Shots as plain rows (column name -> value, plus "characters": sorted ids): two queries, no ORM objects.
            shots_by_id = self._live_shot_rows(session, project_id)
            live_shots_before: dict[int, list[dict[str, Any]]] = {}
            for shot in sorted(shots_by_id.values(), key=lambda s: (s["position"], s["id"])):
                live_shots_before.setdefault(shot["scene_id"], []).append(shot)
            characters = set(session.scalars(select(models.Character.id).filter_by(project_id=project_id)))

            # 1. Check every item before writing anything.
            captions: list[str] = []
            checked: list[list[dict[str, Any]]] = []
            planned = 0
            for scene_index, plan in enumerate(scenes):
                if plan.id is not None and plan.id not in scenes_by_id:
                    raise PlanError(f"scene {plan.id} is not a live scene of this project", scene_index)
                try:
                    captions.append(
                        check.caption(plan.caption, "scene caption", allow_empty=True, limit=self.max_caption_chars)
                    )
                except ValidationError as error:
                    raise PlanError(str(error), scene_index) from None
                rows: list[dict[str, Any]] = []
                for shot_index, shot_plan in enumerate(plan.shots):
                    planned += 1
                    try:
                        if planned > self.max_shots:
                            raise ValidationError(
                                f"a project holds at most {self.max_shots} shots (setting max_shots_per_project); "
                                "split the film into several projects"
                            )
                        if shot_plan.id is None:
                            rows.append(self._planned_shot(preset, characters, shot_plan.fields))
                        elif shot_plan.id not in shots_by_id:
                            raise ValidationError(f"shot {shot_plan.id} is not a live shot of this project")
                        else:
                            current = shots_by_id[shot_plan.id]
                            rows.append(self._shot_values(preset, characters, shot_plan.fields, current))
                    except ValidationError as error:
                        raise PlanError(str(error), scene_index, shot_index) from None
                checked.append(rows)

            # 2. Scenes: update, create at the end, bin what the plan leaves out; count a changed order.
            now = utcnow()
            wanted_scene_ids = {plan.id for plan in scenes if plan.id is not None}
            order_before = [scene.id for scene in live if scene.id in wanted_scene_ids]
            scene_rows: list[models.Scene] = []
            for plan, caption in zip(scenes, captions, strict=True):
                if plan.id is None:
                    scene = models.Scene(project_id=project_id, position=0, caption=caption)
                    session.add(scene)
                    result.scenes_created += 1
                else:
                    scene = scenes_by_id[plan.id]
                    if scene.caption != caption:
                        scene.caption = caption
                        result.scenes_updated += 1
                scene_rows.append(scene)
            for scene in live:
                if scene.id not in wanted_scene_ids:
                    scene.deleted_at = now
                    result.scenes_binned += 1
            if order_before + [None] * result.scenes_created != [plan.id for plan in scenes]:
                result.reordered += 1
            self._renumber(scene_rows)
            session.flush()  # new scenes get their ids

            # 3. Shots. The order a scene would have before its reorder (kept, moved in, new) against the plan's
            # counts a reorder, as separate edits would have.
            target = {
                shot.id: index for index, plan in enumerate(scenes) for shot in plan.shots if shot.id is not None
            }
            film: list[int | None] = []
            new_rows: list[dict[str, Any]] = []
            updates: dict[frozenset, list[dict[str, Any]]] = {}  # changed columns -> one executemany per set
            links: list[dict[str, int]] = []
            unlinks: list[dict[str, int]] = []
            for scene_index, (plan, scene, rows) in enumerate(zip(scenes, scene_rows, checked, strict=True)):
                kept = [s["id"] for s in live_shots_before.get(plan.id, ()) if target.get(s["id"]) == scene_index]
                moved_in = [p.id for p in plan.shots if p.id is not None and shots_by_id[p.id]["scene_id"] != plan.id]
                new_count = sum(1 for p in plan.shots if p.id is None)
                if kept + moved_in + [None] * new_count != [p.id for p in plan.shots]:
                    result.reordered += 1
                for position, (shot_plan, values) in enumerate(zip(plan.shots, rows, strict=True)):
                    if shot_plan.id is None:
                        new_rows.append({**values, "scene_id": scene.id, "position": position})
                        film.append(None)
                        continue
                    shot = shots_by_id[shot_plan.id]
                    changes = {k: v for k, v in values.items() if k != "characters" and shot[k] != v}
                    before_characters = shot["characters"]
                    if changes or values["characters"] != before_characters:
                        result.shots_updated += 1
                    if values["characters"] != before_characters:
                        unlinks += [
                            {"s": shot["id"], "c": c} for c in before_characters if c not in values["characters"]
                        ]
                        links += [
                            {"shot_id": shot["id"], "character_id": c}
                            for c in values["characters"]
                            if c not in before_characters
                        ]
                        changes["updated_at"] = now
                    if shot["scene_id"] != scene.id:
                        changes["scene_id"] = scene.id
                        result.shots_moved += 1
                    if shot["position"] != position:
                        changes["position"] = position
                    if changes:
                        updates.setdefault(frozenset(changes), []).append(
                            {**changes, "id": shot["id"], "updated_at": now}
                        )
                    film.append(shot["id"])
                for shot in live_shots_before.get(plan.id, ()):
                    if shot["id"] not in target:
                        updates.setdefault(frozenset({"deleted_at"}), []).append(
                            {"id": shot["id"], "deleted_at": now, "updated_at": now}
                        )
                        result.shots_binned += 1
            session.flush()
            # Existing shots first (moves, positions, bins): the new shots' ids are then found by their places.
            for rows in updates.values():
                session.execute(update(models.Shot), rows)
            if unlinks:
                table = models.shot_characters
                session.execute(
                    delete(table).where(table.c.shot_id == bindparam("s"), table.c.character_id == bindparam("c")),
                    unlinks,
                )
            if links:
                session.execute(insert(models.shot_characters), links)
            if new_rows:
                new_ids = self._insert_shots(session, project_id, new_rows, now)
                result.shots_created = len(new_ids)
                fresh = iter(new_ids)
                film = [shot_id if shot_id is not None else next(fresh) for shot_id in film]
            result.film_shot_ids = [shot_id for shot_id in film if shot_id is not None]
            session.expire_all()  # the scenes' shot lists do not know the shots inserted in bulk
        return result

    @staticmethod
    def _insert_shots(session, project_id: int, rows: list[dict[str, Any]], now) -> list[int]:
        """Insert new live shots (and their characters) in bulk; returns their ids in the order of `rows`.

        One executemany, then the ids read back by (scene, position): unique among a project's live shots once the
        plan is written, and portable (SQLite gives no RETURNING order for a many-row insert)."""
        character_lists = [row.pop("characters") for row in rows]
        for row in rows:
            row.setdefault("created_at", now)
            row.setdefault("updated_at", now)
        session.execute(insert(models.Shot), rows)
        placed = {
            (scene_id, position): shot_id
            for scene_id, position, shot_id in session.execute(
                select(models.Shot.scene_id, models.Shot.position, models.Shot.id)
                .join(models.Scene)
                .where(
                    models.Scene.project_id == project_id,
                    models.Scene.deleted_at.is_(None),
                    models.Shot.deleted_at.is_(None),
                )
            )
        }
        ids = [placed[(row["scene_id"], row["position"])] for row in rows]
        links = [
            {"shot_id": shot_id, "character_id": character_id}
            for shot_id, wanted in zip(ids, character_lists, strict=True)
            for character_id in wanted
        ]
        if links:
            session.execute(insert(models.shot_characters), links)
        return ids

    @staticmethod
    def _live_shot_rows(session, project_id: int) -> dict[int, dict[str, Any]]:
        """The project's live shots (in live scenes) as rows by id, with their sorted character ids."""
        shot = models.Shot
        live = (models.Scene.project_id == project_id, models.Scene.deleted_at.is_(None), shot.deleted_at.is_(None))
        columns = [getattr(shot, name) for name in ("id", "scene_id", "position", *_PLAN_COLUMNS)]
        rows = {
            row["id"]: {**row, "characters": []}
            for row in session.execute(select(*columns).join(models.Scene).where(*live)).mappings()
        }
        links = models.shot_characters
        for shot_id, character_id in session.execute(
            select(links.c.shot_id, links.c.character_id)
            .join(shot, shot.id == links.c.shot_id)
            .join(models.Scene)
            .where(*live)
            .order_by(links.c.shot_id, links.c.character_id)
        ):
            rows[shot_id]["characters"].append(character_id)
        return rows

    def _planned_shot(self, preset, characters: set[int], fields: dict[str, Any]) -> dict:
        """The column values of a new shot from a plan's fields, every value checked as `add_shot` checks it."""
        return self._shot_values(preset, characters, fields, None)

    def _shot_values(
        self, preset, characters: set[int], fields: dict[str, Any], current: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Checked column values (and `characters`, sorted ids) a shot must have: the plan's fields, else the
        current shot's values (a row of `_live_shot_rows`) or a new shot's defaults."""

        def base(name: str, default: Any) -> Any:
            return fields[name] if name in fields else (current[name] if current is not None else default)

        values: dict[str, Any] = {}
        caption = base("caption", None)
        values["caption"] = check.caption(caption, "shot caption", limit=self.max_caption_chars)
        values["num_frames"] = check.frames(base("num_frames", preset.default_frames), preset)
        values["shot_size"] = check_choice(base("shot_size", None), SHOT_SIZES, "shot size")
        values["camera_move"] = check_choice(base("camera_move", None), CAMERA_MOVES, "camera move")
        values["seed"] = check.seed(base("seed", None))
        kind = fields.get("transition", current["transition_type"] if current is not None else "cut")
        seconds = fields.get("transition_seconds", current["transition_seconds"] if current is not None else 0.0)
        values["transition_type"], values["transition_seconds"] = check_transition(kind, seconds)
        values["trim_in"], values["trim_out"] = self._trims(
            base("trim_in", 0), base("trim_out", 0), values["num_frames"]
        )
        if "characters" in fields:
            wanted = sorted(set(fields["characters"]))
            unknown = [c for c in wanted if c not in characters]
            if unknown:
                raise ValidationError(f"unknown character {unknown[0]!r} in this project; add it first")
            values["characters"] = wanted
        else:
            values["characters"] = list(current["characters"]) if current is not None else []
        return values

    # Internals ---------------------------------------------------------------------------------------------------

    def _check_room(self, session, project_id: int, adding: int) -> None:
        """Refuse a change that would take the project's live shots over `max_shots`."""
        count = session.scalar(
            select(func.count(models.Shot.id))
            .join(models.Scene)
            .where(
                models.Scene.project_id == project_id,
                models.Scene.deleted_at.is_(None),
                models.Shot.deleted_at.is_(None),
            )
        )
        if count + adding > self.max_shots:
            raise ValidationError(
                f"the project already has {count} shots, the most it may hold (setting max_shots_per_project); "
                "delete some shots or start another project"
            )

    @staticmethod
    def _renumber(items: Sequence[models.Scene] | Sequence[models.Shot]) -> None:
        for index, item in enumerate(items):
            if item.position != index:
                item.position = index

    @classmethod
    def _to_bin(cls, item: models.Scene | models.Shot, live: Callable[[], list]) -> None:
        """Bin a live scene or shot and close the gap among `live()`, its live siblings once it is binned."""
        if item.deleted_at is None:
            item.deleted_at = utcnow()
            cls._renumber(live())

    @classmethod
    def _from_bin(cls, item: models.Scene | models.Shot, live: Callable[[], list]) -> None:
        """Bring a binned scene or shot back among `live()`, its live siblings, at its old position (or the end)."""
        if item.deleted_at is not None:
            siblings = live()
            item.deleted_at = None
            siblings.insert(min(item.position, len(siblings)), item)
            cls._renumber(siblings)

    @staticmethod
    def _insert_index(position: int | None, count: int, what: str) -> int:
        if position is None:
            return count
        return check.integer(position, what, 0, count)

    @staticmethod
    def _trims(trim_in: object, trim_out: object, frames: int) -> tuple[int, int]:
        start = check.integer(trim_in, "trim_in", 0, frames - 1)
        end = check.integer(trim_out, "trim_out", 0, frames - 1)
        if start + end >= frames:
            raise ValidationError(
                f"trim_in + trim_out ({start} + {end}) must leave at least one of the shot's {frames} frames"
            )
        return start, end

    @staticmethod
    def _characters(session, project_id: int, wanted: Iterable[int | str]) -> list[models.Character]:
        if isinstance(wanted, str | int):
            wanted = [wanted]
        available = session.scalars(select(models.Character).where(models.Character.project_id == project_id)).all()
        by_id = {c.id: c for c in available}
        by_name = {c.name.lower(): c for c in available}
        chosen: list[models.Character] = []
        for item in wanted:
            character = by_id.get(item) if isinstance(item, int) else by_name.get(str(item).strip().lower())
            if character is None:
                names = ", ".join(c.name for c in available) or "none yet"
                raise ValidationError(
                    f"unknown character {item!r} in this project (characters: {names}); add it first"
                )
            if character not in chosen:
                chosen.append(character)
        return sorted(chosen, key=lambda c: c.id)

    @staticmethod
    def _project(session, project_id: int) -> models.Project:
        return get_or_not_found(session, models.Project, project_id, "project")

    @staticmethod
    def _scene(session, scene_id: int) -> models.Scene:
        return get_or_not_found(session, models.Scene, scene_id, "scene")

    @staticmethod
    def _shot(session, shot_id: int) -> models.Shot:
        return get_or_not_found(session, models.Shot, shot_id, "shot")

    @staticmethod
    def _live_shots(session, scene_id: int) -> list[models.Shot]:
        return list(
            session.scalars(
                select(models.Shot)
                .where(models.Shot.scene_id == scene_id, models.Shot.deleted_at.is_(None))
                .order_by(models.Shot.position, models.Shot.id)
            )
        )
