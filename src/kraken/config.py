"""Every option of the server, in one place.

Names are the original Kraken's where it had the option, so operators' knowledge
carries over. Each option has a type, a default, a unit and the reason for its
default; the CLI (and later the admin API) are generated from this table.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

KIB = 1024
MIB = 1024 * KIB
SECONDS = 1.0


def _option(default: Any, unit: str, help: str, zero: bool = False, secret: bool = False) -> Any:
    """An option; numbers must be positive, or at least 0 where ``zero`` says so. A
    ``secret`` one is left out of the ``Config``'s repr (and SECRET_OPTIONS masks it)."""
    return field(
        default=default, repr=not secret, metadata={"unit": unit, "help": help, "zero": zero}
    )


@dataclass(frozen=True, slots=True)
class Config:
    listen_ip: str = _option(
        "127.0.0.1", "", "address to listen on; loopback unless the operator opens it up"
    )
    tcp_server_port: int = _option(12355, "", "TCP port of the original Kraken")
    num_router_shards: int = _option(
        4, "", "router shards; each holds part of the topic index and its own retro buffer"
    )
    messages_stored_per_router_shard: int = _option(
        10_000, "messages", "retro buffer size per shard, as the original"
    )
    max_buffered_bytes_per_router_shard: int = _option(
        16 * MIB,
        "bytes",
        "retro buffer size per shard in bytes: each message is charged its payload plus 256 "
        "bytes per topic of the shard, and the oldest leave while the sum is over; 10,000 "
        "hints of up to 1.4 KB fit, so the message count binds first for ordinary traffic, "
        "but large messages cannot pin memory (4 x 10,000 of 16 KB each was 645 MB of RSS)",
    )
    max_tcp_clients: int = _option(
        10_000, "connections", "connections beyond this are refused, bounding memory"
    )
    router_min_fanout_to_warn: int = _option(
        1_000, "subscribers", "warn when one publish reaches this many subscribers"
    )
    router_min_publish_to_topics_to_warn: int = _option(
        1_000, "topics", "warn when one published message names this many topics"
    )
    max_topics_per_message: int = _option(
        10_000,
        "topics",
        "a publish with a message naming more topics is refused whole (CLIENT_ERROR too many "
        "topics): 10 times router_min_publish_to_topics_to_warn, which only warns, for the "
        "rare legitimate client that names thousands; bounds one message's fan-out work and "
        "retro buffer memory",
    )
    client_idle_timeout: float = _option(
        3600 * SECONDS, "seconds", "close connections that send nothing for this long"
    )
    request_timeout: float = _option(
        30 * SECONDS,
        "seconds",
        "close, with CLIENT_ERROR incomplete request, a connection that sends nothing for "
        "this long in the middle of a request (a data block shorter than its declared length)",
    )
    shutdown_drain_seconds: float = _option(
        5 * SECONDS,
        "seconds",
        "at a graceful stop (SIGTERM, kraken stop), stop accepting at once but keep serving "
        "the clients connected for up to this long: each in turn, spread over the first "
        "half, closes with SERVER_ERROR shutting down once its queue is polled empty; "
        "enough for clients polling every second or two; 0 = close every client at once",
        zero=True,
    )
    max_queued_messages: int = _option(
        100_000, "messages", "a client queue past this is a slow consumer and is closed"
    )
    max_queued_bytes: int = _option(
        64 * MIB,
        "bytes",
        "payload bytes a client queue may hold before it is a slow consumer, less the bytes of "
        "replies written to the client that its socket has not taken yet",
    )
    max_subscriptions_per_client: int = _option(
        10_000,
        "topics",
        "a subscribe that would take a connection past this many topics is refused whole "
        "(CLIENT_ERROR too many subscriptions): clients hold hundreds to a few thousand; about "
        "400 bytes each, so at most ~4 MiB per client (940,000 in one request was 334 MiB)",
    )
    max_request_bytes: int = _option(
        8 * MIB, "bytes", "largest data block accepted; a security limit on memory per request"
    )
    max_line_bytes: int = _option(
        8 * KIB, "bytes", "longest request line; a security limit against endless lines"
    )
    batch_polls_above: int = _option(
        10_000,
        "reads/s",
        "above this many reads a second, a lone poll is answered at the end of the event "
        "loop's turn, with what the turn's publishes queued: fewer, fuller answers under "
        "load; 0 = always",
        zero=True,
    )
    push_delay: float = _option(
        0.0,
        "seconds",
        "a client in push mode (set push) is sent what is queued for it this long after the "
        "first message of a push came, with every other push due then, not at the end of the "
        "loop's turn: fewer, fuller writes for a little latency; 0 = at the end of the turn",
        zero=True,
    )
    log_level: str = _option("info", "", "debug, info, warn or error")
    log_file: str = _option("", "", "append the log to this file instead of stderr")
    pid_file: str = _option("", "", "write the server's process id to this file")
    history_file: str = _option(
        "",
        "",
        "keep the retro buffers and the horizon clock in this file across a planned restart: "
        "written at a graceful stop, read (and deleted) at the next start, so clients resume "
        "losslessly; after a crash, NOT_FOUND as without it. Empty: off",
    )
    upstream: str = _option(
        "",
        "",
        "HOST:PORT of another Kraken node: this one becomes a proxy in front of it, one client "
        "to it whatever its own clients (docs/cluster.md). Empty: a node of its own",
    )
    upstream_linger: float = _option(
        60 * SECONDS,
        "seconds",
        "a proxy keeps a topic subscribed upstream this long after its last local subscriber "
        "left, so that a client reconnecting meanwhile resumes it without NOT_FOUND",
        zero=True,
    )
    admin_ip: str = _option("127.0.0.1", "", "address of the admin HTTP API; loopback by default")
    admin_port: int = _option(
        12356,
        "",
        "port of the admin HTTP API (health, status, metrics); unless set, tcp_server_port + 1",
    )
    admin_token: str = _option(
        "",
        "",
        "when set, every admin request must carry 'Authorization: Bearer <token>'; prefer "
        "admin_token_file or KRAKEN_ADMIN_TOKEN: any user can read a command line (ps)",
        secret=True,
    )
    admin_token_file: str = _option(
        "", "", "read admin_token from this file: its content, stripped of surrounding whitespace"
    )
    admin_allowed_hosts: str = _option(
        "",
        "",
        "host names the admin API answers to besides localhost, IP addresses and admin_ip, "
        "comma-separated ('*': any); other Host headers get 403, against DNS rebinding",
    )
    admin_max_connections: int = _option(
        64,
        "connections",
        "admin connections open at once; more get 503 and are closed, so that admin clients "
        "cannot take the file descriptors the Kraken port needs",
    )
    admin_timeout: float = _option(
        10 * SECONDS,
        "seconds",
        "close an admin connection idle this long, or this slow to send its request "
        "headers; a request not read and answered within it gets 408",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            numeric = option_type(f.name) in (int, float)
            if f.name.endswith("_port"):
                if not 0 <= value <= 65535:
                    raise ValueError(f"{f.name} must be a port number (0-65535), got {value}")
            elif numeric and f.metadata["zero"] and value < 0:
                raise ValueError(f"{f.name} must be 0 or more, got {value}")
            elif numeric and not f.metadata["zero"] and value <= 0:
                raise ValueError(f"{f.name} must be positive, got {value}")
        try:
            object.__setattr__(self, "log_level", log_level_name(self.log_level))
        except ValueError:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}") from None


SECRET_OPTIONS = frozenset({"admin_token"})
"""Options whose values are never shown: ``kraken config`` and ``GET /config`` say "(set)"."""

LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
"""The log levels by their names; ``warning`` is read as ``warn`` everywhere."""


def log_level_name(text: str) -> str:
    """A level name as given (``warning``, ``INFO``) as one of ``LOG_LEVELS``, or ValueError."""
    name = text.strip().lower()
    name = "warn" if name == "warning" else name
    if name not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return name


@functools.cache
def _types() -> dict[str, type]:
    # the annotations are strings (postponed evaluation): resolve them once, to classes
    return typing.get_type_hints(Config)


def option_type(name: str) -> type:
    """The Python type of option ``name``: ``int``, ``float`` or ``str``."""
    return _types()[name]


def options() -> list[dataclasses.Field[Any]]:
    """The options, in declaration order, with their metadata."""
    return list(dataclasses.fields(Config))


# -- where values come from --------------------------------------------------------
#
# Highest first: the command line (``--tcp-server-port 12400`` or the original's
# ``-kraken tcp_server_port 12400``), the environment (``KRAKEN_TCP_SERVER_PORT``),
# config files (TOML via ``--config``, the original's Erlang terms via ``-config``),
# then the defaults above. Every value is checked before anything is bound.

ENV_PREFIX = "KRAKEN_"
DEFAULT = "default"
DERIVED_ADMIN_PORT = "default: tcp_server_port + 1"


class ConfigError(ValueError):
    """A bad option, value or file; the message names the option and its source."""


@dataclass(frozen=True)
class Loaded:
    config: Config
    sources: dict[str, str]  # option name -> where its value came from


def _names() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(Config)}


def convert(name: str, value: Any, source: str) -> Any:
    """``value`` as the type of option ``name``; text is parsed, other types checked."""
    fields = _names()
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown option {_shown(name)} ({source}){hint}")
    kind = option_type(name)
    try:
        if isinstance(value, bool):
            raise TypeError
        if kind is int:
            if isinstance(value, str):
                return int(value.strip().replace("_", ""), 10)
            if isinstance(value, int):
                return value
            raise TypeError
        if kind is float:
            if isinstance(value, str):
                return float(value)
            if isinstance(value, int | float):
                return float(value)
            raise TypeError
        if name.endswith("_ip") and isinstance(value, tuple):
            return _ip_from_tuple(value)
        if name == "log_level" and isinstance(value, str):
            return log_level_name(value)
        if isinstance(value, str):
            return str(value)  # an Erlang atom becomes a plain str
        raise TypeError
    except ValueError as error:
        if name == "log_level":
            raise ConfigError(f"option {name} ({source}): {error}") from None
        raise ConfigError(f"option {name} ({source}): {_expected(kind, value, name)}") from None
    except TypeError:
        raise ConfigError(f"option {name} ({source}): {_expected(kind, value, name)}") from None


def _expected(kind: type, value: Any, name: str = "") -> str:
    wanted = {int: "an integer", float: "a number"}.get(kind, "a string")
    secret = name in SECRET_OPTIONS
    shown = f"a value of type {type(value).__name__} (not shown)" if secret else _shown(value)
    return f"expected {wanted}, got {shown}"


def _shown(value: Any) -> str:
    """A value in an error: Erlang terms as Erlang text, others as Python shows them."""
    from kraken.erlang_terms import Atom, format_term

    return format_term(value) if isinstance(value, Atom | tuple | list) else repr(value)


def _ip_from_tuple(value: tuple[Any, ...]) -> str:
    if len(value) == 4 and all(isinstance(b, int) and 0 <= b <= 255 for b in value):
        return ".".join(str(b) for b in value)
    if len(value) == 8 and all(isinstance(b, int) and 0 <= b <= 0xFFFF for b in value):
        return ":".join(f"{b:x}" for b in value)
    raise ValueError


def read_toml(path: str) -> dict[str, Any]:
    """Options from a TOML file: top-level keys, or those of a ``[kraken]`` table."""
    import tomllib

    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        hint = ""
        if _looks_like_erlang(path):
            hint = f"; it looks like the original's Erlang config: use -config {path}"
        raise ConfigError(f"config file {path} is not valid TOML: {error}{hint}") from None
    table = data.get("kraken", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [kraken] must be a table")
    return table


def _looks_like_erlang(path: str) -> bool:
    """The file starts as an Erlang config does: ``[{`` or ``{``, after comments."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read(64 * KIB)
    except OSError:
        return False
    lines = [line.strip() for line in text.splitlines()]
    body = "".join(line for line in lines if line and not line.startswith("%"))
    return body.startswith(("[{", "{")) or path.endswith(".config")


def _looks_like_toml(path: str) -> bool:
    return path.endswith(".toml") or path.removesuffix(".config").endswith(".toml")


def erlang_config_path(path: str) -> str:
    """The file ``-config PATH`` names: Erlang appends ``.config``."""
    return path if path.endswith(".config") else path + ".config"


def read_erlang(path: str) -> dict[str, Any]:
    """Options from the original's Erlang-term file: ``[{kraken, [{Key, Value}, ...]}].``

    The ``{octopus, [...]}`` spelling of the original's README is read the same;
    sections of other applications are ignored.
    """
    from kraken.erlang_terms import ErlangSyntaxError, format_term, parse_file

    toml_hint = ""
    if _looks_like_toml(path):
        toml_hint = f"; for a TOML file use --config {path.removesuffix('.config')}"
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {path}: {error.strerror}"
            f" (-config names the original's Erlang file; Erlang adds .config){toml_hint}"
        ) from None
    try:
        term = parse_file(text)
    except ErlangSyntaxError as error:
        if not toml_hint and "=" in text and not text.lstrip().startswith(("[{", "{")):
            toml_hint = f"; it looks like TOML: use --config {path}"
        raise ConfigError(f"config file {path}: {error}{toml_hint}") from None
    if isinstance(term, tuple):
        term = [term]
    options: dict[str, Any] = {}
    found = False
    if isinstance(term, list):
        for section in term:
            if not (isinstance(section, tuple) and len(section) == 2):
                raise ConfigError(
                    f"config file {path}: expected {{Application, [...]}},"
                    f" got {format_term(section)}"
                )
            app, pairs = section
            if app not in ("kraken", "octopus"):
                continue
            found = True
            if not isinstance(pairs, list):
                raise ConfigError(f"config file {path}: {app} options must be a list")
            for pair in pairs:
                if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
                    raise ConfigError(
                        f"config file {path}: expected {{Key, Value}}, got {format_term(pair)}"
                    )
                options[str(pair[0])] = pair[1]
    if not found:
        raise ConfigError(f"config file {path}: no {{kraken, [...]}} section")
    return options


def read_token_file(path: str, source: str) -> str:
    """The admin token in file ``path``: its content, stripped; never shown in an error."""
    where = f"admin_token_file {path} ({source})"
    try:
        with open(path, "rb") as file:
            data = file.read(64 * KIB + 1)
    except OSError as error:
        raise ConfigError(f"cannot read {where}: {error.strerror or error}") from None
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    if len(data) > 64 * KIB:
        raise ConfigError(f"{where} is larger than 64 KiB: is it the token?")
    if not token:
        raise ConfigError(f"{where} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{where}: the token must be one word, without spaces or line breaks")
    return token


def load(
    cli: dict[str, Any],
    environ: dict[str, str] | None = None,
    toml_file: str | None = None,
    erlang_file: str | None = None,
) -> Loaded:
    """The effective configuration and the source of each value, or a ConfigError."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {name: DEFAULT for name in _names()}

    def apply(options: dict[str, Any], source: str) -> None:
        for name, value in options.items():
            values[name] = convert(name, value, source)
            sources[name] = source

    if erlang_file is not None:
        path = erlang_config_path(erlang_file)
        apply(read_erlang(path), f"file {path}")
    if toml_file is not None:
        apply(read_toml(toml_file), f"file {toml_file}")
    for name in _names():
        variable = ENV_PREFIX + name.upper()
        if environ and variable in environ:
            apply({name: environ[variable]}, f"environment {variable}")
    for name, value in cli.items():
        apply({name: value}, "command line")
    if sources["admin_port"] == DEFAULT and "tcp_server_port" in values:
        # a second server on another port gets its own admin port without being told
        port = values["tcp_server_port"]
        values["admin_port"] = port + 1 if 0 < port < 65535 else 0
        sources["admin_port"] = DERIVED_ADMIN_PORT
    if values.get("admin_token_file"):
        if values.get("admin_token"):
            raise ConfigError(
                f"admin_token ({sources['admin_token']}) and admin_token_file "
                f"({sources['admin_token_file']}) are both set: give one"
            )
        values["admin_token"] = read_token_file(
            values["admin_token_file"], sources["admin_token_file"]
        )
        sources["admin_token"] = f"file {values['admin_token_file']} (admin_token_file)"
    try:
        config = Config(**values)
    except ValueError as error:
        name = str(error).split(" ", 1)[0]
        raise ConfigError(f"{error} ({sources.get(name, DEFAULT)})") from None
    return Loaded(config, sources)
