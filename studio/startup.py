"""One line instead of a traceback for what stops the studio, a command or a worker from doing its work.

`python app.py`, `python -m studio ...` and `python -m studio.worker` run their start-up and their work under
`one_line_errors()`: an error from the list below becomes `error: <what is wrong>, <the setting or resource>; <what
to do>` on stderr and exit status 1. Anything else is a bug and keeps its traceback.

- the PostgreSQL server of `database_url` does not answer (its address, without the password);
- the SQLite database stayed locked past the busy timeout (another studio, worker or command is writing);
- the SQLite database or its folder cannot be opened;
- a migration failed (which revision, and the backup written before it);
- the data folder is a file or cannot be created (`StartupError` from `build_services`);
- the web UI's port is taken;
- the disk is full, or another file-system refusal while writing (its path).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from collections.abc import Iterator

from sqlalchemy.engine import make_url


class StartupError(RuntimeError):
    """A resource the studio needs is unusable; the message names it, the setting that chose it and what to do."""


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _database_line(error: BaseException, url: str | None) -> str | None:
    from sqlalchemy.exc import DBAPIError, OperationalError

    if not isinstance(error, OperationalError | DBAPIError) or url is None:
        return None
    parsed = make_url(url)
    setting = "setting database_url (--db / STUDIO_DATABASE_URL)"
    reason = _first_line(error)
    if parsed.get_backend_name() == "postgresql":
        if not isinstance(error, OperationalError):
            return None
        address = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
        return (
            f"cannot reach the PostgreSQL server at {address} (database {parsed.database}, {setting}): {reason}; "
            "start the server or point --db at one that runs"
        )
    path = parsed.database
    if "locked" in reason or "busy" in reason:
        from studio.db.engine import SQLITE_BUSY_TIMEOUT_MS

        return (
            f"the SQLite database {path} stayed locked by another process for more than "
            f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; wait for the other studio, worker or command to finish its write "
            "and run this again"
        )
    if "unable to open" in reason or "readonly" in reason or "disk" in reason:
        return f"cannot use the SQLite database {path} ({setting}): {reason}; check the folder exists and is writable"
    return None


def _os_line(error: BaseException) -> str | None:
    if not isinstance(error, OSError):
        return None
    where = error.filename or "the data folder"
    if error.errno == errno.ENOSPC:
        return (
            f"no space left on the device while writing {where}; free some space and run this again "
            "(nothing of the unfinished change was kept)"
        )
    if error.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {where}; free some space and run this again"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and error.filename:
        return f"not allowed to write {where} ({error.strerror}); check the folder's owner and permissions"
    if "Cannot find empty port" in str(error):
        return f"{_first_line(error)}; stop the program using it or choose another with --port (STUDIO_PORT)"
    return None


def describe(error: BaseException, database_url: str | None = None) -> str | None:
    """The one line for a known start-up or resource error, else None."""
    from studio.db.migrate import MigrationError

    if isinstance(error, StartupError | MigrationError):
        return str(error)
    return _database_line(error, database_url) or _os_line(error)


@contextlib.contextmanager
def one_line_errors(database_url: str | None = None) -> Iterator[None]:
    """Turn a known error (see the module docstring) into one line on stderr and SystemExit(1)."""
    try:
        yield
    except Exception as error:
        line = describe(error, database_url)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1) from None


def check_port_free(host: str, port: int) -> None:
    """Refuse to start when `host:port` is already taken (before the worker starts and the UI is built)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server binds: TIME_WAIT is free
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as error:
            raise StartupError(
                f"port {port} on {host} is in use ({error.strerror}), setting port (--port / STUDIO_PORT); stop the "
                "program using it or choose another port"
            ) from None


def ensure_data_dir(path) -> None:
    """Create the data folder (and its parents), or say in one line why it cannot be one."""
    from pathlib import Path

    folder = Path(path)
    setting = "setting data_dir (--data-dir / STUDIO_DATA_DIR)"
    if folder.exists() and not folder.is_dir():
        raise StartupError(f"the data folder {folder} is a file, not a folder ({setting}); choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StartupError(
            f"the data folder {folder} cannot be created: part of its path is a file ({setting}); choose another "
            "folder"
        ) from None
    except OSError as error:
        raise StartupError(
            f"the data folder {folder} cannot be created ({error.strerror}; {setting}); choose a folder you can write"
        ) from None


def ensure_sqlite_folder(url: str, data_dir) -> None:
    """A SQLite database's folder must exist, or lie inside the data folder (then it is created): a mistyped URL
    must not create folders anywhere on the machine."""
    from pathlib import Path

    from studio.db.engine import is_sqlite, sqlite_path

    if not is_sqlite(url) or (path := sqlite_path(url)) is None:
        return
    folder = Path(path).parent
    if folder.is_dir():
        return
    data = Path(data_dir).resolve()
    resolved = folder.resolve()
    if resolved == data or data in resolved.parents:
        folder.mkdir(parents=True, exist_ok=True)
        return
    raise StartupError(
        f"the folder {folder} of the SQLite database does not exist (setting database_url: --db / "
        "STUDIO_DATABASE_URL); create it first, or put the database inside the data folder"
    )
