"""The soak test: a real ``kraken run`` under mixed, hostile load for minutes, its RSS and
open file descriptors sampled every second, and a verdict on their growth.

Usage, from the repository root: ``python -m benchmarks.soak [--minutes 30] [--seed N]
[--plot [FILE]] [--json FILE]``. Exit status 0 when every check passed, 1 when one failed
(the failures are listed, with their numbers), 2 when the server could not be started.

The load, all from this one process (an asyncio loop; uvloop when installed), each client a
task whose loops are bounded in count and in time, every random choice drawn from a
generator seeded with ``--seed`` and the client's name:

- pollers: subscribe to 5-40 of 500 topics, poll every 0.2-3 s, reconnect every 20-120 s;
  half of them poll with the horizon and resume with ``retro_subscribe`` from it;
- two control subscribers, checked for exactly-once delivery: every message the control
  publisher sends to their topics after they subscribed must arrive once, in publish order,
  with its bytes and exactly the subscribed topics it names, unless a ``retro_subscribe``
  answered ``NOT_FOUND`` (then only what was sent since); one of them reconnects every
  15-45 s and resumes from its last horizon (sometimes after dropping a poll's answer
  unread, which the resume must deliver again);
- publishers: batches of 1-4 messages on 1-6 topics (a few hot ones), payloads of 8 B to
  16 KiB; a control publisher (messages on the control topics, and on others too); a hot
  publisher (4 KiB messages on the topics the slow consumers take);
- churn: connect, register or not, subscribe, poll, unsubscribe, then close, ``quit`` or
  reset, five times a second per task;
- slow consumers: subscribe to the hot topics and never poll, or poll without ever reading
  the socket: the server must close them (each has 120 s), then they reconnect;
- stalled clients send half a request and wait, idle ones send nothing: the server must
  close them no sooner than ``request_timeout`` / ``client_idle_timeout`` and at most two
  sweeps and a slack later;
- fuzzing clients: random bytes and mutated valid requests (flipped, cut, spliced bytes,
  absurd lengths, bare line ends, overlong lines), reconnecting after each close;
- admin scrapes: ``/health``, ``/status`` and ``/metrics`` every second, ``/queues`` and
  ``/topics`` every 10 s.

The verdict (``judge``): after a warm-up (the first 20 % of the run), a least-squares line
through the RSS samples may rise by at most ``--rss-floor-mib`` + ``--rss-mib-per-hour`` x
the window (12 MiB + 12 MiB/h). The load is stationary: once the retro buffers are full,
what the server holds alive stays flat, and a leak grows with the work done, linearly.
RSS still rises in steps as the allocators (Python's and malloc's) meet new peaks of the
load and keep the freed memory for reuse, steps that come ever more rarely: the floor absorbs
them (measured: 4.4 MiB between minutes 5 and 9.5 of a run whose live blocks shrank). RSS
must stay under a ceiling derived
from the configured limits (``ceiling``); the server's open fds must never pass the
connections this process holds open plus the server's own fds at start plus 64; the line
through the fds may rise by at most 32 over the window; the server must not die, /health
must answer (no gap over 10 s), no connection may end in ``internal_error``, and the
well-behaved clients must be served (never closed, no bad reply, exactly-once for the
control subscribers), closed when they should be. ``--without KINDS`` leaves kinds of load
out, to find which one makes a failure. A hidden option, ``--leak N``, adds a client that
opens N connections a second and holds them open: the run must then fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import socket
import statistics
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as benchmarks/soak.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.servers import ROOT, ServerError, ServerProcess, free_port

DEFAULT_PLOT = ROOT / "docs" / "img" / "soak.png"
MiB = 1024 * 1024

# -- the server's options: small limits, so that slow consumers, stalls and idle clients
# really hit them within seconds ---------------------------------------------------------

SERVER_OPTIONS: dict[str, int | float | str] = {
    "num_router_shards": 4,
    "messages_stored_per_router_shard": 1000,
    "max_tcp_clients": 1000,
    "client_idle_timeout": 20,
    "request_timeout": 5,
    "max_queued_messages": 2000,
    "max_queued_bytes": 262144,
    "max_request_bytes": 262144,
    "max_line_bytes": 2048,
    "log_level": "warn",
}

# -- the load ----------------------------------------------------------------------------

NOISE_TOPICS = 500  # t:0 .. t:499
HOT_TOPICS = 4  # hot:0 .. hot:3, what the slow consumers take
CONTROL_TOPICS = 8  # ctl:0 .. ctl:7, published only by the control publisher
POLLERS = 40
PUBLISHERS = 3
RATE = 150  # messages per second from the publishers, in all
CONTROL_RATE = 20  # messages per second from the control publisher
HOT_RATE = 40  # 4 KiB messages per second on the hot topics: 160 KB/s to each slow consumer
HOT_PAYLOAD = 4096
SLOW_NEVER_POLL = 2
SLOW_NEVER_READ = 2
STALLED = 10
IDLE = 4
CHURNERS = 2
CHURN_RATE = 5  # cycles per second per churner
FUZZERS = 2
LOAD_KINDS = ("pollers", "publishers", "hot", "churn", "slow", "stalled", "idle", "fuzz", "scrape")
SCRAPE_EVERY = 10.0  # seconds between /queues + /topics scrapes

# -- timeouts and bounds -----------------------------------------------------------------

CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 30.0  # a well-behaved client waits this long for a reply, then it is a failure
# a slow consumer must be closed by the server within this: one that never reads has the
# socket buffers to fill first (up to 4 MiB at tcp_wmem's default maximum: ~30 s at HOT_RATE)
SLOW_CLOSE_BOUND = 120.0
CLOSE_SLACK = 10.0  # a stalled/idle client's close may come this late past two sweeps
HEALTH_GAP = 10.0  # /health must answer at least this often
WARMUP = 0.2  # of the run
RSS_FLOOR_MIB = 12.0
RSS_MIB_PER_HOUR = 12.0
FD_MARGIN = 64
FD_GROWTH = 32
CEILING_SLACK_MIB = 32.0
PER_CONNECTION_BYTES = 64 * 1024  # what a connection may cost the server beyond its queue
MESSAGE_OVERHEAD = 1024  # what a buffered message costs beyond its payload


# == the verdict: pure functions on samples, unit-tested with synthetic ones ============


@dataclass
class Sample:
    """One reading, ``t`` seconds after the load started."""

    t: float
    rss: int  # bytes, /proc/PID/status VmRSS
    fds: int  # entries of /proc/PID/fd
    own: int  # connections this process held open to the server (protocol and admin)
    connections: float | None = None  # kraken_connections
    queued_bytes: float | None = None  # kraken_queued_bytes
    queued_messages: float | None = None  # kraken_queued_messages
    buffered: float | None = None  # kraken_buffered_messages
    cpu: float | None = None  # server CPU-seconds so far


@dataclass(frozen=True)
class Bounds:
    """What the samples are judged against (see the module's docstring for the reasons)."""

    warmup: float = WARMUP
    rss_floor_mib: float = RSS_FLOOR_MIB
    rss_mib_per_hour: float = RSS_MIB_PER_HOUR
    rss_ceiling: int = 0  # bytes; 0: no ceiling
    base_fds: int = 0  # the server's fds before the load
    fd_margin: int = FD_MARGIN
    fd_growth: int = FD_GROWTH

    def rss_allowed_mib(self, window_seconds: float) -> float:
        return self.rss_floor_mib + self.rss_mib_per_hour * window_seconds / 3600


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """The least-squares line through the points: (slope, intercept)."""
    n = len(xs)
    if n == 0:
        return 0.0, 0.0
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def judge(samples: Sequence[Sample], bounds: Bounds) -> tuple[dict[str, Any], list[str]]:
    """The figures of the samples and the failures they show (none: the run passes)."""
    failures: list[str] = []
    if len(samples) < 4:
        return {}, [f"only {len(samples)} samples: too few to judge growth"]
    end = samples[-1].t
    start = bounds.warmup * end
    window = [s for s in samples if s.t >= start]
    if len(window) < 3:
        window = list(samples[-3:])
    span = window[-1].t - window[0].t
    ts = [s.t for s in window]
    rss_slope, rss_icpt = fit(ts, [s.rss / MiB for s in window])
    rss_growth = rss_slope * span
    allowed = bounds.rss_allowed_mib(span)
    fd_slope, fd_icpt = fit(ts, [float(s.fds) for s in window])
    fd_growth = fd_slope * span
    peak = max(samples, key=lambda s: s.rss)
    excess = [s for s in samples if s.fds > s.own + bounds.base_fds + bounds.fd_margin]
    worst_fd = max(samples, key=lambda s: s.fds - s.own)
    figures: dict[str, Any] = {
        "seconds": round(end, 1),
        "samples": len(samples),
        "window_start_s": round(window[0].t, 1),
        "window_seconds": round(span, 1),
        "rss_start_mib": round(samples[0].rss / MiB, 2),
        "rss_window_start_mib": round(window[0].rss / MiB, 2),
        "rss_end_mib": round(samples[-1].rss / MiB, 2),
        "rss_peak_mib": round(peak.rss / MiB, 2),
        "rss_peak_at_s": round(peak.t, 1),
        "rss_trend_start_mib": round(rss_icpt + rss_slope * window[0].t, 2),
        "rss_trend_end_mib": round(rss_icpt + rss_slope * window[-1].t, 2),
        "rss_slope_mib_per_hour": round(rss_slope * 3600, 2),
        "rss_trend_growth_mib": round(rss_growth, 2),
        "rss_allowed_growth_mib": round(allowed, 2),
        "rss_ceiling_mib": round(bounds.rss_ceiling / MiB, 1) if bounds.rss_ceiling else None,
        "fds_start": samples[0].fds,
        "fds_end": samples[-1].fds,
        "fds_max": max(s.fds for s in samples),
        "fds_over_own_max": worst_fd.fds - worst_fd.own,
        "fds_over_own_allowed": bounds.base_fds + bounds.fd_margin,
        "fd_trend_start": round(fd_icpt + fd_slope * window[0].t, 1),
        "fd_trend_end": round(fd_icpt + fd_slope * window[-1].t, 1),
        "fd_trend_growth": round(fd_growth, 1),
        "fd_allowed_growth": bounds.fd_growth,
        "own_connections_mean": round(statistics.fmean(s.own for s in window), 1),
    }
    if rss_growth > allowed:
        failures.append(
            f"RSS grows: its trend rises {rss_growth:.1f} MiB over the {span:.0f} s after the "
            f"warm-up ({rss_slope * 3600:.1f} MiB/h, from {figures['rss_trend_start_mib']} to "
            f"{figures['rss_trend_end_mib']} MiB), more than the {allowed:.1f} MiB allowed "
            f"({bounds.rss_floor_mib:g} MiB + {bounds.rss_mib_per_hour:g} MiB/h)"
        )
    if bounds.rss_ceiling and peak.rss > bounds.rss_ceiling:
        failures.append(
            f"RSS reached {peak.rss / MiB:.1f} MiB at {peak.t:.0f} s, above the ceiling of "
            f"{bounds.rss_ceiling / MiB:.1f} MiB that the configured limits allow"
        )
    if excess:
        s = max(excess, key=lambda s: s.fds - s.own)
        failures.append(
            f"open fds beyond the live connections in {len(excess)} of {len(samples)} samples; "
            f"worst at {s.t:.0f} s, "
            f"{s.fds} fds for {s.own} connections held open by the clients (allowed: "
            f"{bounds.base_fds} at start + {bounds.fd_margin})"
        )
    if fd_growth > bounds.fd_growth:
        failures.append(
            f"open fds grow: their trend rises {fd_growth:.0f} over the {span:.0f} s after the "
            f"warm-up (from {figures['fd_trend_start']} to {figures['fd_trend_end']}), more "
            f"than the {bounds.fd_growth} allowed"
        )
    return figures, failures


def ceiling(options: dict[str, int | float | str], rss_start: int, peak_connections: int) -> int:
    """The most RSS the configured limits let this load make the server hold, in bytes.

    The server at start; its retro buffers full of the load's largest messages (every shard
    holding ``messages_stored_per_router_shard`` of 16 KiB + ``MESSAGE_OVERHEAD``); every
    connection the load may open holding ``PER_CONNECTION_BYTES``; each slow consumer
    holding a full queue and as much again in unsent replies; each fuzzing client half a
    ``max_request_bytes`` block. Twice that (the allocator's overhead and fragmentation),
    plus ``CEILING_SLACK_MIB``.
    """
    retro = int(options["num_router_shards"]) * int(options["messages_stored_per_router_shard"])
    retro *= 16384 + MESSAGE_OVERHEAD
    slow = (SLOW_NEVER_POLL + SLOW_NEVER_READ) * 2 * int(options["max_queued_bytes"])
    fuzz = FUZZERS * int(options["max_request_bytes"])
    held = retro + peak_connections * PER_CONNECTION_BYTES + slow + fuzz
    return rss_start + 2 * held + int(CEILING_SLACK_MIB * MiB)


# == the clients ========================================================================


class Closed(Exception):
    """The server closed the connection; ``line`` is the last line it sent, if any."""

    def __init__(self, line: bytes | None = None) -> None:
        super().__init__(line)
        self.line = line


class BadReply(Exception):
    """A reply other than the one the request calls for."""


def encode_set(command: bytes, block: bytes) -> bytes:
    return b"set %s 0 0 %d\r\n%s\r\n" % (command, len(block), block)


def encode_publish(messages: Sequence[tuple[Sequence[bytes], bytes]]) -> bytes:
    return b"\r\n".join(
        b"MESSAGE %s %d\r\n%s" % (b" ".join(topics), len(payload), payload)
        for topics, payload in messages
    )


def parse_entries(block: bytes) -> list[tuple[list[bytes], bytes]]:
    """The ``(topics, payload)`` entries of a ``VALUE messages`` block; BadReply if bad."""
    out = []
    pos = 0
    size = len(block)
    while pos < size:
        eol = block.find(b"\r\n", pos)
        if eol < 0:
            raise BadReply(f"entry header without CRLF: {block[pos : pos + 60]!r}")
        header = block[pos:eol].split(b" ")
        if header[0] != b"MESSAGE" or len(header) < 3 or not header[-1].isdigit():
            raise BadReply(f"bad entry header {block[pos:eol][:60]!r}")
        start = eol + 2
        end = start + int(header[-1])
        if end > size or (end < size and block[end : end + 2] != b"\r\n"):
            raise BadReply(f"entry length does not match at byte {pos}")
        out.append((header[1:-1], block[start:end]))
        pos = end + 2
    return out


class Conn:
    """A protocol connection (asyncio streams) counted in ``Soak.open``."""

    def __init__(
        self, soak: Soak, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.soak = soak
        self.reader = reader
        self.writer = writer
        self.closed = False

    @classmethod
    async def open(cls, soak: Soak, port: int | None = None, rcvbuf: int = 0) -> Conn:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        try:
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            soak.open += 1
            await asyncio.wait_for(
                loop.sock_connect(sock, ("127.0.0.1", port or soak.port)), CONNECT_TIMEOUT
            )
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf or 2**16)
        except BaseException:
            soak.open -= 1
            sock.close()
            raise
        return cls(soak, reader, writer)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def line(self, timeout: float = REPLY_TIMEOUT) -> bytes:
        try:
            line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
        except asyncio.IncompleteReadError as e:
            raise Closed(e.partial or None) from None
        except (ConnectionError, asyncio.LimitOverrunError) as e:
            raise Closed(str(e).encode()) from None
        return line[:-2]

    async def set(self, command: bytes, block: bytes, ok: Sequence[bytes] = (b"STORED",)) -> bytes:
        self.write(encode_set(command, block))
        reply = await self.line()
        if reply.startswith(b"SERVER_ERROR"):
            raise Closed(reply)
        if reply not in ok:
            raise BadReply(f"set {command.decode()}: {reply[:80]!r}")
        return reply

    async def get(self, keys: bytes) -> dict[bytes, bytes]:
        """``get <keys>``: the values it answers, by key."""
        self.write(b"get %s\r\n" % keys)
        out: dict[bytes, bytes] = {}
        for _ in range(8):
            line = await self.line()
            if line == b"END":
                return out
            if line.startswith(b"SERVER_ERROR"):
                raise Closed(line)
            fields = line.split(b" ")
            if len(fields) != 4 or fields[0] != b"VALUE" or not fields[3].isdigit():
                raise BadReply(f"get {keys.decode()}: {line[:80]!r}")
            try:
                data = await asyncio.wait_for(
                    self.reader.readexactly(int(fields[3]) + 2), REPLY_TIMEOUT
                )
            except (asyncio.IncompleteReadError, ConnectionError):
                raise Closed() from None
            if not data.endswith(b"\r\n"):
                raise BadReply(f"get {keys.decode()}: a value without its CRLF")
            out[fields[1]] = data[:-2]
        raise BadReply(f"get {keys.decode()}: more than 8 values")

    async def eof(self, timeout: float) -> bytes | None:
        """Wait for the server to close: all it sent meanwhile, or None if it did not close."""
        got = b""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                return None
            except ConnectionError:
                return got
            if not data:
                return got
            got = (got + data)[-4096:]
        return None

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.soak.open -= 1
        transport = self.writer.transport
        if abort:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()


@dataclass
class ControlMessage:
    seq: int
    topics: tuple[bytes, ...]
    crc: int
    size: int
    sent: float  # monotonic time its publish was written
    acked: float | None = None


@dataclass
class Epoch:
    """A stretch of continuous delivery of a control subscriber: from ``start`` (when its
    subscribe was answered) to a ``NOT_FOUND`` that broke it (``until``: when the last
    answered ``get messages horizon`` before that was sent)."""

    start: float
    until: float | None = None


class ControlSubscriber:
    def __init__(self, name: str, topics: Sequence[bytes]) -> None:
        self.name = name
        self.topics = frozenset(topics)
        self.epochs: list[Epoch] = []
        self.received: Counter[int] = Counter()
        self.last_seq = 0
        self.last_poll_sent = 0.0  # when the last fully answered poll was sent
        self.errors: list[str] = []
        self.horizon: bytes | None = None  # the last one read, with everything before it
        self.not_found = 0
        self.resumes = 0
        self.dropped_answers = 0

    def take(
        self, entries: list[tuple[list[bytes], bytes]], ledger: dict[int, ControlMessage]
    ) -> None:
        for topics, payload in entries:
            head = payload[:24].split(b" ")
            if len(head) < 2 or head[0] != b"ctl" or not head[1].isdigit():
                self.error(f"a message not from the control publisher: {payload[:40]!r}")
                continue
            seq = int(head[1])
            message = ledger.get(seq)
            if message is None:
                self.error(f"message {seq} was never published")
                continue
            if len(payload) != message.size or zlib.crc32(payload) != message.crc:
                self.error(f"message {seq} arrived with other bytes")
            wanted = [t for t in message.topics if t in self.topics]
            if topics != wanted:
                self.error(f"message {seq} names topics {topics}, expected {wanted}")
            self.received[seq] += 1
            if self.received[seq] > 1:
                self.error(f"message {seq} arrived {self.received[seq]} times")
            elif seq < self.last_seq:
                self.error(f"message {seq} arrived after message {self.last_seq}")
            self.last_seq = max(self.last_seq, seq)

    def error(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(f"{self.name}: {text}")

    def must_have(self, message: ControlMessage) -> bool:
        """Whether this subscriber must have received ``message``."""
        if message.acked is None or not self.topics.intersection(message.topics):
            return False
        for epoch in self.epochs:
            if message.sent > epoch.start and (epoch.until is None or message.acked < epoch.until):
                return True
        return False

    def missing(self, ledger: dict[int, ControlMessage]) -> list[int]:
        return [
            seq
            for seq, message in ledger.items()
            if seq not in self.received and self.must_have(message)
        ]


@dataclass
class Counts:
    """What the load did, and what it saw."""

    polls: int = 0
    entries: int = 0
    published: int = 0
    control_published: int = 0
    hot_published: int = 0
    reconnects: int = 0
    retro_stored: int = 0
    retro_not_found: int = 0
    churn_cycles: int = 0
    slow_closed: int = 0
    slow_close_seconds: list[float] = field(default_factory=list)
    slow_close_lines: Counter[str] = field(default_factory=Counter)
    stalled_closed: int = 0
    stalled_close_seconds: list[float] = field(default_factory=list)
    idle_closed: int = 0
    idle_close_seconds: list[float] = field(default_factory=list)
    fuzz_requests: int = 0
    fuzz_connections: int = 0
    fuzz_closed_by_server: int = 0
    scrapes: int = 0
    health_checks: int = 0
    leaked: int = 0
    loop_lag_max: float = 0.0


class Soak:
    """One soak run: the server, the load, the samples and the failures."""

    def __init__(self, args: argparse.Namespace, server: ServerProcess, admin_port: int) -> None:
        self.args = args
        self.server = server
        self.port = server.port
        self.admin_port = admin_port
        self.seed = args.seed
        self.open = 0  # connections this process holds open to the server
        self.counts = Counts()
        self.failures: list[str] = []
        self.failure_kinds: Counter[str] = Counter()
        self.samples: list[Sample] = []
        self.metrics: dict[str, float] = {}
        self.status: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self.duration = args.minutes * 60
        self.deadline = self.t0 + self.duration
        self.stopping = False
        self.ledger: dict[int, ControlMessage] = {}
        self.controls = [
            ControlSubscriber("control-live", [b"ctl:%d" % i for i in range(0, 6)]),
            ControlSubscriber("control-resume", [b"ctl:%d" % i for i in range(2, 8)]),
        ]
        self.last_health = time.monotonic()
        self.health_gap = 0.0
        self.base_fds = 0
        self.peak_open = 0

    # -- helpers -------------------------------------------------------------------------

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def fail(self, kind: str, text: str) -> None:
        """A failure: the first five of each kind are kept whole, the rest counted."""
        self.failure_kinds[kind] += 1
        if self.failure_kinds[kind] <= 5:
            self.failures.append(f"{text} (at {self.now():.0f} s)")

    def running(self) -> bool:
        return not self.stopping and time.monotonic() < self.deadline

    def left(self) -> float:
        """Seconds until the end of the load (at least a tenth)."""
        return max(0.1, self.deadline - time.monotonic())

    async def pause(self, seconds: float) -> None:
        """Sleep, but no later than the end of the load."""
        left = self.deadline - time.monotonic()
        if left > 0:
            await asyncio.sleep(min(seconds, left))

    def loops(self, per_second: float) -> int:
        """A bound on the iterations of a loop running at ``per_second`` for the whole run."""
        return int(per_second * (self.duration + 60) * 2) + 100

    async def guarded(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run a client; an exception escaping it is a failure of the soak tool itself."""
        try:
            await body()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.fail("client crashed", f"{name}: the client failed: {e!r}")

    # -- well-behaved clients ------------------------------------------------------------

    def well_behaved_lost(self, name: str, e: Exception) -> None:
        if isinstance(e, Closed):
            line = e.line.decode(errors="replace")[:80] if e.line else "no line"
            self.fail("closed", f"{name}: a well-behaved client was closed by the server ({line})")
        elif isinstance(e, TimeoutError):
            self.fail("timeout", f"{name}: no reply within {REPLY_TIMEOUT:g} s")
        elif isinstance(e, BadReply):
            self.fail("bad reply", f"{name}: {e}")
        else:
            self.fail("connection", f"{name}: {e!r}")

    async def poller(self, i: int) -> None:
        name = f"poller {i}"
        rng = self.rng(name)
        topics = [b"t:%d" % n for n in rng.sample(range(NOISE_TOPICS), rng.randint(5, 40))]
        block = b" ".join(topics)
        resume = i % 2 == 0
        period = rng.uniform(0.2, 3.0)
        horizon: bytes | None = None
        await self.pause(rng.uniform(0, 3))
        for _ in range(self.loops(1)):
            if not self.running():
                return
            conn: Conn | None = None
            try:
                conn = await Conn.open(self)
                if resume and horizon is not None:
                    reply = await conn.set(
                        b"retro_subscribe", horizon + b"\r\n" + block, (b"STORED", b"NOT_FOUND")
                    )
                    if reply == b"STORED":
                        self.counts.retro_stored += 1
                    else:
                        self.counts.retro_not_found += 1
                else:
                    await conn.set(b"subscribe", block)
                until = time.monotonic() + rng.uniform(20, 120)
                for _ in range(self.loops(1 / period)):
                    if not self.running() or time.monotonic() > until:
                        break
                    values = await conn.get(b"messages horizon" if resume else b"messages")
                    self.counts.polls += 1
                    if b"messages" in values:
                        self.counts.entries += len(parse_entries(values[b"messages"]))
                    if resume:
                        if b"horizon" not in values:
                            raise BadReply("get messages horizon: no horizon")
                        horizon = values[b"horizon"]
                    await self.pause(period)
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.well_behaved_lost(name, e)
                await self.pause(1)
            finally:
                if conn is not None:
                    conn.close(abort=rng.random() < 0.2)
            self.counts.reconnects += 1

    async def control_subscriber(self, sub: ControlSubscriber, resume: bool) -> None:
        """Poll with the horizon; when ``resume``, reconnect every 15-45 s and resume."""
        rng = self.rng(sub.name)
        block = b" ".join(sorted(sub.topics))
        for _ in range(self.loops(1)):
            if self.stopping:
                return
            conn: Conn | None = None
            try:
                conn = await Conn.open(self)
                if sub.horizon is None:
                    await conn.set(b"subscribe", block)
                    sub.epochs.append(Epoch(time.monotonic()))
                else:
                    reply = await conn.set(
                        b"retro_subscribe", sub.horizon + b"\r\n" + block, (b"STORED", b"NOT_FOUND")
                    )
                    sub.resumes += 1
                    if reply == b"NOT_FOUND":
                        sub.not_found += 1
                        sub.epochs[-1].until = sub.last_poll_sent
                        sub.epochs.append(Epoch(time.monotonic()))
                until = time.monotonic() + (rng.uniform(15, 45) if resume else math.inf)
                for _ in range(self.loops(10)):
                    if self.stopping:
                        return
                    if time.monotonic() > until and self.running():
                        break
                    sent = time.monotonic()
                    values = await conn.get(b"messages horizon")
                    if b"horizon" not in values:
                        raise BadReply("get messages horizon: no horizon")
                    sub.take(parse_entries(values.get(b"messages", b"")), self.ledger)
                    sub.horizon = values[b"horizon"]
                    sub.last_poll_sent = sent
                    self.counts.polls += 1
                    await asyncio.sleep(0.1)
                if rng.random() < 0.3:
                    # a poll whose answer is lost with the connection: the resume must
                    # deliver its messages again
                    conn.write(b"get messages horizon\r\n")
                    await asyncio.sleep(0.05)
                    sub.dropped_answers += 1
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.well_behaved_lost(sub.name, e)
                await asyncio.sleep(1)
            finally:
                if conn is not None:
                    conn.close(abort=rng.random() < 0.5)
            await asyncio.sleep(rng.uniform(0, 1))

    async def control_publisher(self) -> None:
        name = "control publisher"
        rng = self.rng(name)
        seq = 0
        conn: Conn | None = None
        try:
            for _ in range(self.loops(CONTROL_RATE)):
                if not self.running():
                    return
                if conn is None:
                    conn = await Conn.open(self)
                batch = []
                for _ in range(rng.choice((1, 1, 1, 2, 3))):
                    seq += 1
                    topics = [
                        b"ctl:%d" % n for n in rng.sample(range(CONTROL_TOPICS), rng.randint(1, 3))
                    ]
                    topics += [
                        b"t:%d" % rng.randrange(NOISE_TOPICS) for _ in range(rng.randint(0, 2))
                    ]
                    rng.shuffle(topics)
                    topics = list(dict.fromkeys(topics))
                    size = rng.choice((0, 8, 40, 200, 1000, 2000))
                    filler = (b"%d-" % seq) * (size // 2 + 1)
                    if rng.random() < 0.1:
                        filler = b"\r\nMESSAGE ctl:0 3\r\nabc" + filler
                    payload = b"ctl %d " % seq + filler[:size]
                    self.ledger[seq] = ControlMessage(
                        seq, tuple(topics), zlib.crc32(payload), len(payload), 0.0
                    )
                    batch.append((topics, payload))
                first = seq - len(batch) + 1
                sent = time.monotonic()
                for n in range(first, seq + 1):
                    self.ledger[n].sent = sent
                try:
                    await conn.set(b"publish", encode_publish(batch))
                except (Closed, BadReply, TimeoutError, OSError) as e:
                    self.well_behaved_lost(name, e)
                    conn.close()
                    conn = None
                    await self.pause(1)
                    continue
                acked = time.monotonic()
                for n in range(first, seq + 1):
                    self.ledger[n].acked = acked
                self.counts.control_published += len(batch)
                await self.pause(len(batch) / CONTROL_RATE)
        except OSError as e:
            self.well_behaved_lost(name, e)
        finally:
            if conn is not None:
                conn.close()

    def noise_topics(self, rng: random.Random) -> list[bytes]:
        out = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 6))):
            if rng.random() < 0.2:
                out.append(b"t:%d" % rng.randrange(10))  # a few hot ones
            else:
                out.append(b"t:%d" % rng.randrange(NOISE_TOPICS))
        return list(dict.fromkeys(out))

    @staticmethod
    def payload_size(rng: random.Random) -> int:
        x = rng.random()
        if x < 0.7:
            return rng.randint(8, 128)
        if x < 0.95:
            return rng.randint(256, 2048)
        return rng.randint(4096, 16384)

    async def publisher(self, i: int, hot: bool = False) -> None:
        name = f"{'hot ' if hot else ''}publisher {i}"
        rng = self.rng(name)
        rate = HOT_RATE if hot else RATE / PUBLISHERS
        await self.pause(rng.uniform(0, 1))
        for _ in range(self.loops(1 / 60)):
            if not self.running():
                return
            conn: Conn | None = None
            try:
                conn = await Conn.open(self)
                until = time.monotonic() + rng.uniform(60, 300)
                for _ in range(self.loops(rate)):
                    if not self.running() or time.monotonic() > until:
                        break
                    started = time.monotonic()
                    if hot:
                        batch = [
                            (
                                [
                                    b"hot:%d" % n
                                    for n in rng.sample(range(HOT_TOPICS), rng.randint(1, 2))
                                ],
                                rng.randbytes(HOT_PAYLOAD),
                            )
                        ]
                    else:
                        batch = [
                            (self.noise_topics(rng), rng.randbytes(self.payload_size(rng)))
                            for _ in range(rng.randint(1, 4))
                        ]
                    await conn.set(b"publish", encode_publish(batch))
                    if hot:
                        self.counts.hot_published += len(batch)
                    else:
                        self.counts.published += len(batch)
                    await self.pause(len(batch) / rate - (time.monotonic() - started))
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.well_behaved_lost(name, e)
                await self.pause(1)
            finally:
                if conn is not None:
                    conn.close()

    # -- churn -----------------------------------------------------------------------------

    async def churner(self, i: int) -> None:
        name = f"churner {i}"
        rng = self.rng(name)
        for _ in range(self.loops(CHURN_RATE)):
            if not self.running():
                return
            conn: Conn | None = None
            abort = False
            try:
                conn = await Conn.open(self)
                topics = [b"t:%d" % rng.randrange(NOISE_TOPICS) for _ in range(rng.randint(1, 30))]
                if rng.random() < 0.2:
                    topics.append(b"ctl:%d" % rng.randrange(CONTROL_TOPICS))
                if rng.random() < 0.3:
                    await conn.set(b"register", b"")
                    await conn.set(b"subscribe", b" ".join(topics), (b"STORED", b"NOT_FOUND"))
                else:
                    await conn.set(b"subscribe", b" ".join(topics))
                for _ in range(rng.randint(0, 3)):
                    values = await conn.get(rng.choice((b"messages", b"messages horizon")))
                    if b"messages" in values:
                        parse_entries(values[b"messages"])
                if rng.random() < 0.4:
                    await conn.set(
                        b"unsubscribe", b" ".join(rng.sample(topics, len(topics) // 2 + 1))
                    )
                end = rng.random()
                if end < 0.2:
                    conn.write(b"quit\r\n")
                else:
                    abort = end > 0.8
                self.counts.churn_cycles += 1
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.well_behaved_lost(name, e)
            finally:
                if conn is not None:
                    conn.close(abort=abort)
            await self.pause(rng.uniform(0.5, 1.5) / CHURN_RATE)

    # -- clients the server must close -----------------------------------------------------

    async def slow_consumer(self, i: int, read: bool) -> None:
        """Subscribe to the hot topics; never poll (``read``), or poll and never read."""
        name = f"slow consumer {i} ({'never polls' if read else 'never reads'})"
        rng = self.rng(name)
        topics = b" ".join(b"hot:%d" % n for n in range(HOT_TOPICS))
        await self.pause(rng.uniform(0, 2))
        for _ in range(self.loops(1)):
            if not self.running():
                return
            conn: Conn | None = None
            try:
                conn = await Conn.open(self, rcvbuf=0 if read else 4096)
                await conn.set(b"subscribe", topics)
                started = time.monotonic()
                if read:
                    got = await conn.eof(min(SLOW_CLOSE_BOUND, self.left()))
                    closed = got is not None
                    line = (got or b"").strip().decode(errors="replace")[:40] or "no line"
                else:
                    closed = False
                    line = "not read"
                    for _ in range(int(SLOW_CLOSE_BOUND * 2) + 1):
                        if time.monotonic() - started > SLOW_CLOSE_BOUND or not self.running():
                            break
                        if conn.writer.transport.is_closing():
                            closed = True
                            break
                        conn.write(b"get messages\r\n")
                        await asyncio.sleep(0.5)
                elapsed = time.monotonic() - started
                if closed:
                    self.counts.slow_closed += 1
                    self.counts.slow_close_seconds.append(elapsed)
                    self.counts.slow_close_lines[line] += 1
                elif elapsed >= SLOW_CLOSE_BOUND:
                    self.fail(
                        "slow consumer",
                        f"{name}: not closed by the server after {elapsed:.0f} s",
                    )
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.fail("slow consumer setup", f"{name}: {e!r}")
            finally:
                if conn is not None:
                    conn.close()
            await self.pause(rng.uniform(0.5, 2))

    STALLS = (
        b"set publish 0 0 27\r\nMESSAGE t:1 9\r\nhi th",  # a data block short of its length
        b"get mess",  # a line without its end
        b"set subscribe 0 0 10\r\n",  # a set line without its block
        b"set subscribe 0 0 4\r\nt:12",  # a block without its CRLF
        b"get messages\r\nset unsub",  # a request answered, then half of one
    )

    async def stalled(self, i: int, idle: bool) -> None:
        """Send half a request (or, ``idle``, nothing) and wait for the server to close."""
        name = f"{'idle' if idle else 'stalled'} client {i}"
        rng = self.rng(name)
        timeout = float(SERVER_OPTIONS["client_idle_timeout" if idle else "request_timeout"])
        sweep = min(
            1.0,
            min(
                float(SERVER_OPTIONS["client_idle_timeout"]),
                float(SERVER_OPTIONS["request_timeout"]),
            )
            / 4,
        )
        latest = timeout + 2 * sweep + CLOSE_SLACK
        await self.pause(rng.uniform(0, timeout))
        for _ in range(self.loops(1 / timeout)):
            if not self.running():
                return
            conn: Conn | None = None
            try:
                conn = await Conn.open(self)
                if not idle:
                    conn.write(rng.choice(self.STALLS))
                started = time.monotonic()
                got = await conn.eof(min(latest, self.left()))
                elapsed = time.monotonic() - started
                if got is None:
                    if elapsed >= latest:
                        self.fail(
                            "not closed",
                            f"{name}: not closed by the server within {latest:g} s "
                            f"({'client_idle' if idle else 'request'}_timeout {timeout:g} s)",
                        )
                elif elapsed < timeout:
                    self.fail(
                        "closed early",
                        f"{name}: closed after {elapsed:.2f} s, before the {timeout:g} s timeout",
                    )
                elif idle:
                    self.counts.idle_closed += 1
                    self.counts.idle_close_seconds.append(elapsed)
                else:
                    self.counts.stalled_closed += 1
                    self.counts.stalled_close_seconds.append(elapsed)
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.fail("stalled setup", f"{name}: {e!r}")
            finally:
                if conn is not None:
                    conn.close()
            await self.pause(rng.uniform(0, 1))

    # -- fuzzing ---------------------------------------------------------------------------

    def fuzz_request(self, rng: random.Random) -> bytes:
        def topics(n: int) -> bytes:
            return b" ".join(b"fz:%d" % rng.randrange(1000) for _ in range(n))

        templates = (
            lambda: b"get messages\r\n",
            lambda: b"get messages horizon\r\n",
            lambda: b"get horizon messages nothing\r\n",
            lambda: b"version\r\n",
            lambda: encode_set(b"register", b""),
            lambda: encode_set(b"subscribe", topics(rng.randint(1, 20))),
            lambda: encode_set(b"subscribe", topics(rng.randint(100, 500))),
            lambda: encode_set(b"unsubscribe", topics(rng.randint(1, 20))),
            lambda: encode_set(
                b"retro_subscribe", b"%.6f\r\n%s" % (time.time() - rng.uniform(-70, 30), topics(3))
            ),
            lambda: encode_set(
                b"publish",
                encode_publish(
                    [
                        (topics(rng.randint(0, 4)).split(), rng.randbytes(rng.randint(0, 300)))
                        for _ in range(rng.randint(1, 3))
                    ]
                ),
            ),
            lambda: encode_set(b"subscribe", b" " * rng.randint(1, 300)),
            lambda: encode_set(b"frobnicate", b"x"),
            lambda: b"set subscribe 0 0 %d noreply\r\nfz:1\r\n" % 4,
        )
        data = rng.choice(templates)()
        for _ in range(rng.randint(0, 3)):
            data = self.mutate(rng, data)
        return data

    @staticmethod
    def mutate(rng: random.Random, data: bytes) -> bytes:
        buf = bytearray(data)
        kind = rng.randrange(10)
        if not buf:
            return bytes(rng.randbytes(rng.randint(1, 64)))
        at = rng.randrange(len(buf))
        if kind == 0:  # flip a bit
            buf[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 2:  # delete a slice
            del buf[at : at + rng.randint(1, 16)]
        elif kind == 3:  # duplicate a slice
            buf[at:at] = buf[at : at + rng.randint(1, 64)]
        elif kind == 4:  # an absurd number in place of the first digits
            digits = [k for k, b in enumerate(buf) if 48 <= b <= 57]
            if digits:
                k = rng.choice(digits)
                buf[k : k + 1] = rng.choice(
                    (b"-1", b"4294967296", b"9" * 30, b"1" * 5000, b"0" * 40 + b"5", b"99999999")
                )
        elif kind == 5:  # bare line ends
            return bytes(buf).replace(b"\r\n", b"\n")
        elif kind == 6:  # cut short
            return bytes(buf[:at])
        elif kind == 7:  # random bytes
            return rng.randbytes(rng.randint(1, 512))
        elif kind == 8:  # an overlong line
            return b"get " + b"x" * rng.randint(2000, 5000) + b"\r\n"
        else:  # a forbidden byte in a topic
            buf[at] = rng.choice((0, 1, 10, 13, 32, 127, 255))
        return bytes(buf)

    async def fuzzer(self, i: int) -> None:
        name = f"fuzzer {i}"
        rng = self.rng(name)
        for _ in range(self.loops(2)):
            if not self.running():
                return
            conn: Conn | None = None
            try:
                conn = await Conn.open(self)
                self.counts.fuzz_connections += 1
                until = time.monotonic() + rng.uniform(0.2, 3)
                for _ in range(rng.randint(1, 40)):
                    if time.monotonic() > until or not self.running():
                        break
                    conn.write(self.fuzz_request(rng))
                    self.counts.fuzz_requests += 1
                    try:
                        data = await asyncio.wait_for(conn.reader.read(65536), 0.05)
                    except TimeoutError:
                        continue
                    if not data:
                        self.counts.fuzz_closed_by_server += 1
                        break
            except (TimeoutError, OSError):
                pass
            finally:
                if conn is not None:
                    conn.close(abort=rng.random() < 0.3)
            await self.pause(rng.uniform(0.05, 0.3))

    # -- the deliberate leak (--leak): must fail the run -----------------------------------

    async def leaker(self, per_second: float) -> None:
        """Open ``per_second`` connections a second and hold them all open, each polling
        every 5 s or so (never reading the answers) so that the idle timeout spares it."""
        held: list[Conn] = []
        turn = 0
        try:
            for _ in range(self.loops(per_second)):
                if not self.running():
                    return
                conn = await Conn.open(self)
                held.append(conn)
                self.counts.leaked += 1
                topics = b" ".join(b"leak:%d:%d" % (len(held), n) for n in range(50))
                await conn.set(b"subscribe", topics)
                for _ in range(math.ceil(len(held) / (5 * per_second))):
                    turn = (turn + 1) % len(held)
                    if not held[turn].writer.transport.is_closing():
                        held[turn].write(b"get messages\r\n")
                await self.pause(1 / per_second)
        except (Closed, BadReply, TimeoutError, OSError) as e:
            self.fail("leaker", f"leaker: {e!r}")
        finally:
            for conn in held:
                conn.close()

    # -- admin and sampling ----------------------------------------------------------------

    async def http_get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        self.open += 1
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.admin_port), timeout
            )
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.admin_port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            self.open -= 1
            if writer is not None:
                writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        fields = head.split(b" ", 2)
        if len(fields) < 2 or not fields[1].isdigit():
            raise BadReply(f"GET {path}: {head[:60]!r}")
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        return int(fields[1]), body

    async def health(self) -> None:
        for _ in range(self.loops(1)):
            if self.stopping:
                return
            started = time.monotonic()
            try:
                code, _ = await self.http_get("/health")
                if code == 200:
                    self.last_health = time.monotonic()
                    self.counts.health_checks += 1
            except (OSError, TimeoutError, BadReply):
                pass
            gap = time.monotonic() - self.last_health
            self.health_gap = max(self.health_gap, gap)
            if gap > HEALTH_GAP:
                self.fail("health", f"/health has not answered for {gap:.0f} s")
                self.last_health = time.monotonic()
            await asyncio.sleep(max(0.0, 1 - (time.monotonic() - started)))

    async def scrape(self) -> None:
        """/queues and /topics now and then (each walks every client or topic)."""
        for _ in range(self.loops(1 / SCRAPE_EVERY)):
            await self.pause(SCRAPE_EVERY)
            if not self.running():
                return
            for path in ("/queues", "/topics"):
                try:
                    code, body = await self.http_get(path, timeout=10)
                    if code != 200:
                        self.fail("admin", f"GET {path}: status {code}")
                    else:
                        json.loads(body)
                        self.counts.scrapes += 1
                except (OSError, TimeoutError, BadReply, ValueError) as e:
                    self.fail("admin", f"GET {path}: {e!r}")

    def read_proc(self) -> tuple[int, int]:
        pid = self.server.pid
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return self.server.rss_bytes(), fds

    async def sample(self) -> None:
        """Every second: RSS, fds, the connections held, and the key /metrics figures."""
        next_progress = 60.0
        for _ in range(self.loops(1)):
            started = time.monotonic()
            if not self.server.alive():
                self.fail("died", f"the server died (exit status {self.server.process.returncode})")
                self.stopping = True
                return
            try:
                rss, fds = self.read_proc()
            except OSError:
                continue
            own = self.open
            self.peak_open = max(self.peak_open, own)
            sample = Sample(round(self.now(), 2), rss, fds, own)
            with contextlib.suppress(FileNotFoundError):
                sample.cpu = round(self.server.cpu_seconds(), 2)
            try:
                code, body = await self.http_get("/metrics")
                if code == 200:
                    self.metrics = parse_metrics(body.decode(errors="replace"))
                    sample.connections = self.metrics.get("kraken_connections")
                    sample.queued_bytes = self.metrics.get("kraken_queued_bytes")
                    sample.queued_messages = self.metrics.get("kraken_queued_messages")
                    sample.buffered = self.metrics.get("kraken_buffered_messages")
                    self.counts.scrapes += 1
                else:
                    self.fail("admin", f"GET /metrics: status {code}")
                code, body = await self.http_get("/status")
                if code == 200:
                    self.status = json.loads(body)
                    self.counts.scrapes += 1
                else:
                    self.fail("admin", f"GET /status: status {code}")
            except (OSError, TimeoutError, BadReply, ValueError):
                pass  # /health judges whether the admin API answers
            self.samples.append(sample)
            if sample.t >= next_progress:
                next_progress += 60
                print(progress_line(sample), flush=True)
            # the last sample comes a second before the end, while the whole load still runs
            if self.stopping or time.monotonic() >= self.deadline - 2:
                return
            await asyncio.sleep(max(0.0, 1 - (time.monotonic() - started)))

    async def lag(self) -> None:
        """How late the loop runs its timers: a load generator too busy to keep up is said."""
        for _ in range(self.loops(10)):
            if self.stopping:
                return
            before = time.monotonic()
            await asyncio.sleep(0.1)
            late = time.monotonic() - before - 0.1
            self.counts.loop_lag_max = max(self.counts.loop_lag_max, late)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []

        def start(kind: str, name: str, body: Callable[[], Awaitable[None]]) -> None:
            if kind not in self.args.without:
                tasks.append(asyncio.create_task(self.guarded(name, body)))

        sampler = asyncio.create_task(self.guarded("sampler", self.sample))
        start("", "health", self.health)
        start("", "lag", self.lag)
        start("scrape", "scrape", self.scrape)
        control_tasks = [
            asyncio.create_task(
                self.guarded(s.name, lambda s=s, r=r: self.control_subscriber(s, r))
            )
            for s, r in zip(self.controls, (False, True), strict=True)
        ]
        # the control publisher starts once both control subscribers have subscribed
        for _ in range(100):
            if all(s.epochs for s in self.controls) or self.stopping:
                break
            await asyncio.sleep(0.05)
        start("", "control publisher", self.control_publisher)
        for i in range(POLLERS):
            start("pollers", f"poller {i}", lambda i=i: self.poller(i))
        for i in range(PUBLISHERS):
            start("publishers", f"publisher {i}", lambda i=i: self.publisher(i))
        start("hot", "hot publisher", lambda: self.publisher(0, hot=True))
        for i in range(CHURNERS):
            start("churn", f"churner {i}", lambda i=i: self.churner(i))
        for i in range(SLOW_NEVER_POLL + SLOW_NEVER_READ):
            start(
                "slow",
                f"slow consumer {i}",
                lambda i=i: self.slow_consumer(i, read=i < SLOW_NEVER_POLL),
            )
        for i in range(STALLED):
            start("stalled", f"stalled {i}", lambda i=i: self.stalled(i, idle=False))
        for i in range(IDLE):
            start("idle", f"idle {i}", lambda i=i: self.stalled(i, idle=True))
        for i in range(FUZZERS):
            start("fuzz", f"fuzzer {i}", lambda i=i: self.fuzzer(i))
        if self.args.leak:
            start("", "leaker", lambda: self.leaker(self.args.leak))
        await sampler
        self.stopping = True
        # the load stops; the control subscribers then take what is left: a poll sent after
        # the last publish was acknowledged holds every message still due to them
        grace = time.monotonic() + REPLY_TIMEOUT + 5
        _done, pending = await asyncio.wait(tasks, timeout=max(1.0, grace - time.monotonic()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in control_tasks:
            task.cancel()
        await asyncio.gather(*control_tasks, return_exceptions=True)
        if self.server.alive():
            await self.final_polls()

    async def final_polls(self) -> None:
        """Each control subscriber resumes once more from its last horizon and polls until
        it is answered empty: the last word on exactly-once delivery."""
        for sub in self.controls:
            conn: Conn | None = None
            try:
                if sub.horizon is None:
                    continue
                conn = await Conn.open(self)
                reply = await conn.set(
                    b"retro_subscribe",
                    sub.horizon + b"\r\n" + b" ".join(sorted(sub.topics)),
                    (b"STORED", b"NOT_FOUND"),
                )
                if reply == b"NOT_FOUND":
                    sub.not_found += 1
                    sub.epochs[-1].until = sub.last_poll_sent
                    sub.epochs.append(Epoch(time.monotonic()))
                for _ in range(100):
                    values = await conn.get(b"messages")
                    if b"messages" not in values:
                        break
                    sub.take(parse_entries(values[b"messages"]), self.ledger)
            except (Closed, BadReply, TimeoutError, OSError) as e:
                self.well_behaved_lost(f"{sub.name} (final poll)", e)
            finally:
                if conn is not None:
                    conn.close()


def dechunk(body: bytes) -> bytes:
    out = []
    for _ in range(100_000):
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


def jsonable(value: Any) -> Any:
    """A count as JSON: a list of durations as its spread."""
    if isinstance(value, list):
        if not value:
            return {"n": 0}
        return {
            "n": len(value),
            "min": round(min(value), 2),
            "median": round(statistics.median(value), 2),
            "max": round(max(value), 2),
        }
    return dict(value) if isinstance(value, Counter) else value


def parse_metrics(text: str) -> dict[str, float]:
    """The Prometheus text format, one entry per series (``name{labels}``)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def progress_line(s: Sample) -> str:
    def opt(x: float | None, scale: float = 1.0, fmt: str = ".0f") -> str:
        return "?" if x is None else format(x / scale, fmt)

    return (
        f"  {s.t / 60:5.1f} min  RSS {s.rss / MiB:6.1f} MiB  fds {s.fds:4d}  "
        f"held {s.own:4d}  server connections {opt(s.connections)}  "
        f"queued {opt(s.queued_bytes, 1024, '.0f')} KiB  buffered {opt(s.buffered)}"
    )


# == the report =========================================================================


def server_argv(port: int, admin_port: int, extra: Sequence[str]) -> list[str]:
    argv = [sys.executable, "-m", "kraken", "run", "--tcp-server-port", str(port)]
    argv += ["--admin-port", str(admin_port)]
    for name, value in SERVER_OPTIONS.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    return argv + list(extra)


def describe_load(args: argparse.Namespace) -> list[str]:
    o = SERVER_OPTIONS
    return [
        f"load: {POLLERS} pollers on 5-40 of {NOISE_TOPICS} topics (half resume with "
        f"retro_subscribe), 2 control subscribers checked for exactly-once delivery, "
        f"{PUBLISHERS} publishers ({RATE} msg/s, 8 B-16 KiB), a control publisher "
        f"({CONTROL_RATE} msg/s), a hot publisher ({HOT_RATE} x {HOT_PAYLOAD} B/s)",
        f"      {CHURNERS} churners ({CHURN_RATE} cycles/s each), {SLOW_NEVER_POLL} slow consumers "
        f"that never poll and {SLOW_NEVER_READ} that never read, {STALLED} stalled and {IDLE} "
        f"idle clients, {FUZZERS} fuzzers, admin scrapes every second"
        + (f"; a LEAK of {args.leak:g} connections/s held open" if args.leak else "")
        + (f"; WITHOUT {', '.join(args.without)}" if args.without else ""),
        f"bounds: after the first {WARMUP:.0%} of the run, the RSS trend may rise "
        f"{args.rss_floor_mib:g} MiB + {args.rss_mib_per_hour:g} MiB/h; RSS under a ceiling "
        f"from the limits (start + 2 x (retro buffers {o['num_router_shards']} x "
        f"{o['messages_stored_per_router_shard']} x 17 KiB + {PER_CONNECTION_BYTES // 1024} KiB "
        f"per connection + 2 x max_queued_bytes per slow consumer + max_request_bytes per "
        f"fuzzer) + {CEILING_SLACK_MIB:g} MiB); fds at most the connections held + the server's "
        f"fds at start + {FD_MARGIN}; the fd trend may rise {FD_GROWTH}",
    ]


def summary(soak: Soak, figures: dict[str, Any]) -> list[str]:
    c = soak.counts
    m = soak.metrics

    def metric(name: str) -> str:
        value = m.get(name)
        return "?" if value is None else f"{value:,.0f}"

    def spread(xs: list[float]) -> str:
        if not xs:
            return "none"
        return (
            f"{len(xs)}, after {min(xs):.1f}-{max(xs):.1f} s (median {statistics.median(xs):.1f})"
        )

    reasons = ", ".join(
        f"{name.split('=')[1].strip(chr(34) + '}')} {value:,.0f}"
        for name, value in sorted(m.items())
        if name.startswith("kraken_disconnects_total{") and value
    )
    f = figures.get
    lines = [
        f"RSS: {f('rss_start_mib')} MiB at start, {f('rss_window_start_mib')} after the warm-up "
        f"({f('window_start_s')} s), {f('rss_end_mib')} at the end, peak {f('rss_peak_mib')} "
        f"at {f('rss_peak_at_s')} s; trend {f('rss_slope_mib_per_hour')} MiB/h, "
        f"{f('rss_trend_growth_mib')} MiB over the window (allowed {f('rss_allowed_growth_mib')}); "
        f"ceiling {f('rss_ceiling_mib')} MiB",
        f"fds: {f('fds_start')} at start, {f('fds_end')} at the end, max {f('fds_max')}; beyond "
        f"the connections held at most {f('fds_over_own_max')} (allowed "
        f"{f('fds_over_own_allowed')}); trend {f('fd_trend_growth')} over the window (allowed "
        f"{f('fd_allowed_growth')}); {f('own_connections_mean')} connections held on average, "
        f"{soak.peak_open} at most",
        f"published: {c.published:,} + {c.control_published:,} control + {c.hot_published:,} "
        f"hot; polls {c.polls:,}, entries {c.entries:,}; server: "
        f"{metric('kraken_published_messages_total')} published, "
        f"{metric('kraken_deliveries_total')} deliveries, "
        f"{metric('kraken_connections_accepted_total')} connections accepted",
        f"reconnects {c.reconnects:,}, retro_subscribe STORED {c.retro_stored:,} / NOT_FOUND "
        f"{c.retro_not_found:,}; churn cycles {c.churn_cycles:,}; fuzz {c.fuzz_requests:,} "
        f"requests on {c.fuzz_connections:,} connections ({c.fuzz_closed_by_server:,} closed by "
        "the server)",
        f"slow consumers closed: {spread(c.slow_close_seconds)}; "
        + ", ".join(f"{line!r} {n}" for line, n in c.slow_close_lines.most_common()),
        f"stalled clients closed: {spread(c.stalled_close_seconds)}; idle: "
        f"{spread(c.idle_close_seconds)}",
        f"server disconnects by reason: {reasons or 'none'}",
    ]
    for sub in soak.controls:
        lines.append(
            f"{sub.name}: {sum(sub.received.values()):,} messages received, "
            f"{len(sub.missing(soak.ledger))} missing; {sub.resumes} resumes "
            f"({sub.dropped_answers} after an answer dropped unread), {sub.not_found} NOT_FOUND"
        )
    lines.append(
        f"admin: {c.health_checks:,} /health answered (longest gap {soak.health_gap:.1f} s), "
        f"{c.scrapes:,} scrapes; load generator's longest lag {c.loop_lag_max * 1000:.0f} ms"
        + (f"; leaked connections {c.leaked:,}" if c.leaked else "")
    )
    if soak.samples and soak.samples[-1].cpu is not None:
        lines.append(f"server CPU: {soak.samples[-1].cpu:.0f} s over {soak.samples[-1].t:.0f} s")
    return lines


def final_checks(soak: Soak) -> None:
    """The failures the samples do not show: delivery, internal errors."""
    for sub in soak.controls:
        for error in sub.errors:
            soak.fail("delivery", error)
        missing = sub.missing(soak.ledger)
        if missing:
            soak.fail(
                "delivery",
                f"{sub.name}: {len(missing)} messages published to its topics never arrived "
                f"(first: {missing[:5]})",
            )
        if not sub.received:
            soak.fail("delivery", f"{sub.name}: received nothing")
    internal = soak.metrics.get('kraken_disconnects_total{reason="internal_error"}')
    if internal:
        soak.fail(
            "internal", f"{internal:.0f} connections closed by an internal error (see the log)"
        )


# == the plot ===========================================================================


def plot(soak: Soak, figures: dict[str, Any], path: Path) -> bool:
    """RSS, fds and queues against time, as PNG; False (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: no plot (pip install matplotlib, or "
            "pip install -e '.[bench]'); the figures above are complete"
        )
        return False
    samples = soak.samples
    ts = [s.t / 60 for s in samples]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    warm = figures["window_start_s"] / 60
    for ax in (ax1, ax2, ax3):
        ax.axvspan(0, warm, color="0.92", lw=0)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.tick_params(labelsize=8)
    ax1.plot(ts, [s.rss / MiB for s in samples], color="tab:blue", lw=1, label="RSS")
    t0, t1 = warm, samples[-1].t / 60
    ax1.plot(
        [t0, t1],
        [figures["rss_trend_start_mib"], figures["rss_trend_end_mib"]],
        color="black",
        lw=1.2,
        ls="--",
        label=f"trend {figures['rss_slope_mib_per_hour']:+.1f} MiB/h",
    )
    ax1.plot(
        [t0, t1],
        [
            figures["rss_trend_start_mib"],
            figures["rss_trend_start_mib"] + figures["rss_allowed_growth_mib"],
        ],
        color="tab:red",
        lw=1,
        ls=":",
        label=f"allowed growth ({figures['rss_allowed_growth_mib']:.1f} MiB)",
    )
    ax1.set_ylabel("server RSS (MiB)")
    ax1.legend(fontsize=8, loc="lower right")
    ax2.plot(ts, [s.fds for s in samples], color="tab:blue", lw=1, label="server open fds")
    ax2.plot(
        ts, [s.own for s in samples], color="tab:green", lw=1, label="connections held by the load"
    )
    ax2.plot(
        ts,
        [s.connections if s.connections is not None else math.nan for s in samples],
        color="tab:orange",
        lw=0.8,
        label="kraken_connections",
    )
    ax2.set_ylabel("count")
    ax2.legend(fontsize=8, loc="lower right")
    ax3.plot(
        ts,
        [s.queued_bytes / 1024 if s.queued_bytes is not None else math.nan for s in samples],
        color="tab:purple",
        lw=0.8,
        label="queued KiB",
    )
    ax3.set_ylabel("queued (KiB)")
    ax3b = ax3.twinx()
    ax3b.plot(
        ts,
        [s.buffered if s.buffered is not None else math.nan for s in samples],
        color="tab:gray",
        lw=1,
        label="retro buffer (messages)",
    )
    ax3b.set_ylabel("retro buffer (messages)", fontsize=9)
    ax3b.tick_params(labelsize=8)
    ax3.set_xlabel("minutes (grey: warm-up, not judged)")
    verdict = "FAIL" if soak.failures else "pass"
    fig.suptitle(
        f"soak: {soak.args.minutes:g} min of mixed load, seed {soak.seed}: {verdict}", fontsize=10
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# == the command line ===================================================================


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Soak test: a kraken server under mixed load (pollers, publishers, churn, "
        "slow consumers, stalled and fuzzing clients, admin scrapes); fails when its RSS or "
        "open fds grow beyond the stated bounds, it dies, or a well-behaved client is let down.",
    )
    parser.add_argument(
        "--minutes", type=float, default=30.0, help="length of the load (default 30)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of every random choice (default 1)"
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures and samples as JSON"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        nargs="?",
        const=DEFAULT_PLOT,
        metavar="FILE",
        help="write a PNG of RSS, fds and queues over time (default FILE: docs/img/soak.png); "
        "needs matplotlib",
    )
    parser.add_argument(
        "--rss-floor-mib",
        type=float,
        default=RSS_FLOOR_MIB,
        help="RSS trend growth allowed over the window whatever its length "
        f"(default {RSS_FLOOR_MIB:g})",
    )
    parser.add_argument(
        "--rss-mib-per-hour",
        type=float,
        default=RSS_MIB_PER_HOUR,
        help=f"and per hour of the window (default {RSS_MIB_PER_HOUR:g})",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for kraken run (repeat: --server-arg=--max-tcp-clients "
        "--server-arg=2000)",
    )
    parser.add_argument(
        "--without",
        default="",
        metavar="KINDS",
        help="leave out these kinds of load, comma-separated, to find which one makes a "
        f"failure: {', '.join(LOAD_KINDS)}",
    )
    # a deliberate leak, to see the run fail: N connections a second, held open
    parser.add_argument("--leak", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    args.without = [k for k in args.without.split(",") if k]
    for kind in args.without:
        if kind not in LOAD_KINDS:
            parser.error(f"--without: unknown kind {kind!r} (known: {', '.join(LOAD_KINDS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    import kraken

    port, admin_port = free_port(), free_port()
    argv_ = server_argv(port, admin_port, args.server_arg)
    print(f"soak: Kraken {kraken.__version__}, {args.minutes:g} min, seed {args.seed}")
    print("server: kraken run " + " ".join(argv_[4:]))
    for line in describe_load(args):
        print(line)
    sys.stdout.flush()
    try:
        server = ServerProcess("kraken", argv_, port)
    except ServerError as e:
        print(f"FAIL: {e}")
        return 2
    soak = Soak(args, server, admin_port)
    figures: dict[str, Any] = {}
    try:
        # the server's own fds and RSS before any load (the admin port answers first)
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", admin_port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.2)
        rss_start, soak.base_fds = soak.read_proc()
        soak.t0 = time.monotonic()
        soak.deadline = soak.t0 + soak.duration
        runner(soak.run())
        peak = max(soak.peak_open, 1)
        bounds = Bounds(
            rss_floor_mib=args.rss_floor_mib,
            rss_mib_per_hour=args.rss_mib_per_hour,
            rss_ceiling=ceiling(SERVER_OPTIONS, rss_start, peak),
            base_fds=soak.base_fds,
        )
        figures, failed = judge(soak.samples, bounds)
        figures["rss_before_load_mib"] = round(rss_start / MiB, 2)
        figures["fds_before_load"] = soak.base_fds
        for text in failed:
            soak.failures.append(text)
        final_checks(soak)
    finally:
        alive = server.alive()
        server.stop()
    if alive and server.process.returncode != 0:
        soak.fail("stop", f"the server exited with status {server.process.returncode} on SIGTERM")
    print()
    for line in summary(soak, figures):
        print(line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "minutes": args.minutes,
                    "seed": args.seed,
                    "server_options": SERVER_OPTIONS,
                    "server_args": args.server_arg,
                    "figures": figures,
                    "failures": soak.failures,
                    "counts": {k: jsonable(v) for k, v in vars(soak.counts).items()},
                    "metrics": soak.metrics,
                    "samples": [asdict(s) for s in soak.samples],
                },
                indent=1,
                default=str,
            )
        )
    if args.plot is not None and figures and plot(soak, figures, args.plot):
        print(f"plot: {args.plot}")
    if soak.failures:
        print()
        extra = {k: n - 5 for k, n in soak.failure_kinds.items() if n > 5}
        for text in soak.failures:
            print(f"FAIL: {text}")
        for kind, n in extra.items():
            print(f"FAIL: ... and {n} more of kind {kind!r}")
        log = server.output().strip()
        if log:
            print("server log (last lines):")
            for line in log.splitlines()[-15:]:
                print("  " + line)
        print(f"soak: FAIL ({len(soak.failures)} failures)")
        return 1
    print("soak: pass: every check held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
