"""CLI commands of the export area (registered by studio/cli.py):

    python -m studio export PROJECT --out film.mp4 [--music FILE] [--music-fade S] [--placeholders] [--reencode]
    python -m studio bundle PROJECT --out project.zip
    python -m studio import-bundle project.zip [--name NEW_NAME]

PROJECT is a project name or id. `export` writes film.otio beside the film and records the export in the studio.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    export = subparsers.add_parser("export", help="export a project's film (MP4) and its edit (OpenTimelineIO)")
    export.add_argument("project", help="project name or id")
    export.add_argument("--out", required=True, type=Path, help="the film, .mp4 (the .otio is written beside it)")
    export.add_argument("--music", type=Path, help="music track (trimmed or looped to the film)")
    export.add_argument("--music-fade", type=float, default=1.0, help="music fade-out in seconds (default 1.0)")
    export.add_argument(
        "--placeholders", action="store_true", help="show a card for shots without a take instead of refusing"
    )
    export.add_argument(
        "--reencode", action="store_true", help="always re-encode, even when the takes could be joined as they are"
    )
    export.set_defaults(func=export_command)

    bundle = subparsers.add_parser("bundle", help="write a project bundle: storyboard, every row, every file (zip)")
    bundle.add_argument("project", help="project name or id")
    bundle.add_argument("--out", required=True, type=Path, help="the bundle, .zip")
    bundle.set_defaults(func=bundle_command)

    load = subparsers.add_parser("import-bundle", help="recreate a project from a bundle")
    load.add_argument("bundle", type=Path, help="a .zip written by `bundle`")
    load.add_argument("--name", help="import under this project name (when the bundled name is taken)")
    load.set_defaults(func=import_bundle_command)


def _refusals() -> tuple[type[BaseException], ...]:
    from studio.export.film import ExportError
    from studio.services.errors import ServiceError

    return ExportError, ServiceError, FileNotFoundError


def _fail(error: BaseException) -> int:
    print(f"error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
    return 1


def export_command(args, services) -> int:
    from studio.export.jobs import export_project

    last_percent = -1

    def progress(done: int, total: int) -> None:
        nonlocal last_percent
        percent = 100 * done // total
        if percent >= last_percent + 10 or done == total:
            last_percent = percent
            print(f"  {done}/{total} frames", file=sys.stderr)

    try:
        project = services.projects.find(args.project)
        outcome = export_project(
            services,
            project.id,
            args.out,
            music=args.music,
            music_fade_seconds=args.music_fade,
            placeholder=args.placeholders,
            allow_fast_path=not args.reencode,
            progress=progress,
        )
    except _refusals() as error:
        return _fail(error)
    result = outcome.result
    print(
        f"wrote {outcome.film_path} ({result.frames} frames, {result.duration:.3f} s at {result.fps:g} fps, "
        f"{result.width}x{result.height}, {result.method}) and {outcome.timeline_path}"
    )
    return 0


def bundle_command(args, services) -> int:
    from studio.export.bundle import export_bundle

    try:
        project = services.projects.find(args.project)
        report = export_bundle(services, project.id, args.out)
    except _refusals() as error:
        return _fail(error)
    print(
        f"wrote {report.path}: project {report.project_name!r}, {sum(report.rows.values())} rows, "
        f"{report.assets} files ({report.asset_bytes / 1e6:.1f} MB)"
    )
    return 0


def import_bundle_command(args, services) -> int:
    from studio.export.bundle import import_bundle

    try:
        report = import_bundle(services, args.bundle, name=args.name)
    except _refusals() as error:
        return _fail(error)
    print(
        f"imported project {report.project_name!r} (id {report.project_id}): {sum(report.rows.values())} rows, "
        f"{report.assets} files"
    )
    return 0
