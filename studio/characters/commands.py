"""CLI commands of the character area (registered by studio/cli.py):

    python -m studio character add PROJECT NAME --ref IMG [--ref IMG ...] [--description TEXT] [--trigger <tok>]
                                                [--adapter none|lora|embedding]
    python -m studio character refs PROJECT NAME           (references, their faces and flags)
    python -m studio character analyze PROJECT NAME        (analyse the references again, e.g. once the face
                                                            models are installed)
    python -m studio adapter train PROJECT CHARACTER [--kind lora|embedding] [--steps N] [--rank R] [--lr X] [--now]
    python -m studio adapter import PROJECT CHARACTER FILE [--trigger-text WORDS] [--weight W]
    python -m studio adapter list PROJECT CHARACTER

PROJECT is a project name or id, CHARACTER a character name or id. `adapter train` queues a job for the worker;
with `--now` this process works the training queue (jobs queued before run first) until it is done.
Refusals print `error: <reason>` and exit 1.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    character = subparsers.add_parser("character", help="characters: add one with its reference pictures")
    character_commands = character.add_subparsers(dest="character_command", required=True)
    add = character_commands.add_parser("add", help="add a character with reference pictures (faces are analysed)")
    add.add_argument("project", help="project name or id")
    add.add_argument("name", help="the character's name, as captions write it")
    add.add_argument("--ref", action="append", type=Path, default=[], help="a reference picture (repeatable)")
    add.add_argument("--description", default="", help="what the character looks like (used in captions)")
    add.add_argument("--trigger", help="trigger token, e.g. <mara> (default: <name in lower case>)")
    add.add_argument(
        "--adapter", choices=("none", "lora", "embedding"), default="none", help="adapter trained on demand"
    )
    add.set_defaults(func=character_add_command)
    refs = character_commands.add_parser("refs", help="list a character's references, faces found and flags")
    refs.add_argument("project", help="project name or id")
    refs.add_argument("character", help="character name or id")
    refs.set_defaults(func=character_refs_command)
    caption = character_commands.add_parser(
        "caption",
        help="caption a reference: what it shows, naming the character by its trigger (adapters train on it)",
    )
    caption.add_argument("project", help="project name or id")
    caption.add_argument("character", help="character name or id")
    caption.add_argument("reference", help="reference id or file name (see `character refs`)")
    caption.add_argument("caption", help="e.g. 'close-up shot, <kai> stays still, camera is static'; '' clears it")
    caption.set_defaults(func=character_caption_command)
    analyze = character_commands.add_parser("analyze", help="find the faces of a character's references again")
    analyze.add_argument("project", help="project name or id")
    analyze.add_argument("character", help="character name or id")
    analyze.set_defaults(func=character_analyze_command)

    adapter = subparsers.add_parser("adapter", help="character adapters: train, import, list")
    adapter_commands = adapter.add_subparsers(dest="adapter_command", required=True)
    train = adapter_commands.add_parser("train", help="train a character's LoRA or embedding (a worker job)")
    train.add_argument("project", help="project name or id")
    train.add_argument("character", help="character name or id")
    train.add_argument("--kind", choices=("lora", "embedding"), help="default: what the character asks for, else lora")
    train.add_argument("--steps", type=int, help="training steps (default: the model preset's)")
    train.add_argument("--rank", type=int, help="LoRA rank (default: the model preset's)")
    train.add_argument("--lr", type=float, help="learning rate (default: the model preset's)")
    train.add_argument("--vectors", type=int, help="embedding vectors per trigger (default: the model preset's)")
    train.add_argument("--now", action="store_true", help="train here and now instead of queueing for a worker")
    train.set_defaults(func=adapter_train_command)
    imp = adapter_commands.add_parser("import", help="import an existing Wan LoRA (.safetensors only)")
    imp.add_argument("project", help="project name or id")
    imp.add_argument("character", help="character name or id")
    imp.add_argument("file", type=Path, help="the LoRA file (.safetensors)")
    imp.add_argument("--trigger-text", help="the words the LoRA was trained to answer to (replace the trigger)")
    imp.add_argument("--weight", type=float, default=1.0, help="strength when combined (0-2, default 1)")
    imp.set_defaults(func=adapter_import_command)
    listing = adapter_commands.add_parser("list", help="list a character's adapters")
    listing.add_argument("project", help="project name or id")
    listing.add_argument("character", help="character name or id")
    listing.set_defaults(func=adapter_list_command)


def _fail(error: BaseException | str) -> int:
    text = str(error) if not isinstance(error, str) else error
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    return 1


def _refusals() -> tuple[type[BaseException], ...]:
    from adapters.importing import AdapterImportError
    from studio.services.errors import ServiceError

    return ServiceError, AdapterImportError, FileNotFoundError, IsADirectoryError


def find_character(services, project_id: int, reference: str):
    from studio.services.errors import NotFoundError

    characters = services.characters.list(project_id)
    for character in characters:
        if character.name.lower() == reference.lower() or character.trigger == reference:
            return character
    if reference.isdigit():
        for character in characters:
            if character.id == int(reference):
                return character
    names = ", ".join(c.name for c in characters) or "none yet"
    raise NotFoundError(f"no character {reference!r} in this project (characters: {names})")


def character_add_command(args, services) -> int:
    """All or nothing, like a storyboard import: every picture is read and checked first, then the character and all
    its references are stored in one unit of work (a refusal or a full disk on any picture keeps none of them);
    faces are found after, on what was stored."""
    from studio.characters.references import analyze_reference
    from studio.services.errors import ServiceError

    try:
        project = services.projects.find(args.project)
        pictures = [(path.name, path.read_bytes()) for path in args.ref]
        for filename, data in pictures:
            try:
                services.assets.validate_image(data, filename)
            except ServiceError as error:
                raise type(error)(f"{filename}: {error}; nothing was added") from None
        with services.db.unit_of_work():
            character = services.characters.create(
                project.id, args.name, description=args.description, trigger=args.trigger, adapter_kind=args.adapter
            )
            stored = []
            for filename, data in pictures:
                try:
                    stored.append((filename, services.characters.add_reference(character.id, filename, data)))
                except ServiceError as error:
                    raise type(error)(f"{filename}: {error}; nothing was added") from None
    except _refusals() as error:
        return _fail(error)
    print(f"character {character.name} (id {character.id}, trigger {character.trigger})")
    status = 0
    notes = set()
    for (filename, reference), (_, data) in zip(stored, pictures, strict=True):
        try:
            result = analyze_reference(services, reference.id, data=data)
        except _refusals() as error:
            status = _fail(f"{filename}: stored, but its faces were not analysed: {error}")
            continue
        reference = result.reference
        if result.analysis is None:
            notes.add(result.message)
            print(f"  {filename}: stored (faces not analysed)")
        elif result.analysis.flags:
            print(f"  {filename}: stored, flagged {', '.join(result.analysis.flags)}: {result.message}")
        else:
            box = ", ".join(f"{v:.0f}" for v in reference.face_box)
            print(f"  {filename}: face at [{box}]")
    for note in sorted(notes):
        print(f"note: {note}", file=sys.stderr)
    return status


def character_refs_command(args, services) -> int:
    from studio.characters.references import FLAG_REASONS

    try:
        project = services.projects.find(args.project)
        character = find_character(services, project.id, args.character)
        references = services.characters.list_references(character.id)
    except _refusals() as error:
        return _fail(error)
    for reference in references:
        if reference.analyzed_at is None:
            state = "not analysed (face models missing when it was added)"
        elif reference.flags:
            state = "; ".join(FLAG_REASONS.get(flag, flag) for flag in reference.flags)
        else:
            state = "face at [" + ", ".join(f"{v:.0f}" for v in reference.face_box) + "]"
        caption = f"\t{reference.caption}" if reference.caption else ""
        print(f"{reference.id}\t{reference.original_name}\t{reference.width}x{reference.height}\t{state}{caption}")
    return 0


def character_caption_command(args, services) -> int:
    from studio.services.errors import NotFoundError

    try:
        project = services.projects.find(args.project)
        character = find_character(services, project.id, args.character)
        references = services.characters.list_references(character.id)
        wanted = args.reference.strip()
        matches = [r for r in references if str(r.id) == wanted] or [
            r for r in references if r.original_name == wanted
        ]
        if len(matches) != 1:
            names = ", ".join(f"{r.id} ({r.original_name})" for r in references) or "none yet"
            how = "matches several references; use its id" if matches else "is not one of them"
            raise NotFoundError(f"{wanted!r} {how}: {character.name}'s references are {names}")
        reference = services.characters.set_reference_caption(matches[0].id, args.caption)
    except _refusals() as error:
        return _fail(error)
    print(f"{reference.id}\t{reference.original_name}\t{reference.caption or '(no caption)'}")
    return 0


def character_analyze_command(args, services) -> int:
    from studio.characters.references import reanalyze_character

    try:
        project = services.projects.find(args.project)
        character = find_character(services, project.id, args.character)
        results = reanalyze_character(services, character.id)
    except _refusals() as error:
        return _fail(error)
    if results and all(r.analysis is None for r in results):
        return _fail(results[0].message)
    for result in results:
        reference = result.reference
        state = result.message or "face at [" + ", ".join(f"{v:.0f}" for v in reference.face_box) + "]"
        print(f"{reference.id}\t{reference.original_name}\t{state}")
    return 0


def adapter_train_command(args, services) -> int:
    from studio.characters.adapters import request_training

    overrides = {
        key: value
        for key, value in (
            ("steps", args.steps),
            ("rank", args.rank),
            ("learning_rate", args.lr),
            ("num_vectors", args.vectors),
        )
        if value is not None
    }
    try:
        project = services.projects.find(args.project)
        character = find_character(services, project.id, args.character)
        kind = args.kind or (character.adapter_kind if character.adapter_kind in ("lora", "embedding") else "lora")
        if kind == "embedding" and "rank" in overrides:
            return _fail("--rank is a LoRA setting; embeddings take --vectors")
        if kind == "lora" and "num_vectors" in overrides:
            return _fail("--vectors is an embedding setting; LoRAs take --rank")
        job = request_training(services, character.id, kind, hyperparameters=overrides)
    except _refusals() as error:
        return _fail(error)
    if not args.now:
        print(f"queued job {job.id}: {character.name}'s {kind} (a worker runs it: python -m studio.worker)")
        return 0
    return _run_now(services, job)


def _run_now(services, job) -> int:
    """Work as a one-off worker until the job just queued is done: claim train_adapter jobs in queue order (any
    queued ahead of it run first, so none is left claimed and unattended) and run each here."""
    import os

    worker_id = f"cli-{os.getpid()}"
    while True:
        claimed = services.jobs.claim_next_job(worker_id, kinds=("train_adapter",))
        if claimed is None:
            current = services.jobs.get(job.id)
            return _fail(
                f"job {job.id} is {current.status} on {current.worker_id or 'another worker'}; "
                "follow it with: python -m studio jobs"
            )
        status = _run_claimed(services, claimed, announce=claimed.id == job.id)
        if claimed.id == job.id:
            return status


def _run_claimed(services, claimed, announce: bool) -> int:
    from studio.characters.training import run_train_adapter

    last = {"step": 0}

    def report(fraction, message="", step=None, total=None, **_):
        services.jobs.report_progress(claimed.id, fraction, message=message, step=step, total=total)
        if step is not None and total and (step == total or step - last["step"] >= max(1, total // 10)):
            last["step"] = step
            print(f"  job {claimed.id}: {message}", file=sys.stderr)

    try:
        result = run_train_adapter(services, claimed, report, lambda: services.jobs.is_cancel_requested(claimed.id))
    except _refusals() as error:
        services.jobs.fail(claimed.id, str(error))
        return _fail(error) if announce else 1
    except BaseException as error:
        services.jobs.fail(claimed.id, f"{type(error).__name__}: {error}")
        raise
    if result.get("cancelled"):
        services.jobs.mark_cancelled(claimed.id)
        return _fail("training was cancelled; nothing was registered") if announce else 1
    services.jobs.finish(claimed.id, result)
    if announce:
        print(
            f"adapter {result['adapter_id']} ({result['kind']} v{result['version']}) ready: "
            f"loss {result.get('eval_loss_before', 0):.4f} -> {result.get('eval_loss_after', 0):.4f}"
        )
    return 0


def adapter_import_command(args, services) -> int:
    from studio.characters.adapters import import_adapter

    try:
        project = services.projects.find(args.project)
        character = find_character(services, project.id, args.character)
        if args.file.is_dir():
            raise IsADirectoryError(f"{args.file} is a folder; give the LoRA's .safetensors file")
        data = args.file.read_bytes()
        adapter = import_adapter(
            services, character.id, args.file.name, data, trigger_text=args.trigger_text, weight=args.weight
        )
    except _refusals() as error:
        return _fail(error)
    params = adapter.hyperparameters
    print(
        f"adapter {adapter.id} (imported v{adapter.version}) ready for {character.name}: "
        f"{params.get('layout')} layout, rank {params.get('rank')}, {params.get('modules')} layers"
    )
    return 0


def adapter_list_command(args, services) -> int:
    try:
        project = services.projects.find(args.project)
        character = find_character(services, project.id, args.character)
        adapters = services.characters.list_adapters(character.id)
    except _refusals() as error:
        return _fail(error)
    for adapter in adapters:
        loss = adapter.metrics.get("eval_loss_after")
        extra = f"\tloss {loss:.4f}" if isinstance(loss, int | float) else ""
        print(f"{adapter.id}\t{adapter.kind} v{adapter.version}\t{adapter.status}\t{adapter.base_preset}{extra}")
    return 0
