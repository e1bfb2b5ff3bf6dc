"""Takes: every generation of a shot is kept (numbered 1, 2, ... per shot); one is the shot's chosen take."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from studio.db import models
from studio.db.engine import Database
from studio.db.models import utcnow
from studio.services import validation as check
from studio.services.assets import AssetStore
from studio.services.convert import take_view
from studio.services.errors import NotFoundError, ValidationError, get_or_not_found
from studio.services.views import TakeView


def _json(value, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValidationError(f"{what} must be JSON data: {error}") from None


def take_drift(caption: str, num_frames: int, params: dict | None) -> str | None:
    """How a take differs from its shot as the shot now stands, in a film-maker's words, or None when it matches.

    A take keeps the frames and caption it was made from: editing the shot afterwards (or choosing an older take)
    leaves the film showing something the card no longer says. Takes from before `shot_caption` was recorded are
    compared on their length only."""
    params = params or {}
    differences = []
    made_frames = params.get("num_frames")
    if isinstance(made_frames, int) and made_frames != num_frames:
        differences.append(f"take is {made_frames} frames, the shot {num_frames}")
    made_caption = params.get("shot_caption")
    if isinstance(made_caption, str) and made_caption != caption:
        differences.append("take made from another caption")
    return "; ".join(differences) or None


class TakeService:
    def __init__(self, db: Database, assets: AssetStore) -> None:
        self.db = db
        self.assets = assets

    def add_take(
        self,
        shot_id: int,
        job_id: int | None,
        video: bytes,
        thumbnail: bytes,
        latents: bytes | None,
        seed: int,
        params: dict,
        identity_scores: dict | None = None,
        choose: bool = False,
    ) -> TakeView:
        """Store a new take (files and row in one unit of work). The first take of a shot becomes its chosen take,
        and so does any take stored with `choose` (a generation the film-maker asked for: the card shows it, the
        earlier takes stay one click away).

        Never overwrites: a take of a shot that was binned meanwhile is still kept (restoring the shot shows it).
        """
        if not video:
            raise ValidationError("a take needs its video bytes")
        if not thumbnail:
            raise ValidationError("a take needs its thumbnail bytes")
        take_seed = check.seed(seed)
        if take_seed is None:
            raise ValidationError("a take needs the seed it was generated with")
        _json(params, "take params")
        if identity_scores is not None:
            _json(identity_scores, "identity scores")
        with self.db.unit_of_work() as session:
            shot = get_or_not_found(session, models.Shot, shot_id, "shot")
            if job_id is not None and session.get(models.Job, job_id) is None:
                raise NotFoundError(f"job {job_id} does not exist")
            # Lock the shot's row on PostgreSQL so two workers finishing takes of one shot number them in turn.
            if self.db.dialect == "postgresql":
                session.execute(select(models.Shot.id).where(models.Shot.id == shot_id).with_for_update())
            number = (
                session.scalar(select(func.max(models.Take.number)).where(models.Take.shot_id == shot_id)) or 0
            ) + 1
            stem = f"shot{shot_id}-take{number}"
            take = models.Take(
                shot_id=shot_id,
                number=number,
                job_id=job_id,
                video_asset_id=self.assets.add_bytes(session, video, "video", "video/mp4", f"{stem}.mp4").id,
                thumbnail_asset_id=self.assets.add_bytes(
                    session, thumbnail, "thumbnail", _image_mime(thumbnail), f"{stem}.png"
                ).id,
                latents_asset_id=(
                    self.assets.add_bytes(
                        session, latents, "latents", "application/x-safetensors", f"{stem}.safetensors"
                    ).id
                    if latents
                    else None
                ),
                seed=take_seed,
                params=dict(params),
                identity_scores=dict(identity_scores) if identity_scores is not None else None,
            )
            session.add(take)
            session.flush()
            if shot.chosen_take_id is None or choose:
                shot.chosen_take_id = take.id
                session.flush()
            return take_view(take, shot.chosen_take_id)

    def list_takes(self, shot_id: int, in_bin: bool = False) -> list[TakeView]:
        """Oldest first (take 1, 2, ...): the shot's takes, or with `in_bin` those in its take bin."""
        with self.db.unit_of_work(read_only=True) as session:
            shot = get_or_not_found(session, models.Shot, shot_id, "shot")
            return [take_view(t, shot.chosen_take_id) for t in shot.takes if (t.deleted_at is not None) == in_bin]

    def delete_take(self, take_id: int) -> TakeView:
        """Put a take in its shot's bin (files kept: `restore_take` brings it back). A chosen take hands the choice to
        the newest take left, or the shot has none, as before its first take."""
        with self.db.unit_of_work() as session:
            take = self._take(session, take_id)
            if take.deleted_at is None:
                take.deleted_at = utcnow()
                shot = take.shot
                if shot.chosen_take_id == take.id:
                    left = [t for t in shot.takes if t.deleted_at is None and t.id != take.id]
                    shot.chosen_take_id = max(left, key=lambda t: t.number).id if left else None
                session.flush()
            return take_view(take, take.shot.chosen_take_id)

    def restore_take(self, take_id: int) -> TakeView:
        """Take a take out of the bin; it becomes the chosen take of a shot that has none."""
        with self.db.unit_of_work() as session:
            take = self._take(session, take_id)
            take.deleted_at = None
            if take.shot.chosen_take_id is None:
                take.shot.chosen_take_id = take.id
            session.flush()
            return take_view(take, take.shot.chosen_take_id)

    def get(self, take_id: int) -> TakeView:
        with self.db.unit_of_work(read_only=True) as session:
            take = self._take(session, take_id)
            return take_view(take, take.shot.chosen_take_id)

    def choose_take(self, shot_id: int, take_id: int) -> TakeView:
        with self.db.unit_of_work() as session:
            take = self._take(session, take_id)
            if take.shot_id != shot_id:
                raise ValidationError(f"take {take_id} belongs to shot {take.shot_id}, not shot {shot_id}")
            if take.deleted_at is not None:
                raise ValidationError(f"take {take.number} is in the bin; restore it before choosing it")
            if take.shot.chosen_take_id != take.id:
                take.shot.chosen_take_id = take.id
            session.flush()
            return take_view(take, take.id)

    def chosen_take(self, shot_id: int) -> TakeView | None:
        """The shot's chosen take, or None when it has no take yet."""
        with self.db.unit_of_work(read_only=True) as session:
            shot = get_or_not_found(session, models.Shot, shot_id, "shot")
            if shot.chosen_take_id is None:
                return None
            return take_view(session.get(models.Take, shot.chosen_take_id), shot.chosen_take_id)

    def chosen_take_drift(self, project_id: int) -> dict[int, str]:
        """Live shot id -> how its chosen take differs from it (`take_drift`), for the shots where it does; one
        query for the whole project."""
        rows = self._live_chosen_takes(
            project_id, models.Shot.id, models.Shot.caption, models.Shot.num_frames, models.Take.params
        )
        drift = {shot_id: take_drift(caption, frames, params) for shot_id, caption, frames, params in rows}
        return {shot_id: text for shot_id, text in drift.items() if text}

    def chosen_take_videos(self, project_id: int) -> dict[int, int]:
        """Live shot id -> the video asset of its chosen take, for the shots that have one; one query for the whole
        project (the storyboard's player plays them in film order)."""
        rows = self._live_chosen_takes(project_id, models.Shot.id, models.Take.video_asset_id)
        return {shot_id: asset_id for shot_id, asset_id in rows}

    def _live_chosen_takes(self, project_id: int, *columns) -> list:
        """`columns` of every live shot of the project that has a chosen take, joined with that take (one query)."""
        with self.db.unit_of_work(read_only=True) as session:
            return session.execute(
                select(*columns)
                .join(models.Take, models.Take.id == models.Shot.chosen_take_id)
                .join(models.Scene, models.Scene.id == models.Shot.scene_id)
                .where(
                    models.Scene.project_id == project_id,
                    models.Shot.deleted_at.is_(None),
                    models.Scene.deleted_at.is_(None),
                )
            ).all()

    def set_identity_scores(self, take_id: int, scores: dict) -> TakeView:
        _json(scores, "identity scores")
        with self.db.unit_of_work() as session:
            take = self._take(session, take_id)
            take.identity_scores = dict(scores)
            session.flush()
            return take_view(take, take.shot.chosen_take_id)

    @staticmethod
    def _take(session, take_id: int) -> models.Take:
        return get_or_not_found(session, models.Take, take_id, "take")


def _image_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValidationError("a take's thumbnail must be a PNG, JPEG or WEBP image")
