"""Exports of a project's film: settings used, the video and the OpenTimelineIO file, stored as assets."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from studio.db import models
from studio.db.engine import Database
from studio.services.assets import AssetStore
from studio.services.convert import export_view
from studio.services.errors import NotFoundError, ValidationError, get_or_not_found
from studio.services.views import ExportView


class ExportService:
    def __init__(self, db: Database, assets: AssetStore) -> None:
        self.db = db
        self.assets = assets

    def create(
        self,
        project_id: int,
        job_id: int | None,
        settings: dict,
        video: bytes | Path | str,
        timeline: bytes | None = None,
    ) -> ExportView:
        """Store the film (bytes or a file path, streamed) and its timeline with the row, in one unit of work."""
        try:
            json.dumps(settings, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValidationError(f"export settings must be JSON data: {error}") from None
        with self.db.unit_of_work() as session:
            project = get_or_not_found(session, models.Project, project_id, "project")
            if job_id is not None and session.get(models.Job, job_id) is None:
                raise NotFoundError(f"job {job_id} does not exist")
            name = f"{project.name}.mp4"
            if isinstance(video, bytes | bytearray):
                if not video:
                    raise ValidationError("the exported video is empty")
                video_asset = self.assets.add_bytes(session, bytes(video), "export", "video/mp4", name)
            else:
                video_asset = self.assets.add_file(session, Path(video), "export", "video/mp4", name)
            timeline_asset = None
            if timeline:
                timeline_asset = self.assets.add_bytes(
                    session, timeline, "timeline", "application/vnd.opentimelineio+json", f"{project.name}.otio"
                )
            export = models.Export(
                project_id=project_id,
                job_id=job_id,
                settings=dict(settings),
                video_asset_id=video_asset.id,
                timeline_asset_id=timeline_asset.id if timeline_asset else None,
            )
            session.add(export)
            session.flush()
            return export_view(export)

    def list(self, project_id: int) -> list[ExportView]:
        """Newest first."""
        with self.db.unit_of_work(read_only=True) as session:
            query = select(models.Export).where(models.Export.project_id == project_id)
            return [export_view(e) for e in session.scalars(query.order_by(models.Export.id.desc()))]

    def get(self, export_id: int) -> ExportView:
        with self.db.unit_of_work(read_only=True) as session:
            export = get_or_not_found(session, models.Export, export_id, "export")
            return export_view(export)
