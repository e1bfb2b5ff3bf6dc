"""`python app.py`: the Shotline studio on this machine (web UI on 127.0.0.1 + one local worker process).

Embedded defaults: SQLite and assets in ./studio-data, the demo model preset. Every setting can be given as a flag
(`python app.py --port 8000`) or a STUDIO_ environment variable; `python -m studio settings` lists them.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from studio.config import SettingsError, add_settings_arguments, load_settings, settings_overrides_from_args

logger = logging.getLogger("shotline")


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python app.py", description="Run the Shotline studio (UI + local worker).")
    add_settings_arguments(parser)
    parser.add_argument(
        "--no-worker", action="store_true", help="serve the UI only (workers run elsewhere: python -m studio.worker)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = load_settings(None, **settings_overrides_from_args(args))
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not settings.auth:
        print(
            f"error: setting host ({settings.host}) exposes the studio beyond this machine; "
            "also set --auth user:password (STUDIO_AUTH), or keep host 127.0.0.1",
            file=sys.stderr,
        )
        return 2

    from studio.startup import check_port_free, one_line_errors

    try:
        with one_line_errors(settings.resolved_database_url):
            check_port_free(settings.host, settings.port)  # before the worker starts: nothing to undo
            return _serve(args, settings)
    except SystemExit as stop:
        return int(stop.code or 0)


def _serve(args: argparse.Namespace, settings) -> int:
    from studio.services import build_services
    from studio.ui.app import build_app
    from studio.worker.process import start_local_worker

    services = build_services(settings)
    worker = None if args.no_worker else start_local_worker(settings)
    try:
        app = build_app(services)
        logger.info("studio at http://%s:%d (data in %s)", settings.host, settings.port, settings.data_dir.resolve())
        app.launch(server_name=settings.host, server_port=settings.port, share=False)
    finally:
        if worker is not None:
            worker.stop()
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
