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
import difflib
import errno
import gc
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import kraken
from kraken.config import (
    DEFAULT,
    LOG_LEVELS,
    SECRET_OPTIONS,
    Config,
    ConfigError,
    Loaded,
    load,
    option_type,
    options,
)
from kraken.errors import ClientError, KrakenError
from kraken.exposure import INSECURE_FLAG, refusal

if TYPE_CHECKING:
    from kraken.brokers import Broker

log = logging.getLogger("kraken")

START_TIMEOUT = 15.0  # seconds `start` waits for the server to answer its health check
STOP_TIMEOUT = 15.0  # seconds `stop` waits for the server to go away


class NotRunning(Exception):
    """No server answers at the admin address."""


class NotKraken(Exception):
    """Something answers at the admin address, but not a Kraken admin API."""


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


# Which options each command takes on its command line. The server's options all
# belong to run and start (and config, which shows what run would use); commands
# that reach a running server need only its address; pub and sub its TCP address.
# Every option is still read from the environment and config files.
ADMIN_OPTIONS = ("tcp_server_port", "admin_ip", "admin_port", "admin_token", "admin_token_file")
CLIENT_OPTIONS = ("listen_ip", "tcp_server_port")
# what these options mean to a command that connects to the server, not runs it
CLIENT_HELP = {
    "listen_ip": "the server's address (the listen_ip it runs with)",
    "tcp_server_port": "the server's TCP port",
}


def _add_config_options(parser: argparse.ArgumentParser, names: Sequence[str] | None) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="read options from a TOML file (-config FILE: Erlang)"
    )
    title = "server options" if names is None else "where the server is"
    help_for = CLIENT_HELP if names is CLIENT_OPTIONS else {}
    group = parser.add_argument_group(f"{title} (each also KRAKEN_<NAME> in the environment)")
    for option in options():
        if names is not None and option.name not in names:
            continue
        unit = option.metadata["unit"]
        default = f"{option.default}{' ' + unit if unit else ''}" if option.default != "" else "-"
        group.add_argument(
            "--" + option.name.replace("_", "-"),
            dest=option.name,
            metavar=option_type(option.name).__name__.upper(),
            default=argparse.SUPPRESS,
            help=f"{help_for.get(option.name, option.metadata['help'])} (default: {default})",
        )


VERSION = f"kraken {kraken.__version__}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kraken",
        description=(kraken.__doc__ or "").split("\n\n")[0],
        epilog="`kraken COMMAND --help` lists the options of a command.",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(
        name: str, help: str, names: Sequence[str] | None, json_output: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--version", action="version", version=VERSION)
        if json_output:
            sub.add_argument("--json", action="store_true", help="print JSON for scripts")
        _add_config_options(sub, names)
        return sub

    run = command("run", "run the server in the foreground", None, json_output=False)
    run.add_argument("--detach-stderr", action="store_true", help=argparse.SUPPRESS)
    start = command(
        "start",
        "start the server in the background; wait until it answers "
        "(it logs to --log-file, by default a file in ~/.local/state/kraken)",
        None,
        json_output=False,
    )
    for sub in (run, start):
        sub.add_argument(
            INSECURE_FLAG,
            dest="admin_insecure",
            action="store_true",
            help="let the admin API listen beyond loopback without admin_token (refused "
            "otherwise): anyone who reaches it can shut the server down",
        )
    stop = command("stop", "stop the running server gracefully", ADMIN_OPTIONS, False)
    stop.add_argument(
        "--force",
        action="store_true",
        help="stop the server that answers even when it listens on another port than given",
    )
    stop.add_argument(
        "--drain",
        type=_seconds,
        metavar="SECONDS",
        help="stop accepting at once, and give the connected clients up to SECONDS to "
        "collect what is queued for them before each is closed with SERVER_ERROR shutting "
        "down (default: the server's shutdown_drain_seconds; 0: close them at once; during "
        "a drain: shorten it)",
    )
    command(
        "status",
        "say whether the server runs, with version, uptime, clients, topics",
        ADMIN_OPTIONS,
    )
    level = command(
        "change_log_level", "change the log level of the running server", ADMIN_OPTIONS, False
    )
    level.add_argument("level", choices=(*LOG_LEVELS, "warning"))
    command("dump_queues", "one row per client queue", ADMIN_OPTIONS)
    topics = command("dump_queue_topics", "the topics of one client queue", ADMIN_OPTIONS)
    topics.add_argument("id", type=int, help="the queue id, as dump_queues prints it")
    command(
        "dump_topics",
        "every topic with its subscriber count, most subscribers first",
        ADMIN_OPTIONS,
    )
    config = command(
        "config",
        "print the running server's configuration and where each value came from "
        "(with no server answering, or --local: what `kraken run` would use here)",
        None,
    )
    config.add_argument(
        "--local", action="store_true", help="what `kraken run` would use, without asking a server"
    )
    top = command(
        "top", "a live view of the running server, refreshed every second", ADMIN_OPTIONS, False
    )
    top.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    top.add_argument("--once", action="store_true", help="print one view and exit")
    pub = command("pub", "publish one message to topics", CLIENT_OPTIONS, json_output=False)
    pub.add_argument("topics", nargs="+", metavar="TOPIC")
    pub.add_argument("-m", "--message", help="the payload (default: read from stdin)")
    pub.add_argument(
        "-s",
        "--server",
        action="append",
        help="host:port, repeatable (default: listen_ip:"
        "tcp_server_port); several servers shard topics as the Python client does",
    )
    sub = command(
        "sub",
        "print messages on topics as they arrive, until Ctrl-C (what happens on stderr)",
        CLIENT_OPTIONS,
    )
    sub.add_argument("topics", nargs="+", metavar="TOPIC")
    sub.add_argument("--retro", metavar="HORIZON", help="also what was published since HORIZON")
    sub.add_argument("--poll-interval", type=float, default=0.1, metavar="SECONDS")
    sub.add_argument("-s", "--server", action="append", help="host:port, repeatable")
    connect = command(
        "connect",
        "type requests to the server by hand, as with `nc -C`: each line is sent with CRLF, "
        "replies are printed as they come; Ctrl-D ends",
        CLIENT_OPTIONS,
        json_output=False,
    )
    connect.add_argument("server", nargs="?", metavar="HOST:PORT")
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _check_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """A mistyped command gets one line naming the nearest command, not the usage."""
    words = [arg for arg in argv if not arg.startswith("-")]
    if not words or any(
        arg in ("-h", "--help", "--version") for arg in argv[: argv.index(words[0])]
    ):
        return
    known = _commands(parser)
    if words[0] in known:
        return
    close = difflib.get_close_matches(words[0], known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"unknown command {words[0]!r}{hint} (kraken --help lists them)")


def _load(args: dict[str, Any], pairs: list[tuple[str, str]], erlang_file: str | None) -> Loaded:
    names = {option.name for option in options()}
    cli = {name: value for name, value in args.items() if name in names}
    for key, value in pairs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown option {key!r} (command line -kraken){hint}")
        cli[key] = _original_value(value)
    return load(cli, dict(os.environ), args.get("config"), erlang_file)


# -- running the server ----------------------------------------------------------


def configure_logging(config: Config) -> None:
    handler: logging.Handler
    if config.log_file:
        try:
            handler = logging.FileHandler(config.log_file)
        except OSError as error:
            raise ConfigError(
                f"cannot write the log file {config.log_file}: {error.strerror} (log_file)"
            ) from None
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


def raise_open_files_limit(config: Config) -> None:
    """Let the process hold the descriptors its connection limits need, as far as the hard
    limit allows; say why not when it cannot (kraken.server.fds)."""
    from kraken.server.fds import RESERVED, needed, raise_limit

    raise_limit(
        needed(config.max_tcp_clients, config.admin_max_connections),
        f"max_tcp_clients ({config.max_tcp_clients}) + admin_max_connections "
        f"({config.admin_max_connections}) + {RESERVED}",
    )


class CannotStart(Exception):
    """A listener did not bind: the message names which one, its address and why."""


def _bind_error(what: str, option: str, ip: str, port: int, error: OSError) -> CannotStart:
    why = error.strerror or str(error)
    hint = ""
    if error.errno == errno.EADDRINUSE:
        hint = f"; another process (another kraken?) has it: choose another with --{option}"
    return CannotStart(f"cannot listen for {what} on {ip}:{port} ({option}): {why}{hint}")


async def serve(
    config: Config,
    detach_stderr: bool = False,
    admin_required: bool = True,
    sources: dict[str, str] | None = None,
    broker: Broker | None = None,
) -> None:
    """Run a server and its admin API until SIGINT, SIGTERM or an admin shutdown.

    When the admin port was left at its default (``admin_required`` false) and is
    busy — another server on this host has it — the server runs without its
    admin API and says so, rather than refusing to serve; an admin port the
    operator chose must bind, or the server does not start.
    """
    from kraken import exposure
    from kraken.server import KrakenServer
    from kraken.server.admin import AdminServer
    from kraken.server.fds import FdWatch
    from kraken.server.listener import Shutdown

    link = None
    if config.upstream:
        if broker is not None:
            log.warning("history_file is ignored on a proxy: its history is its upstream's")
        broker, link = _upstream(config)
    server = KrakenServer(config, broker)  # a broker given, or a LocalBroker
    # SIGTERM and the admin API drain the clients first (shutdown_drain_seconds, or the
    # admin's "drain"); Ctrl-C stops at once, as does a second SIGTERM during a drain
    shutdown = Shutdown(config.shutdown_drain_seconds)
    admin = AdminServer(
        server,
        get_log_level=get_log_level,
        set_log_level=set_log_level,
        request_shutdown=shutdown.request,
        sources=sources,
    )
    loop = asyncio.get_running_loop()
    # before listening: no window without them
    loop.add_signal_handler(signal.SIGINT, shutdown.request, 0.0)
    loop.add_signal_handler(signal.SIGTERM, shutdown.terminate)
    try:
        await server.start()
    except OSError as error:
        raise _bind_error(
            "clients", "tcp-server-port", config.listen_ip, config.tcp_server_port, error
        ) from None
    try:
        await admin.start()
    except OSError as error:
        if admin_required:
            await server.stop()
            raise _bind_error(
                "the admin API", "admin-port", config.admin_ip, config.admin_port, error
            ) from None
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
    for warning in exposure.warnings(config, server.port, admin.port if admin.started else None):
        log.warning("%s", warning)
    if (sources or {}).get("admin_token") == "command line":
        log.warning(
            "admin_token was given on the command line, which any user of this machine can "
            "read (ps): give it by admin_token_file or KRAKEN_ADMIN_TOKEN instead"
        )
    fds = FdWatch()
    fds.start()
    if link is not None:
        link.start()
    if detach_stderr:
        # `start` read our start-up errors from stderr; from now on nobody does
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stderr.fileno())
    try:
        await shutdown.requested.wait()
        # The drain comes first: the admin API still answers meanwhile (`kraken stop`
        # waits for it to go), and what the stop saves (history_file) comes after the
        # last publish it accepted.
        await server.drain(shutdown)
    finally:
        log.info("shutting down")
        fds.stop()
        if link is not None:
            await link.stop()
        await admin.stop()
        await server.stop(timeout=0.0 if shutdown.forced else STOP_FLUSH)


def _upstream(config: Config) -> tuple[Broker, Any]:
    """A proxy's broker and its link to ``config.upstream`` (started with the server)."""
    from kraken.brokers import LocalBroker
    from kraken.brokers.upstream import UpstreamBroker
    from kraken.client.core import parse_address
    from kraken.server.hub import now_us
    from kraken.server.upstream import UpstreamLink

    try:
        host, port = parse_address(config.upstream)
    except ValueError:
        raise ConfigError(f"upstream must be HOST:PORT, got {config.upstream!r}") from None
    local = {config.listen_ip, "127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
    if port == config.tcp_server_port and host.strip("[]") in local:
        # its own publishes would come back to it as an upstream's, and go out again
        raise ConfigError(f"upstream {config.upstream} is this server itself")
    router = LocalBroker.from_config(config, now_us()).router
    broker = UpstreamBroker(
        router,
        config.max_queued_messages,
        config.max_queued_bytes,
        round(config.upstream_linger * 1_000_000),
        now_us,
        config.max_request_bytes,
    )
    return broker, UpstreamLink(broker, host, port)


STOP_FLUSH = 5.0  # seconds the stop lets closed clients take what is left for them


def _write_pid_file(path: str) -> None:
    try:
        with open(path, "w") as file:
            file.write(f"{os.getpid()}\n")
    except OSError as error:
        raise ConfigError(
            f"cannot write the pid file {path}: {error.strerror} (pid_file)"
        ) from None


def _run(config: Config, detach_stderr: bool, admin_required: bool, sources: dict[str, str]) -> int:
    configure_logging(config)
    if config.pid_file:
        _write_pid_file(config.pid_file)  # before listening: a bad path costs nothing
    try:
        return _serve(config, detach_stderr, admin_required, sources)
    finally:
        if config.pid_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(config.pid_file)


def _serve(
    config: Config, detach_stderr: bool, admin_required: bool, sources: dict[str, str]
) -> int:
    from kraken.server.malloc import map_large_blocks

    raise_open_files_limit(config)
    map_large_blocks()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    from kraken.server.history_file import history_kept

    try:
        # history_file: restored before the loop starts, written once it has stopped
        with runner, history_kept(config) as broker:
            runner.run(serve(config, detach_stderr, admin_required, sources, broker))
    except (CannotStart, OSError) as error:
        log.error("%s", error)
        if config.log_file:  # and on stderr, where `start` (or the operator) looks
            print(f"kraken: {error}", file=sys.stderr)
        return 1
    return 0


def state_dir() -> str:
    """Where ``start`` keeps its default log: $XDG_STATE_HOME/kraken, else ~/.local/state."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(base, "kraken")


def _default_log_file(config: Config) -> str:
    directory = state_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create {directory} for the log: {error.strerror}; give --log-file"
        ) from None
    return os.path.join(directory, f"kraken-{config.tcp_server_port}.log")


def _without_token(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--admin-token T``, ``--admin-token=T`` or ``-kraken admin_token T``,
    and whether it had one."""
    rest: list[str] = []
    found = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--admin-token" and i + 1 < len(argv):
            found, i = True, i + 2
        elif arg.startswith("--admin-token="):
            found, i = True, i + 1
        elif arg == "-kraken" and i + 2 < len(argv) and argv[i + 1] == "admin_token":
            found, i = True, i + 3
        else:
            rest.append(arg)
            i += 1
    return rest, found


def _start(config: Config, argv: Sequence[str]) -> int:
    try:
        admin_request(config, "GET", "/health")
    except NotRunning:
        pass
    else:
        print(f"kraken is already running (admin API on {_admin_address(config)})")
        return 1
    log_file = config.log_file or _default_log_file(config)
    extra = [] if config.log_file else ["--log-file", log_file]
    argv, token_given = _without_token(argv)
    # any user can read a command line (/proc/PID/cmdline, ps); only the server's owner
    # can read its environment
    environ = dict(os.environ, KRAKEN_ADMIN_TOKEN=config.admin_token) if token_given else None
    child_argv = [sys.executable, "-m", "kraken", "run", "--detach-stderr", *argv, *extra]
    child = subprocess.Popen(
        child_argv,
        env=environ,
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
            logged = os.path.isfile(log_file) and os.path.getsize(log_file) > 0
            print(
                f"kraken failed to start (exit {child.returncode}):\n{errors}"
                + (f"\n(its log: {log_file})" if logged else ""),
                file=sys.stderr,
            )
            return 2 if child.returncode == 2 else 1  # 2: bad config, as for run
        try:
            admin_request(config, "GET", "/health")
        except NotRunning:
            time.sleep(0.05)
            continue
        assert child.stderr is not None
        child.stderr.close()
        print(
            f"kraken started (pid {child.pid}), listening on "
            f"{config.listen_ip}:{config.tcp_server_port}, admin API on {_admin_address(config)}\n"
            f"log: {log_file}"
        )
        return 0
    child.kill()
    print(
        f"kraken did not answer within {START_TIMEOUT:.0f} s; killed it (its log: {log_file})",
        file=sys.stderr,
    )
    return 1


# -- talking to a running server -------------------------------------------------


def _admin_address(config: Config) -> str:
    return f"{config.admin_ip}:{config.admin_port}"


def admin_request(config: Config, method: str, path: str, body: Any = None) -> Any:
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
    except http.client.HTTPException:
        raise NotKraken(
            f"{_admin_address(config)} answered, but not as a Kraken admin API (another "
            "server's Kraken port?): give the server's --admin-port"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        why = getattr(reason, "strerror", None) or str(reason)
        raise NotRunning(
            f"nothing answers at its admin API on {_admin_address(config)} ({why.lower()}). "
            "A server on other ports: give its --admin-port, or its --tcp-server-port "
            "(whose admin port is the next one unless set)"
        ) from None


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (C0, DEL, C1: escape sequences) and
    format characters (bidi overrides such as U+202E, zero-width ones) and line or paragraph
    separators as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``; all else as it is."""
    if text.isprintable():
        return text  # the common case; isprintable is false for every category escaped
    return "".join(_escaped(c) if unicodedata.category(c) in _UNPRINTABLE else c for c in text)


_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escaped(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows as aligned columns, each cell made ``printable`` (--json prints them exact)."""
    cells = [
        [("-" if row.get(c) is None else printable(str(row.get(c)))) for c in columns]
        for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _other_port(config: Config, sources: dict[str, str], status: dict[str, Any]) -> str | None:
    """What differs between the server that answered and the TCP port given, if one was."""
    if sources.get("tcp_server_port", DEFAULT) == DEFAULT:
        return None
    listen = str(status.get("listen", ""))
    if listen.rpartition(":")[2] == str(config.tcp_server_port):
        return None
    return (
        f"the kraken whose admin API is on {_admin_address(config)} (pid {status.get('pid')}) "
        f"listens on {listen}, not on port {config.tcp_server_port}"
    )


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return seconds


def _stop(config: Config, sources: dict[str, str], force: bool, drain: float | None) -> int:
    status = admin_request(config, "GET", "/status")
    other = _other_port(config, sources, status)
    if other and not force:
        print(f"kraken: {other}: not stopped (--force stops it anyway)", file=sys.stderr)
        return 1
    answer = admin_request(config, "POST", "/shutdown", {} if drain is None else {"drain": drain})
    # the server drains its clients first (a server without drains answers no drain)
    drained = answer.get("drain_seconds", 0) if isinstance(answer, dict) else 0
    deadline = time.monotonic() + drained + STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            admin_request(config, "GET", "/health")
        except NotRunning:
            print(f"kraken stopped (pid {status['pid']}, was listening on {status['listen']})")
            return 0
        time.sleep(0.05)
    print(f"kraken did not stop within {drained + STOP_TIMEOUT:.0f} s", file=sys.stderr)
    return 1


def _status(config: Config, sources: dict[str, str], as_json: bool) -> int:
    status = admin_request(config, "GET", "/status")
    other = _other_port(config, sources, status)
    if other:
        print(f"kraken: note: {other}", file=sys.stderr)
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
        link = status.get("upstream")
        if link:
            print(
                f"upstream: {link['address']} {link['state']} for {link['state_seconds']:.0f} s "
                f"({link['connects']} connection(s)); topics: {link['topics_wanted']} wanted, "
                f"{link['topics_held']} held since before any gap; messages in "
                f"{link['messages_in']}, out {link['messages_out']}; resumes "
                f"{link['resumes']}, states lost {link['states_lost']}"
                + (f"; last error: {link['last_error']}" if link["last_error"] else "")
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


def _local_config(config: Config, sources: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {
        o.name: {
            "value": "(set)"
            if o.name in SECRET_OPTIONS and getattr(config, o.name)
            else getattr(config, o.name),
            "source": sources[o.name],
        }
        for o in options()
    }


def _config(config: Config, sources: dict[str, str], as_json: bool, local: bool) -> int:
    """The running server's configuration, else what ``kraken run`` would use, labelled."""
    data = None
    if not local:
        try:
            data = admin_request(config, "GET", "/config")
            status = admin_request(config, "GET", "/status")
        except NotRunning:
            data = None
    if data is not None:
        label = (
            f"the running server's configuration (pid {status['pid']}, listening on "
            f"{status['listen']}, admin API on {_admin_address(config)})"
        )
    else:
        data = _local_config(config, sources)
        label = "the configuration `kraken run` would use here"
        if not local:
            label += f" (no server answers at {_admin_address(config)})"
    if as_json:
        print(f"kraken: {label}", file=sys.stderr)
        print(json.dumps(data))
        return 0
    rows = [
        {"option": name, "value": repr(entry["value"]), "source": entry["source"]}
        for name, entry in data.items()
    ]
    print(f"{label}:\n{_table(rows, ['option', 'value', 'source'])}")
    return 0


def _command(name: str, args: dict[str, Any], config: Config, sources: dict[str, str]) -> int:
    as_json = bool(args.get("json"))
    if name == "config":
        return _config(config, sources, as_json, bool(args.get("local")))
    if name == "top":
        from kraken.top import top

        return top(config, interval=args["interval"], once=bool(args["once"]))
    if name == "pub":
        return _pub(args, config)
    if name == "connect":
        return _connect(args.get("server") or _servers({}, config)[0])
    if name == "sub":
        return _sub(args, config)
    if name == "stop":
        return _stop(config, sources, bool(args.get("force")), args.get("drain"))
    if name == "status":
        return _status(config, sources, as_json)
    if name == "change_log_level":
        answer = admin_request(config, "PUT", "/log_level", {"level": args["level"]})
        print(f"log level is now {answer['level']}")
        return 0
    if name == "dump_queues":
        return _print(
            admin_request(config, "GET", "/queues"),
            as_json,
            lambda rows: _table(rows, QUEUE_COLUMNS),
        )
    if name == "dump_queue_topics":
        answer = admin_request(config, "GET", f"/queues/{args['id']}/topics")
        return _print(answer, as_json, lambda a: "\n".join(map(printable, a["topics"])))
    if name == "dump_topics":
        return _print(
            admin_request(config, "GET", "/topics"),
            as_json,
            lambda rows: _table(rows, ["topic", "subscribers"]),
        )
    raise AssertionError(name)


# -- pub and sub -------------------------------------------------------------------


def _servers(args: dict[str, Any], config: Config) -> list[str]:
    return args.get("server") or [f"{config.listen_ip}:{config.tcp_server_port}"]


def _connect(server: str) -> int:
    """A line-based terminal to the server: what ``nc -C`` does, with nothing to install."""
    import socket
    import threading

    from kraken.client.core import parse_address
    from kraken.wire import RequestParser

    try:
        sock = socket.create_connection(parse_address(server), timeout=CLIENT_TIMEOUT)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        print(f"kraken: cannot connect to {server}: {error.strerror or error}", file=sys.stderr)
        return 1
    sock.settimeout(None)
    print(f"kraken: connected to {server}; lines are sent with CRLF; Ctrl-D ends", file=sys.stderr)

    typed = threading.Event()  # stdin ended: the close that follows is ours

    def replies() -> None:
        out = sys.stdout.buffer
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                out.write(data.replace(b"\r\n", b"\n"))
                out.flush()
        if not typed.is_set():
            print("kraken: the server closed the connection", file=sys.stderr)
        os._exit(0)  # stdin may be blocked in a read: end the process here

    threading.Thread(target=replies, daemon=True).start()
    try:
        unfinished = RequestParser()  # what the server has been sent, to tell at the end
        for line in sys.stdin.buffer:
            data = line.rstrip(b"\r\n") + b"\r\n"
            sock.sendall(data)
            unfinished.feed(data)
        typed.set()
        if missing := unfinished.incomplete:
            print(
                f"kraken: input ended with a request unfinished: the server waits for "
                f"{missing} (a data block's length counts every byte, each CRLF too)",
                file=sys.stderr,
            )
        sock.shutdown(socket.SHUT_WR)  # the server answers what it got, then we are done
        deadline = time.monotonic() + CLIENT_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"kraken: connection to {server} lost: {error.strerror or error}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    return 0


CLIENT_TIMEOUT = 3.0  # seconds pub and sub wait for an unreachable server (docs/client.md)


def _pub(args: dict[str, Any], config: Config) -> int:
    from kraken.client import Client
    from kraken.client.core import as_topics

    as_topics(args["topics"])  # a bad topic is refused before the payload is read
    message = args["message"]
    payload = message.encode() if message is not None else sys.stdin.buffer.read()
    with Client(_servers(args, config), reconnect_timeout=CLIENT_TIMEOUT) as client:
        client.publish(args["topics"], payload)
    return 0


_CONTROLS = {i: f"\\x{i:02x}" for i in [*range(32), 127]} | {9: "\\t", 10: "\\n", 13: "\\r"}


def escape(payload: bytes) -> str:
    """A payload on one line, unambiguously: UTF-8 text, with a backslash doubled, TAB,
    CR and LF as \\t \\r \\n, other control bytes and bytes that are not UTF-8 as \\xNN."""
    text = payload.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return text.translate(_CONTROLS)


def _sub(args: dict[str, Any], config: Config) -> int:
    """Messages on stdout, one per line; what happens to the connection on stderr."""
    from kraken.client import Client, ConnectionLost, RegistrationTooOld, StateLost
    from kraken.client.core import as_topics

    def say(text: str) -> None:
        print(f"kraken sub: {text}", file=sys.stderr, flush=True)

    def state_lost(error: StateLost) -> None:
        say(f"{error}: reload what you cache")

    topics = as_topics(args["topics"])
    shown = " ".join(t.decode("utf-8", "backslashreplace") for t in topics)
    as_json = bool(args.get("json"))
    interval = args["poll_interval"]
    with Client(
        _servers(args, config),
        on_state_lost=state_lost,
        reconnect_timeout=CLIENT_TIMEOUT,
        on_link_event=say,
    ) as client:
        try:
            if args.get("retro"):
                try:
                    client.retro_subscribe(args["retro"], topics)
                    say(f"subscribed to {shown}, with every message since {args['retro']}")
                except RegistrationTooOld:  # the subscription holds: go on, and say so
                    say(
                        f"subscribed to {shown}, but messages since {args['retro']} are no "
                        "longer all on the server: reload what you cache"
                    )
            else:
                client.subscribe(topics)
                say(f"subscribed to {shown}")
            down_since = 0.0  # monotonic time the server stopped answering, or 0
            report_after = 0.0  # seconds down after which to say so again (doubling)
            while True:
                try:
                    messages = client.receive_messages()
                except ConnectionLost as error:
                    now = time.monotonic()
                    if not down_since:
                        down_since, report_after = now - CLIENT_TIMEOUT, CLIENT_TIMEOUT
                    down = now - down_since
                    if down >= report_after:
                        say(f"no answer for {down:.0f} s ({error}); still retrying")
                        report_after *= 2
                    continue
                down_since = 0.0
                for message in messages:
                    names = [t.decode("utf-8", "backslashreplace") for t in message.topics]
                    if as_json:
                        text = message.payload.decode("utf-8", "backslashreplace")
                        line = json.dumps({"topics": names, "payload": text})
                    else:
                        line = " ".join(names) + "\t" + escape(message.payload)
                    print(line, flush=True)
                if not messages:
                    time.sleep(interval)
        except KeyboardInterrupt:
            horizon = client.resume_horizon  # every message up to it was printed
            if horizon is not None:
                say(f"stopped; `--retro {horizon.decode()}` resumes from here")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        rest, pairs, erlang_file = _split_original_args(argv)
        _check_command(parser, rest)
        args = vars(parser.parse_args(rest))
        loaded = _load(args, pairs, erlang_file)
    except ConfigError as error:
        print(f"kraken: error: {error}", file=sys.stderr)
        return 2
    command = args["command"]
    config = loaded.config
    if command in ("run", "start") and not args.get("admin_insecure"):
        problem = refusal(config)
        if problem is not None:
            print(f"kraken: error: {problem}", file=sys.stderr)
            return 2
    try:
        if command == "run":
            # an admin address the operator chose must bind; a default one may be busy
            # (under `start`, which finds its server through the admin API, it must too)
            admin_required = bool(args.get("detach_stderr")) or not all(
                loaded.sources[name].startswith(DEFAULT) for name in ("admin_ip", "admin_port")
            )
            return _run(config, bool(args.get("detach_stderr")), admin_required, loaded.sources)
        if command == "start":
            return _start(config, argv[argv.index("start") + 1 :])
        return _command(command, args, config, loaded.sources)
    except NotRunning as error:
        print(f"kraken is not running: {error}", file=sys.stderr)
        return 1
    except NotKraken as error:
        print(f"kraken: error: {error}", file=sys.stderr)
        return 1
    except ClientError as error:  # refused before anything was sent
        print(f"kraken: error: {error.reason}", file=sys.stderr)
        return 2
    except KrakenError as error:
        print(f"kraken: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except ConfigError as error:
        print(f"kraken: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
