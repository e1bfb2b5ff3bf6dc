"""Projects: name and generation settings (preset, size, fps, steps, guidance, negative prompt); bin and restore."""

from __future__ import annotations

from sqlalchemy import func, select

from studio.db import models
from studio.db.engine import Database
from studio.db.models import utcnow
from studio.services import validation as check
from studio.services.convert import project_view
from studio.services.errors import ConflictError, NotFoundError, ValidationError, get_or_not_found
from studio.services.views import ProjectView

SETTINGS_FIELDS = ("preset", "width", "height", "fps", "steps", "guidance", "negative_prompt", "acceleration")


def _validated_settings(values: dict, preset_name: str) -> dict:
    preset = check.preset_of(preset_name)
    out: dict = {"preset": preset.name}
    if "width" in values:
        out["width"] = check.side(values["width"], "width", preset)
    if "height" in values:
        out["height"] = check.side(values["height"], "height", preset)
    if "fps" in values:
        out["fps"] = check.integer(values["fps"], "fps", 1, 120)
    if "steps" in values:
        out["steps"] = check.integer(values["steps"], "steps", 1, check.MAX_STEPS)
    if "guidance" in values:
        out["guidance"] = check.number(values["guidance"], "guidance", 0.0, 50.0)
    if "negative_prompt" in values:
        out["negative_prompt"] = check.caption(values["negative_prompt"], "negative prompt", allow_empty=True)
    if "acceleration" in values:
        out["acceleration"] = check.acceleration(values["acceleration"])
    return out


def _few_step_defaults(fields: dict, values: dict, before: dict, preset) -> None:
    """An accelerator LoRA newly set brings the step count and guidance it is made for (4 steps, guidance 1: no
    unconditional pass); removing it brings the preset's back. Values given in the same call win."""
    from pipelines.acceleration import FEW_STEP_DEFAULTS

    after = values.get("acceleration", before).get("accelerator")
    if after == before.get("accelerator"):
        return
    steps, guidance = (
        (FEW_STEP_DEFAULTS.num_inference_steps, FEW_STEP_DEFAULTS.guidance_scale)
        if after
        else (preset.num_inference_steps, preset.guidance_scale)
    )
    if "steps" not in fields:
        values["steps"] = steps
    if "guidance" not in fields:
        values["guidance"] = guidance


class ProjectService:
    def __init__(self, db: Database, default_preset: str, assets=None) -> None:
        self.db = db
        self.default_preset = default_preset
        self.assets = assets  # AssetStore: files only this project used are removed when it is purged

    def create(self, name: str, preset: str | None = None, **settings_fields) -> ProjectView:
        unknown = set(settings_fields) - set(SETTINGS_FIELDS)
        if unknown:
            raise ValidationError(f"unknown project setting(s) {', '.join(sorted(unknown))}; use {SETTINGS_FIELDS}")
        project_name = check.name(name, "project name", check.MAX_PROJECT_NAME_CHARS)
        model = check.preset_of(preset or self.default_preset)
        values = {
            "width": model.width,
            "height": model.height,
            "fps": model.fps,
            "steps": model.num_inference_steps,
            "guidance": model.guidance_scale,
            "negative_prompt": model.default_negative_prompt,
            **{k: v for k, v in settings_fields.items() if v is not None},
        }
        fields = _validated_settings(values, model.name)
        _few_step_defaults({k: v for k, v in settings_fields.items() if v is not None}, fields, {}, model)
        with self.db.unit_of_work() as session:
            self._check_name_free(session, project_name)
            project = models.Project(name=project_name, **fields)
            session.add(project)
            session.flush()
            return project_view(project)

    def list(self, include_binned: bool = False) -> list[ProjectView]:
        with self.db.unit_of_work(read_only=True) as session:
            query = select(models.Project).order_by(models.Project.name)
            if not include_binned:
                query = query.where(models.Project.deleted_at.is_(None))
            return [project_view(p) for p in session.scalars(query)]

    def get(self, project_id: int) -> ProjectView:
        with self.db.unit_of_work(read_only=True) as session:
            return project_view(self._project(session, project_id))

    def get_by_name(self, name: str) -> ProjectView:
        with self.db.unit_of_work(read_only=True) as session:
            project = session.scalar(select(models.Project).where(models.Project.name == " ".join(name.split())))
            if project is None:
                raise NotFoundError(f"no project named {name!r}; `python -m studio project list` shows them")
            return project_view(project)

    def find(self, name_or_id: str | int) -> ProjectView:
        """What the CLI, the UI's address and storyboard titles accept: an int is an id; text is a name first, and
        only when no project has that name, digits are read as an id (so a film titled "1917" stays itself)."""
        if isinstance(name_or_id, int):
            return self.get(name_or_id)
        try:
            return self.get_by_name(name_or_id)
        except NotFoundError:
            if name_or_id.strip().isdigit():
                return self.get(int(name_or_id))
            raise

    def rename(self, project_id: int, name: str) -> ProjectView:
        project_name = check.name(name, "project name", check.MAX_PROJECT_NAME_CHARS)
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            if project.name != project_name:
                self._check_name_free(session, project_name)
                project.name = project_name
            session.flush()
            return project_view(project)

    def update_settings(self, project_id: int, **fields) -> ProjectView:
        unknown = set(fields) - set(SETTINGS_FIELDS)
        if unknown:
            raise ValidationError(f"unknown project setting(s) {', '.join(sorted(unknown))}; use {SETTINGS_FIELDS}")
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            preset_name = fields.get("preset") or project.preset
            merged = {"width": project.width, "height": project.height, **{k: v for k, v in fields.items()}}
            values = _validated_settings(merged, preset_name)
            _few_step_defaults(fields, values, dict(project.acceleration or {}), check.preset_of(preset_name))
            if values["preset"] != project.preset:
                self._check_shots_fit(session, project, preset_name)
            for key, value in values.items():
                if getattr(project, key) != value:
                    setattr(project, key, value)
            session.flush()
            return project_view(project)

    def delete(self, project_id: int) -> ProjectView:
        """Move to the bin (nothing is removed; `restore` brings it back)."""
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            if project.deleted_at is None:
                project.deleted_at = utcnow()
            session.flush()
            return project_view(project)

    def restore(self, project_id: int) -> ProjectView:
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            project.deleted_at = None
            session.flush()
            return project_view(project)

    def purge(self, project_id: int) -> int:
        """Remove a binned project for good: its characters, scenes, shots, takes, exports and the files nothing
        else uses. Its jobs stay in the history without a project. Returns the number of files removed."""
        with self.db.unit_of_work() as session:
            project = self._project(session, project_id)
            if project.deleted_at is None:
                raise ConflictError(f"project {project.name!r} is not in the bin; delete it first")
            asset_ids = self._asset_ids(session, project.id)
            session.delete(project)
            session.flush()
            return self.assets.delete_unreferenced(session, asset_ids) if self.assets is not None else 0

    @staticmethod
    def _asset_ids(session, project_id: int) -> set[int]:
        character_ids = select(models.Character.id).where(models.Character.project_id == project_id)
        shot_ids = select(models.Shot.id).join(models.Scene).where(models.Scene.project_id == project_id)
        ids: set[int] = set()
        for query in (
            select(models.ReferenceImage.asset_id).where(models.ReferenceImage.character_id.in_(character_ids)),
            select(models.ReferenceImage.crop_asset_id).where(models.ReferenceImage.character_id.in_(character_ids)),
            select(models.Adapter.weights_asset_id).where(models.Adapter.character_id.in_(character_ids)),
            select(models.Take.video_asset_id).where(models.Take.shot_id.in_(shot_ids)),
            select(models.Take.thumbnail_asset_id).where(models.Take.shot_id.in_(shot_ids)),
            select(models.Take.latents_asset_id).where(models.Take.shot_id.in_(shot_ids)),
            select(models.Export.video_asset_id).where(models.Export.project_id == project_id),
            select(models.Export.timeline_asset_id).where(models.Export.project_id == project_id),
        ):
            ids.update(i for i in session.scalars(query) if i is not None)
        return ids

    # Internals ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _project(session, project_id: int) -> models.Project:
        return get_or_not_found(session, models.Project, project_id, "project")

    @staticmethod
    def _check_name_free(session, name: str) -> None:
        taken = session.scalar(
            select(func.count()).select_from(models.Project).where(func.lower(models.Project.name) == name.lower())
        )
        if taken:
            raise ConflictError(f"a project named {name!r} already exists (perhaps in the bin); choose another name")

    @staticmethod
    def _check_shots_fit(session, project: models.Project, preset_name: str) -> None:
        preset = check.preset_of(preset_name)
        bad = session.scalars(
            select(models.Shot.num_frames)
            .join(models.Scene)
            .where(models.Scene.project_id == project.id, models.Shot.deleted_at.is_(None))
            .where((models.Shot.num_frames < preset.min_frames) | (models.Shot.num_frames > preset.max_frames))
        ).all()
        if bad:
            raise ValidationError(
                f"{len(bad)} shot(s) have frame counts outside {preset.min_frames}..{preset.max_frames} of preset "
                f"{preset.name}; change their frames first"
            )
