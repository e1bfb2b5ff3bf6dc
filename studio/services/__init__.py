"""Studio services: every read and write of the UI, CLI and worker goes through these (no gradio here).

`build_services(settings)` migrates the database (backing it up first), sweeps orphan assets, and returns the
`Services` bundle. Each service method is one unit of work and returns frozen views (`studio.services.views`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from studio.config import Settings
from studio.db.engine import Database
from studio.db.migrate import upgrade
from studio.services.assets import AssetStore
from studio.services.exports import ExportService
from studio.services.jobs import JobService
from studio.services.projects import ProjectService
from studio.services.storyboard import StoryboardService
from studio.services.takes import TakeService
from studio.startup import ensure_data_dir, ensure_sqlite_folder

if TYPE_CHECKING:
    from studio.characters.records import CharacterService

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    assets: AssetStore
    projects: ProjectService
    characters: CharacterService
    storyboard: StoryboardService
    takes: TakeService
    jobs: JobService
    exports: ExportService

    def close(self) -> None:
        self.db.dispose()


def build_services(settings: Settings, migrate: bool = True, sweep: bool = True) -> Services:
    """Open the studio's database and asset store; `migrate`/`sweep` are the start-up duties (on by default)."""
    # The character records live with the rest of the character area and import this package's modules (views,
    # validation, errors): imported here, not at the top, so that either package can be imported first.
    from studio.characters.records import CharacterService

    ensure_data_dir(settings.data_dir)
    url = settings.resolved_database_url
    ensure_sqlite_folder(url, settings.data_dir)
    if migrate:
        backup = upgrade(url, backup_dir=settings.backups_dir)
        if backup is not None:
            logger.info("database backed up to %s before migrating", backup)
    db = Database(url)
    assets = AssetStore(db, settings.assets_dir, settings.upload_max_bytes, settings.image_max_pixels)
    services = Services(
        settings=settings,
        db=db,
        assets=assets,
        projects=ProjectService(db, settings.model_preset, assets),
        characters=CharacterService(db, assets),
        storyboard=StoryboardService(db, assets, settings.max_shots_per_project, settings.caption_max_chars),
        takes=TakeService(db, assets),
        jobs=JobService(db),
        exports=ExportService(db, assets),
    )
    dead = assets.sweep_dead_writers()  # cheap (the store's top level), and safe while other writers run
    if dead:
        logger.info("removed %d temp files of writers that died mid-write", dead)
    if sweep:
        files, rows = assets.sweep_orphans()
        if files or rows:
            logger.warning("start-up sweep removed %d orphan files and %d rows without files", files, rows)
    return services
