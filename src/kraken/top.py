"""``kraken top``: a live terminal view of a running server, as ``redis-cli --stat`` and
``nats top`` show theirs.

It reads ``GET /status`` every ``interval`` seconds. Counters (publishes,
deliveries, bytes, accepted connections, slow-consumer closes) become rates: the
difference between two samples divided by the monotonic time between them.

The data and its rendering are apart: :func:`rows` turns two samples into
:class:`Row` values, a pure function; :func:`render` makes a rich table of rows
for a terminal, :func:`plain` makes ``key value`` lines for a script (what is
printed when stdout is not a terminal).

``--once`` takes two samples ``interval`` apart, prints one view and exits 0.
Without it the view is redrawn every ``interval`` seconds until Ctrl-C (exit 0).
When the server stops answering the view says since when and top keeps retrying;
when nothing answers at the start, top exits 1 as the other control commands do.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kraken.config import Config, ConfigError

Status = dict[str, Any]  # one answer of GET /status

WARN_AT = 0.5  # share of a limit from which a value is shown in yellow
ALERT_AT = 0.8  # ... in red


@dataclass(frozen=True)
class Row:
    """One figure of the view."""

    key: str  # its name in the plain output, for scripts
    label: str  # its name for people
    value: int | float | str | None  # None: the server did not say
    per_second: float | None = None  # a counter's rate between the samples; None: unknown
    limit: int | None = None  # the configured limit the value counts toward
    unit: str = ""  # "bytes", "seconds" or "id" (no thousands separator): how to show it
    group: str = ""  # rows of one group are shown together

    @property
    def counter(self) -> bool:
        return self.key in _COUNTERS


# (key, /status field, label, unit, limit field); counters get a rate
_GROUPS: list[tuple[str, list[tuple[str, str, str, str, str | None]]]] = [
    (
        "server",
        [
            ("version", "version", "version", "", None),
            ("pid", "pid", "pid", "id", None),
            ("listen", "listen", "listening on", "", None),
            ("uptime_seconds", "uptime_seconds", "uptime", "seconds", None),
            ("log_level", "log_level", "log level", "", None),
        ],
    ),
    (
        "clients",
        [
            ("connections", "clients", "connections", "", "max_tcp_clients"),
            ("connections_accepted", "connections_accepted", "accepted", "", None),
            ("topics", "topics", "topics", "", None),
            ("subscriptions", "subscriptions", "subscriptions", "", None),
        ],
    ),
    (
        "traffic",
        [
            ("published", "published", "publishes", "", None),
            ("deliveries", "deliveries", "deliveries", "", None),
            ("bytes_received", "bytes_received", "bytes in", "bytes", None),
            ("bytes_sent", "bytes_sent", "bytes out", "bytes", None),
        ],
    ),
    (
        "queues",
        [
            ("queued_messages", "queued_messages", "queued messages", "", None),
            ("queued_bytes", "queued_bytes", "queued bytes", "bytes", None),
            (
                "largest_queue_messages",
                "largest_queue_messages",
                "longest client queue",
                "",
                "max_queued_messages",
            ),
            (
                "largest_queue_bytes",
                "largest_queue_bytes",
                "heaviest client queue",
                "bytes",
                "max_queued_bytes",
            ),
            ("slow_consumers", "slow_consumers", "slow consumers closed", "", None),
        ],
    ),
]
_COUNTERS = {
    "connections_accepted",
    "published",
    "deliveries",
    "bytes_received",
    "bytes_sent",
    "slow_consumers",
}


def _number(status: Status, key: str) -> int | float | None:
    value = status.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def rows(before: Status, after: Status, elapsed: float) -> list[Row]:
    """The view of ``after``, with the rates of its counters since ``before``, sampled
    ``elapsed`` seconds earlier. Rates are unknown (None) when ``elapsed`` is not
    positive, or when the samples come from two servers (another pid, or an uptime
    that went back): a restart resets the counters."""
    up_before, up_after = _number(before, "uptime_seconds"), _number(after, "uptime_seconds")
    same_server = before.get("pid") == after.get("pid") and (
        up_before is None or up_after is None or up_after >= up_before
    )

    def rate(field_name: str) -> float | None:
        old, new = _number(before, field_name), _number(after, field_name)
        if elapsed <= 0 or not same_server or old is None or new is None or new < old:
            return None
        return (new - old) / elapsed

    out = []
    for group, specs in _GROUPS:
        for key, field_name, label, unit, limit_field in specs:
            value = after.get(field_name)
            if not isinstance(value, int | float | str) or isinstance(value, bool):
                value = None
            limit = after.get(limit_field) if limit_field else None
            out.append(
                Row(
                    key=key,
                    label=label,
                    value=value,
                    per_second=rate(field_name) if key in _COUNTERS else None,
                    limit=limit if isinstance(limit, int) and limit > 0 else None,
                    unit=unit,
                    group=group,
                )
            )
    return out


# -- rendering ---------------------------------------------------------------------


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days} d {clock}" if days else clock


def _show(value: int | float | str | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) or unit == "id":
        return str(value)
    if unit == "bytes":
        return _bytes(value)
    if unit == "seconds":
        return _duration(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _value_cell(row: Row) -> Text:
    text = _show(row.value, row.unit)
    style = ""
    if row.limit is not None and isinstance(row.value, int | float):
        share = row.value / row.limit
        text += f" of {_show(row.limit, row.unit)} ({share:.0%})"
        style = "bold red" if share >= ALERT_AT else "yellow" if share >= WARN_AT else ""
    if row.key == "slow_consumers" and row.per_second:
        style = "bold red"
    return Text(text, style=style)


def _rate_cell(row: Row) -> str:
    if not row.counter:
        return ""
    if row.per_second is None:
        return "-"
    if row.unit == "bytes":
        return f"{_bytes(row.per_second)}/s"
    return f"{row.per_second:,.1f}/s"


@dataclass(frozen=True)
class Frame:
    """What one refresh shows: rows, and whether the server answered."""

    rows: list[Row]
    at: datetime = field(default_factory=datetime.now)
    problem: str | None = None  # why these rows are old ones; None when fresh


def _identity(frame: Frame) -> str:
    """The server's rows on one line: what it is, rather than what it does."""
    server = {row.key: row for row in frame.rows if row.group == "server"}

    def shown(key: str) -> str:
        row = server.get(key)
        return "-" if row is None else _show(row.value, row.unit)

    return (
        f"kraken {shown('version')} · pid {shown('pid')} · {shown('listen')} · "
        f"up {shown('uptime_seconds')} · log level {shown('log_level')}"
    )


def render(frame: Frame, caption: str = "") -> RenderableType:
    """The frame for a terminal: the server on a line, a table of the other rows (name,
    value, rate per second) by group, then ``caption``, or the problem in red."""
    down = frame.problem is not None
    table = Table(box=box.SIMPLE_HEAD, style="dim" if down else "", padding=(0, 1))
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("per second", justify="right")
    shown = [row for row in frame.rows if row.group != "server"]
    for i, row in enumerate(shown):
        last_of_group = i + 1 < len(shown) and shown[i + 1].group != row.group
        table.add_row(
            row.label,
            _value_cell(row),
            _rate_cell(row),
            style="dim" if down else None,
            end_section=last_of_group,
        )
    footer = Text(frame.problem, style="bold red") if frame.problem else Text(caption, "dim")
    return Group(Text(_identity(frame), style="dim" if down else "bold"), table, footer)


def plain(frame: Frame) -> str:
    """``key value`` lines, for scripts: each row's value as the server gave it,
    ``key_per_second`` for the rates (two decimals), ``key_limit`` for limits; what is
    unknown is left out. A frame whose server did not answer is its time and the
    problem, without the old figures."""
    lines = [f"time {frame.at.isoformat(timespec='seconds')}"]
    if frame.problem is not None:
        return "\n".join([*lines, frame.problem])
    for row in frame.rows:
        if row.value is not None:
            lines.append(f"{row.key} {row.value}")
        if row.limit is not None:
            lines.append(f"{row.key}_limit {row.limit}")
        if row.per_second is not None:
            lines.append(f"{row.key}_per_second {row.per_second:.2f}")
    return "\n".join(lines)


# -- sampling ----------------------------------------------------------------------


def _sample(config: Config) -> tuple[Status, float]:
    from kraken.cli import admin_request

    status = admin_request(config, "GET", "/status")
    if not isinstance(status, dict):
        raise ConfigError(f"admin API answered {status!r} for /status")
    return status, time.monotonic()


def _frames(config: Config, interval: float, first: tuple[Status, float]) -> Iterator[Frame]:
    """A frame now (no rates yet), then one every ``interval`` seconds, forever. When the
    server does not answer, the last rows with the problem, and the next try."""
    from kraken.cli import NotRunning

    last, last_at = first
    shown = rows(last, last, 0.0)
    yield Frame(shown)
    down_since: datetime | None = None
    next_at = last_at + interval
    while True:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at + interval, time.monotonic())  # late after a slow try: no burst
        try:
            status, at = _sample(config)
        except (NotRunning, ConfigError) as error:
            down_since = down_since or datetime.now()
            since = down_since.strftime("%H:%M:%S")
            if isinstance(error, NotRunning):
                problem = f"not answering since {since}, retrying"
            else:
                problem = f"{error} (since {since}), retrying"
            yield Frame(shown, problem=problem)
            continue
        down_since = None
        shown = rows(last, status, at - last_at)
        last, last_at = status, at
        yield Frame(shown)


class _ReaderGone(Exception):
    """Nobody reads stdout any more: ``kraken top | head``."""


def _print_plain(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # and no traceback when Python flushes stdout at exit either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise _ReaderGone from None


def _once(config: Config, interval: float) -> int:
    before, before_at = _sample(config)
    time.sleep(interval)
    after, after_at = _sample(config)
    elapsed = after_at - before_at
    frame = Frame(rows(before, after, elapsed))
    if sys.stdout.isatty():
        Console().print(render(frame, f"{frame.at:%H:%M:%S} · rates over {elapsed:.2f} s"))
    else:
        _print_plain(plain(frame))
    return 0


def _live(config: Config, interval: float) -> int:
    frames = _frames(config, interval, _sample(config))
    if not sys.stdout.isatty():
        # no screen to redraw: one block of lines per refresh, blocks apart by a blank line
        for i, frame in enumerate(frames):
            _print_plain(("\n" if i else "") + plain(frame))
        raise AssertionError("unreachable")
    with Live(console=Console(), auto_refresh=False) as live:
        for frame in frames:
            caption = f"{frame.at:%H:%M:%S} · every {interval:g} s · Ctrl-C quits"
            live.update(render(frame, caption), refresh=True)
    raise AssertionError("unreachable")


def top(config: Config, *, interval: float, once: bool) -> int:
    """Show the running server's status; 0 when done or interrupted. NotRunning (exit 1)
    when nothing answers at the start."""
    if not interval > 0:
        raise ConfigError(f"--interval must be more than 0 seconds, got {interval:g}")
    with contextlib.suppress(KeyboardInterrupt, _ReaderGone):
        return _once(config, interval) if once else _live(config, interval)
    return 0
