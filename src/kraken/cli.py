"""The ``kraken`` command: the original's control script, for this server.

``run`` serves in the foreground; ``start`` detaches a server and waits until it
answers; ``stop``, ``status``, ``change_log_level`` and the ``dump_*`` commands
talk to a running server through its admin API, found from the same config
sources as ``run``. Every option of ``kraken.config`` is a flag spelled with
dashes; the original's ``-kraken key value`` and ``-config FILE`` work too.
Exit codes: 0 done, 1 not running (or failed to start), 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import kraken
from kraken.config import LOG_LEVELS, Config, ConfigError, Loaded, load, option_type, options
from kraken.errors import KrakenError

log = logging.getLogger("kraken")

START_TIMEOUT = 15.0  # seconds `start` waits for the server to answer its health check
STOP_TIMEOUT = 15.0  # seconds `stop` waits for the server to go away
USER_LEVELS = ("debug", "info", "warn", "error")


class NotRunning(Exception):
    """No server answers at the admin address."""


# -- arguments -------------------------------------------------------------------


def _split_original_args(
    argv: Sequence[str],
) -> tuple[list[str], list[tuple[str, str]], str | None]:
    """Take the original's ``-kraken key value`` pairs and ``-config FILE`` out of argv."""
    rest: list[str] = []
    pairs: list[tuple[str, str]] = []
    erlang_file = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-kraken":
            if i + 2 >= len(argv):
                raise ConfigError("-kraken needs a key and a value (command line)")
            pairs.append((argv[i + 1], argv[i + 2]))
            i += 3
        elif arg == "-config":
            if i + 1 >= len(argv):
                raise ConfigError("-config needs a file (command line)")
            erlang_file = argv[i + 1]
            i += 2
        else:
            rest.append(arg)
            i += 1
    return rest, pairs, erlang_file


def _original_value(text: str) -> Any:
    """A ``-kraken`` value is an Erlang term (``8``, ``"path"``, ``info``), or plain text."""
    from kraken.erlang_terms import ErlangSyntaxError, parse_value

    try:
        return parse_value(text)
    except ErlangSyntaxError:
        return text


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="read options from a TOML file")
    group = parser.add_argument_group("options (each also KRAKEN_<NAME> in the environment)")
    for option in options():
        unit = option.metadata["unit"]
        default = f"{option.default}{' ' + unit if unit else ''}" if option.default != "" else "-"
        group.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            metavar=option_type(option.name).__name__.upper(),
            default=argparse.SUPPRESS,
            help=f"{option.metadata['help']} (default: {default})",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kraken", description=(kraken.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--version", action="version", version=f"kraken {kraken.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, help: str, json_output: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if json_output:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        _add_config_options(sub)
        return sub

    run = command("run", "run the server in the foreground", json_output=False)
    run.add_argument("--detach-stderr", action="store_true", help=argparse.SUPPRESS)
    command("start", "start the server in the background; wait until it answers", False)
    command("stop", "stop the running server gracefully", False)
    command("status", "say whether the server runs, with version, uptime, clients, topics")
    level = command("change_log_level", "change the log level of the running server", False)
    level.add_argument("level", choices=USER_LEVELS)
    command("dump_queues", "one row per client queue")
    topics = command("dump_queue_topics", "the topics of one client queue")
    topics.add_argument("id", type=int, help="the queue id, as dump_queues prints it")
    command("dump_topics", "every topic with its subscriber count, most subscribers first")
    command("config", "print the effective configuration and where each value came from")
    pub = command("pub", "publish one message to topics", json_output=False)
    pub.add_argument("topics", nargs="+", metavar="TOPIC")
    pub.add_argument("-m", "--message", help="the payload (default: read from stdin)")
    pub.add_argument(
        "-s",
        "--server",
        action="append",
        help="host:port, repeatable (default: listen_ip:"
        "tcp_server_port); several servers shard topics as the Python client does",
    )
    sub = command("sub", "print messages on topics as they arrive, until Ctrl-C")
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    sub.add_argument("--retro", metavar="HORIZON", help="also what was published since HORIZON")
    sub.add_argument("--poll-interval", type=float, default=0.1, metavar="SECONDS")
    sub.add_argument("-s", "--server", action="append", help="host:port, repeatable")
    return parser


def _load(args: dict[str, Any], pairs: list[tuple[str, str]], erlang_file: str | None) -> Loaded:
    names = {option.name for option in options()}
    cli = {name: value for name, value in args.items() if name in names}
    for key, value in pairs:
        if key not in names:
            raise ConfigError(f"unknown option {key!r} (command line -kraken)")
        cli[key] = _original_value(value)
    return load(cli, dict(os.environ), args.get("config"), erlang_file)


# -- running the server ----------------------------------------------------------


def configure_logging(config: Config) -> None:
    handler: logging.Handler
    if config.log_file:
        handler = logging.FileHandler(config.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # other libraries: warnings only
    set_log_level(config.log_level)


def set_log_level(level: str) -> None:
    logging.getLogger("kraken").setLevel(LOG_LEVELS[level])


def get_log_level() -> str:
    level = logging.getLogger("kraken").getEffectiveLevel()
    return {10: "debug", 20: "info", 30: "warn", 40: "error"}.get(level, str(level))


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


async def serve(config: Config, detach_stderr: bool = False, admin_required: bool = True) -> None:
    """Run a server and its admin API until SIGINT, SIGTERM or an admin shutdown.

    When the admin port was left at its default (``admin_required`` false) and is
    busy — another server on this host has it — the server runs without its
    admin API and says so, rather than refusing to serve; an admin port the
    operator chose must bind, or the server does not start.
    """
    from kraken.server import KrakenServer
    from kraken.server.admin import AdminServer

    server = KrakenServer(config)
    stop = asyncio.Event()
    admin = AdminServer(
        server,
        get_log_level=get_log_level,
        set_log_level=set_log_level,
        request_shutdown=stop.set,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before listening: no window without them
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    try:
        await admin.start()
    except OSError as error:
        if admin_required:
            await server.stop()
            raise
        log.warning(
            "admin API not started on %s:%d: %s",
            config.admin_ip,
            config.admin_port,
            error.strerror or error,
        )
    except BaseException:
        await server.stop()
        raise
    # Everything allocated so far lives as long as the server: keep the collector off
    # it, and let it run less often (the hot path makes few cycles; measured: GC was
    # 5 % of the server's CPU under fan-out).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    if config.pid_file:
        with open(config.pid_file, "w") as file:
            file.write(f"{os.getpid()}\n")
    if detach_stderr:
        # `start` read our start-up errors from stderr; from now on nobody does
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stderr.fileno())
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await admin.stop()
        await server.stop()
        if config.pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(config.pid_file)


def _run(config: Config, detach_stderr: bool, admin_required: bool) -> int:
    configure_logging(config)
    raise_open_files_limit(config.max_tcp_clients + 64)  # + listeners, log, admin clients
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        with runner:
            runner.run(serve(config, detach_stderr, admin_required))
    except OSError as error:
        log.error("cannot start: %s", error)
        return 1
    return 0


def _start(config: Config, argv: Sequence[str]) -> int:
    try:
        _admin(config, "GET", "/health")
    except NotRunning:
        pass
    else:
        print(f"kraken is already running (admin API on {_admin_address(config)})")
        return 1
    child_argv = [sys.executable, "-m", "kraken", "run", "--detach-stderr", *argv]
    child = subprocess.Popen(
        child_argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            assert child.stderr is not None
            errors = child.stderr.read().decode(errors="replace").strip()
            print(f"kraken failed to start (exit {child.returncode}):\n{errors}", file=sys.stderr)
            return 1
        try:
            _admin(config, "GET", "/health")
        except NotRunning:
            time.sleep(0.05)
            continue
        assert child.stderr is not None
        child.stderr.close()
        print(
            f"kraken started (pid {child.pid}), listening on "
            f"{config.listen_ip}:{config.tcp_server_port}, admin API on {_admin_address(config)}"
        )
        return 0
    child.kill()
    print(f"kraken did not answer within {START_TIMEOUT:.0f} s; killed it", file=sys.stderr)
    return 1


# -- talking to a running server -------------------------------------------------


def _admin_address(config: Config) -> str:
    return f"{config.admin_ip}:{config.admin_port}"


def _admin(config: Config, method: str, path: str, body: Any = None) -> Any:
    """One admin API call; NotRunning when nothing answers there."""
    url = f"http://{_admin_address(config)}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if config.admin_token:
        request.add_header("Authorization", f"Bearer {config.admin_token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise ConfigError(f"admin API answered {error.code} for {path}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        raise NotRunning(f"no kraken answers at {_admin_address(config)}: {error}") from None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _stop(config: Config) -> int:
    _admin(config, "POST", "/shutdown")
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            _admin(config, "GET", "/health")
        except NotRunning:
            print("kraken stopped")
            return 0
        time.sleep(0.05)
    print(f"kraken did not stop within {STOP_TIMEOUT:.0f} s", file=sys.stderr)
    return 1


def _status(config: Config, as_json: bool) -> int:
    status = _admin(config, "GET", "/status")
    if as_json:
        print(json.dumps(status))
    else:
        print(
            f"kraken {status['version']} is running (pid {status['pid']}) on {status['listen']}\n"
            f"uptime: {status['uptime_seconds']:.0f} s\n"
            f"clients: {status['clients']}\n"
            f"topics: {status['topics']}\n"
            f"subscriptions: {status['subscriptions']}\n"
            f"log level: {status['log_level']}"
        )
    return 0


def _print(data: Any, as_json: bool, render: Callable[[Any], str]) -> int:
    print(json.dumps(data) if as_json else render(data))
    return 0


QUEUE_COLUMNS = [
    "id",
    "peer",
    "queued",
    "received",
    "subscriptions",
    "connected_seconds",
    "since_last_poll_seconds",
]


def _command(name: str, args: dict[str, Any], config: Config, sources: dict[str, str]) -> int:
    as_json = bool(args.get("json"))
    if name == "config":
        if as_json:
            data = {
                option.name: {"value": getattr(config, option.name), "source": sources[option.name]}
                for option in options()
            }
            print(json.dumps(data))
        else:
            rows = [
                {
                    "option": o.name,
                    "value": repr(getattr(config, o.name)),
                    "source": sources[o.name],
                }
                for o in options()
            ]
            print(_table(rows, ["option", "value", "source"]))
        return 0
    if name == "pub":
        return _pub(args, config)
    if name == "sub":
        return _sub(args, config)
    if name == "stop":
        return _stop(config)
    if name == "status":
        return _status(config, as_json)
    if name == "change_log_level":
        answer = _admin(config, "PUT", "/log_level", {"level": args["level"]})
        print(f"log level is now {answer['level']}")
        return 0
    if name == "dump_queues":
        return _print(
            _admin(config, "GET", "/queues"), as_json, lambda rows: _table(rows, QUEUE_COLUMNS)
        )
    if name == "dump_queue_topics":
        answer = _admin(config, "GET", f"/queues/{args['id']}/topics")
        return _print(answer, as_json, lambda a: "\n".join(a["topics"]))
    if name == "dump_topics":
        return _print(
            _admin(config, "GET", "/topics"),
            as_json,
            lambda rows: _table(rows, ["topic", "subscribers"]),
        )
    raise AssertionError(name)


# -- pub and sub -------------------------------------------------------------------


def _servers(args: dict[str, Any], config: Config) -> list[str]:
    return args.get("server") or [f"{config.listen_ip}:{config.tcp_server_port}"]


def _pub(args: dict[str, Any], config: Config) -> int:
    from kraken.client import Client

    message = args["message"]
    payload = message.encode() if message is not None else sys.stdin.buffer.read()
    with Client(_servers(args, config), reconnect_timeout=3.0) as client:
        client.publish(args["topics"], payload)
    return 0


_CONTROLS = {i: f"\\x{i:02x}" for i in [*range(32), 127]} | {9: "\\t", 10: "\\n", 13: "\\r"}


def escape(payload: bytes) -> str:
    """A payload on one line, unambiguously: UTF-8 text, with a backslash doubled, TAB,
    CR and LF as \\t \\r \\n, other control bytes and bytes that are not UTF-8 as \\xNN."""
    text = payload.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return text.translate(_CONTROLS)


def _sub(args: dict[str, Any], config: Config) -> int:
    from kraken.client import Client, StateLost

    def state_lost(error: StateLost) -> None:
        print(f"kraken: messages were lost ({error}); reload what you cache", file=sys.stderr)

    as_json = bool(args.get("json"))
    with Client(_servers(args, config), on_state_lost=state_lost) as client:
        if args.get("retro"):
            client.retro_subscribe(args["retro"], args["topics"])
        else:
            client.subscribe(args["topics"])
        try:
            for message in client.listen(poll_interval=args["poll_interval"]):
                topics = [t.decode("utf-8", "backslashreplace") for t in message.topics]
                if as_json:
                    text = message.payload.decode("utf-8", "backslashreplace")
                    line = json.dumps({"topics": topics, "payload": text})
                else:
                    line = " ".join(topics) + "\t" + escape(message.payload)
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        rest, pairs, erlang_file = _split_original_args(argv)
        args = vars(parser.parse_args(rest))
        loaded = _load(args, pairs, erlang_file)
    except ConfigError as error:
        print(f"kraken: error: {error}", file=sys.stderr)
        return 2
    command = args["command"]
    config = loaded.config
    try:
        if command == "run":
            admin_required = {loaded.sources["admin_ip"], loaded.sources["admin_port"]} != {
                "default"
            }
            return _run(config, bool(args.get("detach_stderr")), admin_required)
        if command == "start":
            return _start(config, argv[argv.index("start") + 1 :])
        return _command(command, args, config, loaded.sources)
    except NotRunning as error:
        print(f"kraken is not running: {error}", file=sys.stderr)
        return 1
    except KrakenError as error:
        print(f"kraken: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"kraken: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
