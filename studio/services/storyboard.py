"""Scenes and shots: add, insert, duplicate, edit, reorder, move, delete to the bin, restore, empty the bin.

Positions are 0-based and dense among live (not binned) items: a scene's live shots are 0..n-1, a project's live
scenes are 0..m-1. Binned items keep their last position only as a hint for restoring. Deleting a shot keeps its
takes until the bin is emptied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from studio.db import models
from studio.db.engine import Database
from studio.db.models import TRANSITION_TYPES, utcnow
from studio.services import validation as check
from studio.services.assets import AssetStore
from studio.services.convert import scene_view, shot_view
from studio.services.errors import ConflictError, NotFoundError, ValidationError, get_or_not_found
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


def _choice(value: str | None, allowed: Sequence[str], what: str) -> str | None:
    if value is None or value == "":
        return None
    normalized = "-".join(str(value).strip().lower().replace("_", " ").split())
    if normalized not in allowed:
        raise ValidationError(f"unknown {what} {value!r}; use one of: {', '.join(allowed)}")
    return normalized


def _transition(kind: str | None, seconds: object) -> tuple[str, float]:
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


class StoryboardService:
    def __init__(self, db: Database, assets: AssetStore) -> None:
        self.db = db
        self.assets = assets

    # Scenes ------------------------------------------------------------------------------------------------------

    def add_scene(self, project_id: int, caption: str = "", position: int | None = None) -> SceneView:
        text = check.caption(caption or "", "scene caption", allow_empty=True)
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
                text = check.caption(caption, "scene caption", allow_empty=True)
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
        text = check.caption(caption, "shot caption")
        with self.db.unit_of_work() as session:
            scene = self._scene(session, scene_id)
            project = scene.project
            preset = check.preset_of(project.preset)
            frames = check.frames(num_frames if num_frames is not None else preset.default_frames, preset)
            transition_type, seconds = _transition(transition, transition_seconds)
            shot = models.Shot(
                scene_id=scene.id,
                caption=text,
                num_frames=frames,
                shot_size=_choice(shot_size, SHOT_SIZES, "shot size"),
                camera_move=_choice(camera_move, CAMERA_MOVES, "camera move"),
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
                values["caption"] = check.caption(fields["caption"], "shot caption")
            if "num_frames" in fields:
                values["num_frames"] = check.frames(fields["num_frames"], preset)
            if "shot_size" in fields:
                values["shot_size"] = _choice(fields["shot_size"], SHOT_SIZES, "shot size")
            if "camera_move" in fields:
                values["camera_move"] = _choice(fields["camera_move"], CAMERA_MOVES, "camera move")
            if "seed" in fields:
                values["seed"] = check.seed(fields["seed"])
            kind = fields.get("transition", fields.get("transition_type", shot.transition_type))
            if any(key in fields for key in ("transition", "transition_type", "transition_seconds")):
                seconds = fields.get("transition_seconds", shot.transition_seconds)
                if kind != "cut" and shot.transition_type == "cut" and "transition_seconds" not in fields:
                    seconds = 0.5  # switching a cut to a dissolve/fade without a duration: a common default
                values["transition_type"], values["transition_seconds"] = _transition(kind, seconds)
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

    # Internals ---------------------------------------------------------------------------------------------------

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
