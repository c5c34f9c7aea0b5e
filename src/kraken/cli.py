"""The ``kraken`` command. ``run`` starts the server in the foreground.

Options come from ``kraken.config``: every field of ``Config`` is a flag spelled
with dashes (``max_tcp_clients`` is ``--max-tcp-clients``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import signal
import sys
from collections.abc import Sequence
from typing import Any

import kraken
from kraken.config import LOG_LEVELS, Config, options
from kraken.server import KrakenServer

log = logging.getLogger("kraken")

_TYPES: dict[Any, Any] = {"int": int, "float": float, "str": str, int: int, float: float, str: str}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kraken", description=kraken.__doc__)
    parser.add_argument("--version", action="version", version=f"kraken {kraken.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    run = commands.add_parser("run", help="run the server in the foreground")
    for option in options():
        unit = option.metadata["unit"]
        default = f"{option.default}{' ' + unit if unit else ''}"
        run.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            type=_TYPES[option.type],
            default=argparse.SUPPRESS,
            choices=sorted(LOG_LEVELS) if option.name == "log_level" else None,
            help=f"{option.metadata['help']} (default: {default})",
        )
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=LOG_LEVELS[level],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def serve(config: Config) -> None:
    """Run a server until SIGINT or SIGTERM, then shut it down gracefully."""
    server = KrakenServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()


def raise_open_files_limit(wanted: int) -> None:
    """Let the process hold ``wanted`` descriptors, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning(
            "open files limited to %d: fewer than max_tcp_clients connections may fit", target
        )


def _run(config: Config) -> int:
    configure_logging(config.log_level)
    raise_open_files_limit(config.max_tcp_clients + 64)  # + listener, logs, admin
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    try:
        config = Config(**args)
    except ValueError as error:
        parser.error(str(error))
    if command == "run":
        try:
            return _run(config)
        except OSError as error:
            log.error("cannot listen on %s:%d: %s", config.listen_ip, config.tcp_server_port, error)
            return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
