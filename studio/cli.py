"""`python -m studio [--data-dir D] [--db URL] COMMAND`: the studio without a browser.

Commands here: project (create/list/show), import, export-storyboard, render, settings. The feature areas' own
commands (jobs, export and bundles, characters) live in their `commands` modules, each with `register(subparsers)`
whose sub-parsers set `func=handler` with `handler(args, services) -> int`. Refusals print one line
`error: <reason>` to stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from studio.characters import commands as character_commands
from studio.config import SettingsError, add_settings_arguments, describe_settings, load_settings
from studio.config import settings_overrides_from_args as _overrides
from studio.export import commands as export_commands
from studio.worker import commands as job_commands

# Flags every command accepts before its name; the rest of the settings are for app.py and the worker.
GLOBAL_SETTINGS = ("data_dir", "database_url", "model_preset", "upload_max_bytes", "image_max_pixels")
# Where the weights are and how they run: accepted before the command name and after it, by every command.
MODEL_SETTINGS = ("model_dir", "device", "dtype", "offload")


def _print_project(services, project) -> None:
    scenes = services.storyboard.list_scenes(project.id)
    characters = services.characters.list(project.id)
    shots = [shot for scene in scenes for shot in scene.shots]
    print(f"project {project.id}: {project.name}{'  (in the bin)' if project.in_bin else ''}")
    print(
        f"  preset {project.preset}, {project.width}x{project.height} at {project.fps} fps, {project.steps} steps, "
        f"guidance {project.guidance}"
    )
    if project.negative_prompt:
        print(f"  negative prompt: {project.negative_prompt}")
    for character in characters:
        print(
            f"  character {character.name} {character.trigger}: {character.reference_count} reference(s), "
            f"adapter {character.adapter_kind}"
        )
    seconds = sum(shot.num_frames for shot in shots) / project.fps
    print(f"  {len(scenes)} scene(s), {len(shots)} shot(s), {seconds:.1f} s")
    number = 0
    for scene_index, scene in enumerate(scenes, start=1):
        print(f"  scene {scene_index}: {scene.caption or '(no scene caption)'}")
        for shot in scene.shots:
            number += 1
            takes = f"{shot.take_count} take(s)" if shot.take_count else "no take yet"
            who = f" [{', '.join(shot.character_names)}]" if shot.character_names else ""
            print(
                f"    {number:>3}. ({scene_index}.{shot.position + 1}) {shot.num_frames}f {takes}{who}: {shot.caption}"
            )


def cmd_project_create(args, services) -> int:
    fields = {k: getattr(args, k) for k in ("width", "height", "fps", "steps", "guidance") if getattr(args, k)}
    project = services.projects.create(args.name, preset=args.preset, **fields)
    print(f"created project {project.id}: {project.name} ({project.preset}, {project.width}x{project.height})")
    return 0


def cmd_project_list(args, services) -> int:
    projects = services.projects.list(include_binned=args.all)
    if not projects:
        print("no projects yet: `python -m studio project create NAME` or `python -m studio import FILE.yaml`")
        return 0
    print(f"{'id':>5}  {'preset':<18}{'size':<11}name")
    for project in projects:
        size = f"{project.width}x{project.height}"
        print(f"{project.id:>5}  {project.preset:<18}{size:<11}{project.name}{'  (bin)' if project.in_bin else ''}")
    return 0


def cmd_project_show(args, services) -> int:
    _print_project(services, services.projects.find(args.project))
    return 0


def cmd_project_delete(args, services) -> int:
    project = services.projects.delete(services.projects.find(args.project).id)
    print(f"project {project.name!r} is in the bin (`project restore` brings it back, `project purge` removes it)")
    return 0


def cmd_project_restore(args, services) -> int:
    project = services.projects.restore(services.projects.find(args.project).id)
    print(f"project {project.name!r} restored")
    return 0


def cmd_project_purge(args, services) -> int:
    project = services.projects.find(args.project)
    files = services.projects.purge(project.id)
    print(f"project {project.name!r} removed for good ({files} file(s) no longer used were deleted)")
    return 0


def cmd_import(args, services) -> int:
    from studio.storyboard_file import StoryboardLimits, import_storyboard, load_storyboard

    path = Path(args.storyboard)
    doc = load_storyboard(path, StoryboardLimits.from_settings(services.settings))
    report = import_storyboard(services, doc, path.parent, project=args.project)
    print(report.summary())
    from studio.services.model_limits import describe_shot_notes

    for line in describe_shot_notes(services, report.project_id):  # what the model cannot draw of what is asked
        print(line)
    from studio.characters.references import analyze_pending_references

    analyze_pending_references(services, report.project_id)  # faces of imported references (no-op without models)
    return 0


def cmd_export_storyboard(args, services) -> int:
    from studio.storyboard_file import export_storyboard

    project = services.projects.find(args.project)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        text = export_storyboard(services, project.id, base_dir=out.parent)
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out} (references beside it)")
    else:
        sys.stdout.write(export_storyboard(services, project.id))
    return 0


def cmd_render(args, services) -> int:
    from studio.render import render_storyboard

    film = render_storyboard(services, args.storyboard, args.out, regenerate=args.regenerate)
    print(f"wrote {film}")
    return 0


def cmd_models(args, services) -> int:
    """Every preset, what it needs, and whether its weights are found here (looked up offline, nothing loaded)."""
    from pipelines.loading import find_model
    from pipelines.registry import PRESETS, requirements

    root = services.settings.resolved_model_dir
    for preset in PRESETS.values():
        where = "ready"
        if preset.source == "local":
            try:
                location = find_model(preset, model_root=root)
                files = ", ".join(p.name for p in location.checkpoints.values())
                where = f"found: {location.folder}" + (f" with {files}" if files else "")
            except ValueError as error:
                where = f"not found ({str(error).split(' Expected in one of them')[0]})"
        print(f"{preset.name}: {preset.description}\n  {requirements(preset)}\n  {where}")
    return 0


def cmd_settings(args, services) -> int:
    settings = services.settings
    for field, env, flag, description in describe_settings():
        value = getattr(settings, field)
        shown = "***" if field == "auth" and value else value
        print(f"{field:<20} {shown!s:<40} {flag:<22} {env:<28} {description}")
    print(f"{'(database)':<20} {settings.resolved_database_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio",
        description="Shotline studio from the command line (the web studio is `python app.py`).",
    )
    add_settings_arguments(parser, only=GLOBAL_SETTINGS + MODEL_SETTINGS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the studio does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    project = commands.add_parser("project", help="create, list or show projects")
    project_actions = project.add_subparsers(dest="project_action", metavar="ACTION", required=True)
    create = project_actions.add_parser("create", help="create a project")
    create.add_argument("name")
    create.add_argument("--preset", help="model preset (default: the studio's model_preset)")
    create.add_argument("--width", type=int)
    create.add_argument("--height", type=int)
    create.add_argument("--fps", type=int)
    create.add_argument("--steps", type=int)
    create.add_argument("--guidance", type=float)
    create.set_defaults(func=cmd_project_create)
    listing = project_actions.add_parser("list", help="list projects")
    listing.add_argument("--all", action="store_true", help="include projects in the bin")
    listing.set_defaults(func=cmd_project_list)
    show = project_actions.add_parser("show", help="show a project's characters, scenes and shots")
    show.add_argument("project", help="name or id")
    show.set_defaults(func=cmd_project_show)
    for action, handler, text in (
        ("delete", cmd_project_delete, "move a project to the bin"),
        ("restore", cmd_project_restore, "bring a project back from the bin"),
        ("purge", cmd_project_purge, "remove a binned project and the files only it used, for good"),
    ):
        sub = project_actions.add_parser(action, help=text)
        sub.add_argument("project", help="name or id")
        sub.set_defaults(func=handler)

    importer = commands.add_parser("import", help="import a storyboard file into its project (idempotent)")
    importer.add_argument("storyboard", help="storyboard YAML (reference paths are relative to it)")
    importer.add_argument("--project", help="project name to import into (default: the file's title)")
    importer.set_defaults(func=cmd_import)

    exporter = commands.add_parser("export-storyboard", help="write a project's storyboard file")
    exporter.add_argument("project", help="name or id")
    exporter.add_argument("--out", help="file to write (reference images are written beside it); default stdout")
    exporter.set_defaults(func=cmd_export_storyboard)

    render = commands.add_parser("render", help="import a storyboard, generate what is missing, export the film")
    render.add_argument("storyboard")
    render.add_argument("--out", required=True, help="the film to write, e.g. film.mp4")
    render.add_argument("--regenerate", metavar="SHOT", help="make a new take of one shot: N (film order) or S.N")
    render.set_defaults(func=cmd_render)

    models = commands.add_parser("models", help="list the model presets, what each needs and whether it is found")
    models.set_defaults(func=cmd_models)

    settings = commands.add_parser("settings", help="show every setting, its value, flag and variable")
    settings.set_defaults(func=cmd_settings)

    for area in (job_commands, export_commands, character_commands):
        area.register(commands)
    _add_model_flags(commands)
    return parser


def _add_model_flags(subparsers_action) -> None:
    """`--model-dir --device --dtype --offload` on every command and sub-command, after its name too."""
    for sub in subparsers_action.choices.values():
        add_settings_arguments(sub, only=MODEL_SETTINGS, default=argparse.SUPPRESS)
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_model_flags(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")

    try:
        settings = load_settings(None, **_overrides(args))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from studio.startup import one_line_errors

    try:
        with one_line_errors(settings.resolved_database_url):
            return _run_command(args, settings)
    except SystemExit as stop:
        return int(stop.code or 0)


def _run_command(args, settings) -> int:
    from studio.render import BackendUnavailableError
    from studio.services import build_services
    from studio.services.errors import ServiceError
    from studio.storyboard_file import StoryboardError

    services = build_services(settings)
    try:
        return int(args.func(args, services) or 0)
    except (ServiceError, StoryboardError, BackendUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Takes and adapters finished so far are stored; a job cut off is recovered by the next run (its worker's
        # pid is gone), so the same command goes on from there.
        print("interrupted: what finished is kept; run the same command again to go on", file=sys.stderr)
        return 130
    finally:
        services.close()
