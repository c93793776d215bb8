"""Start the chat server, or run one of its commands.

    python run_server.py            serve on HOST:PORT (default 127.0.0.1:8000)
    python run_server.py purge      delete history older than HISTORY_RETENTION_DAYS once

Settings come from the environment and from `.env` in the working directory.
A bad setting stops start-up with one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from dotenv import load_dotenv

from server.settings import Settings, SettingsError


def _settings() -> Settings:
    load_dotenv(".env", override=False)
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def serve(settings: Settings) -> None:
    from aiohttp import web

    from server.app import create_app

    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        uvloop = None
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_s + 5,
        access_log=None,
        loop=uvloop.new_event_loop() if uvloop else None,
        reuse_port=settings.workers > 1,
    )


def purge(settings: Settings) -> None:
    from server.jobs import purge_from_cli

    raise SystemExit(asyncio.run(purge_from_cli(settings)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Real-time AI chat server")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "purge"])
    args = parser.parse_args(argv)
    settings = _settings()
    _logging(settings.log_level)
    if args.command == "purge":
        purge(settings)
    else:
        serve(settings)


if __name__ == "__main__":
    main()
