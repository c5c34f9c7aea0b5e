"""Hostile clients against a real ``kraken run``: does every documented limit hold?

    python -m benchmarks.hostile                  # every scenario, then the table
    python -m benchmarks.hostile --list           # the scenarios, one line each
    python -m benchmarks.hostile --only fuzz,stalled
    python -m benchmarks.hostile --json hostile.json --scale 0.1   # a quick, smaller run

A black-box run, as issue 11's was. Each scenario starts a server of its own from this
tree (``.venv/bin/kraken run`` on free 127.0.0.1 ports; ``kraken start`` for the token
scenario; under ``prlimit`` for the descriptor one), attacks it through the documented
interfaces only (the Kraken port, the admin HTTP API, the command line, signals:
docs/protocol.md, docs/operations.md, docs/security.md) and measures it from outside:

- VmRSS from /proc/PID/status before the attack, its peak during it (VmHWM, reset
  through /proc/PID/clear_refs when the attack starts, and a 50 ms sampler), and after
  (the attackers gone, the server left to settle);
- open descriptors (/proc/PID/fd), ``/status``, ``/metrics`` and the server's log (no
  traceback, no ERROR line, no ``internal_error`` disconnect).

A control pair runs throughout every scenario, in a process of its own: a publisher
publishes a numbered message to one topic every 20 ms, awaiting its ``STORED``, and a
subscriber polls every 20 ms. The other clients were undisturbed when the subscriber got
every acknowledged message exactly once, in order, and the server closed neither of the
two (in ``sigterm``: closed both with ``SERVER_ERROR shutting down``). The table also
shows the longest delay from publish to receipt, marked STALLED past 1 s; scenarios
aimed at stalls measure them with a ``version`` pinger of their own and judge them.

A scenario passes when every one of its checks holds (``--only NAME`` prints them all),
and the server still runs, logged no ERROR or traceback, counted no ``internal_error``
disconnect, and the control pair was undisturbed. The exit code is 1 when one fails.

Every scenario is bounded in count and in time (120 s at most); the random inputs come
from ``--seed`` (11 unless given), so a run repeats. Nothing here imports ``kraken``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import random
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KRAKEN = ROOT / ".venv" / "bin" / "kraken"
HOST = "127.0.0.1"
MB = 1024 * 1024
SCENARIO_TIMEOUT = 120.0  # seconds: no scenario's attack runs longer
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
CONTROL_TOPIC = b"hostile-control"
CONTROL_PERIOD = 0.02  # seconds between the control pair's publishes, and its polls
CANARY_TOPIC = b"hostile-canary"
DEFAULT_SEED = 11

STORED = b"STORED\r\n"
END = b"END\r\n"
CRLF = b"\r\n"
VERSION_RE = re.compile(rb"VERSION \S+\r\n")
VALUE_RE = re.compile(rb"VALUE (messages|horizon) 0 ([0-9]+)")
HORIZON_RE = re.compile(rb"[0-9]{1,12}(\.[0-9]{1,6})?")


# -- the wire ------------------------------------------------------------------------


def kraken_set(command: bytes, block: bytes, noreply: bool = False) -> bytes:
    extra = b" noreply" if noreply else b""
    return b"set %s 0 0 %d%s\r\n%s\r\n" % (command, len(block), extra, block)


def entry(topics: Iterable[bytes], payload: bytes) -> bytes:
    names = b" ".join(topics)
    return b"MESSAGE %s%d\r\n%s" % (names + b" " if names else b"", len(payload), payload)


def publish(messages: Iterable[tuple[Iterable[bytes], bytes]]) -> bytes:
    return kraken_set(b"publish", b"\r\n".join(entry(t, p) for t, p in messages))


def subscribe(topics: Iterable[bytes]) -> bytes:
    return kraken_set(b"subscribe", b" ".join(topics))


def parse_entries(block: bytes) -> list[tuple[list[bytes], bytes]] | None:
    """The entries of a ``VALUE messages`` block, or None when it is malformed."""
    entries: list[tuple[list[bytes], bytes]] = []
    i = 0
    while i < len(block):
        j = block.find(b"\r\n", i)
        if j < 0:
            return None
        head = block[i:j].split(b" ")
        if len(head) < 3 or head[0] != b"MESSAGE" or not head[-1].isdigit():
            return None
        start = j + 2
        end = start + int(head[-1])
        if end > len(block):
            return None
        entries.append((head[1:-1], block[start:end]))
        i = end
        if i < len(block):
            if block[i : i + 2] != b"\r\n":
                return None
            i += 2
    return entries


# Every reply line docs/protocol.md lists, by the name the results use.
REPLY_FORMS = [
    (name, re.compile(rx))
    for name, rx in [
        ("STORED", rb"STORED"),
        ("NOT_FOUND", rb"NOT_FOUND"),
        ("END", rb"END"),
        ("ERROR", rb"ERROR"),
        ("VERSION", rb"VERSION \S+"),
        ("unknown command", rb"CLIENT_ERROR unknown command .*"),
        ("bad topic", rb"CLIENT_ERROR bad topic"),
        ("bad horizon", rb"CLIENT_ERROR bad horizon"),
        ("bad publish block", rb"CLIENT_ERROR bad publish block"),
        (
            "too many subscriptions",
            rb"CLIENT_ERROR too many subscriptions: [0-9]+ held \+ [0-9]+ new exceeds "
            rb"max_subscriptions_per_client [0-9]+",
        ),
        (
            "too many topics",
            rb"CLIENT_ERROR too many topics: [0-9]+ in one message exceeds "
            rb"max_topics_per_message [0-9]+",
        ),
        ("bad command line format", rb"CLIENT_ERROR bad command line format"),
        ("bad data length", rb"CLIENT_ERROR bad data length"),
        (
            "bad data chunk",
            rb"CLIENT_ERROR bad data chunk: a [0-9]+-byte data block must be followed by \\r\\n",
        ),
        ("incomplete request", rb"CLIENT_ERROR incomplete request: waited .* for .*"),
        ("line too long", rb"CLIENT_ERROR request line longer than [0-9]+ bytes"),
        ("block too large", rb"CLIENT_ERROR data block of [0-9]+ bytes exceeds [0-9]+ bytes"),
        (
            "length too long",
            rb"CLIENT_ERROR data block with a [0-9]+-digit length exceeds [0-9]+ bytes",
        ),
        ("slow consumer", rb"SERVER_ERROR slow consumer"),
        ("too many clients", rb"SERVER_ERROR Too many clients"),
        ("shutting down", rb"SERVER_ERROR shutting down"),
        ("INTERNAL ERROR", rb"SERVER_ERROR internal error.*"),
    ]
]
CLOSING = {
    "bad command line format",
    "bad data length",
    "bad data chunk",
    "incomplete request",
    "line too long",
    "block too large",
    "length too long",
    "slow consumer",
    "too many clients",
    "shutting down",
    "INTERNAL ERROR",
}


@dataclass
class Replies:
    kinds: Counter[str] = field(default_factory=Counter)
    malformed: list[bytes] = field(default_factory=list)  # lines no documented reply matches
    after_close: int = 0  # replies that followed an error which closes the connection
    first: list[str] = field(default_factory=list)  # the first two replies' kinds


def classify(data: bytes, replies: Replies | None = None) -> Replies:
    """Every reply in ``data`` by its documented form; what matches none is malformed."""
    out = replies or Replies()
    i = 0
    closed = False
    seen = 0
    while i < len(data):
        j = data.find(b"\r\n", i)
        if j < 0:
            out.malformed.append(b"unterminated: " + data[i : i + 80])
            break
        line = data[i:j]
        kind = None
        if line.startswith(b"VALUE "):
            m = VALUE_RE.fullmatch(line)
            if m:
                n = int(m[2])
                block = data[j + 2 : j + 2 + n]
                if len(block) < n or data[j + 2 + n : j + 4 + n] != b"\r\n":
                    out.malformed.append(b"truncated VALUE: " + line[:80])
                    break
                ok = (
                    parse_entries(block) is not None
                    if m[1] == b"messages"
                    else HORIZON_RE.fullmatch(block) is not None
                )
                if ok:
                    kind = "VALUE " + m[1].decode()
                else:
                    out.malformed.append(b"bad VALUE block: " + block[:80])
                i = j + 4 + n
            else:
                out.malformed.append(line[:120])
                i = j + 2
        else:
            for name, rx in REPLY_FORMS:
                if rx.fullmatch(line):
                    kind = name
                    break
            else:
                out.malformed.append(line[:120])
            i = j + 2
        if kind is None:
            continue
        if closed:
            out.after_close += 1
        out.kinds[kind] += 1
        if seen < 2:
            out.first.append(kind)
        seen += 1
        closed = closed or kind in CLOSING
    return out


# -- connections ---------------------------------------------------------------------


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, rcvbuf: int | None = None, timeout: float = 10.0) -> Stream:
    if rcvbuf is None:
        return await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, port)), timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=2**20)


def close(writer: asyncio.StreamWriter, reset: bool = False) -> None:
    with contextlib.suppress(Exception):
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()


async def read_all(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, str]:
    """What arrives until EOF ("eof"), a reset ("reset") or ``timeout`` ("timeout")."""
    chunks = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    end = "eof"
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                end = "timeout"
                break
            chunk = await asyncio.wait_for(reader.read(1 << 16), remaining)
            if not chunk:
                break
            chunks.append(chunk)
    except TimeoutError:
        end = "timeout"
    except OSError:
        end = "reset"
    return b"".join(chunks), end


async def read_exact(reader: asyncio.StreamReader, n: int, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout)


async def read_line(reader: asyncio.StreamReader, timeout: float = 30.0) -> bytes:
    return await asyncio.wait_for(reader.readline(), timeout)


class Raw:
    """A connection on a plain non-blocking socket. Unlike a StreamReader, which drops what
    it holds once a reset arrives, it returns every byte received before the reset: the
    server writes its replies, then closes, and a client still sending then gets a reset."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None, timeout: float = 10.0) -> Raw:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, (HOST, port)), timeout
            )
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data: bytes) -> bool:
        """False when the server closed the connection first."""
        try:
            await self.loop.sock_sendall(self.sock, data)
            return True
        except OSError:
            return False

    def write_eof(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    async def read_all(self, timeout: float) -> tuple[bytes, str]:
        """What arrives until EOF ("eof"), a reset ("reset") or ``timeout`` ("timeout")."""
        chunks = []
        deadline = self.loop.time() + timeout
        while True:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return b"".join(chunks), "timeout"
            try:
                chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 1 << 16), remaining)
            except TimeoutError:
                return b"".join(chunks), "timeout"
            except OSError:
                return b"".join(chunks), "reset"
            if not chunk:
                return b"".join(chunks), "eof"
            chunks.append(chunk)

    def close(self) -> None:
        self.sock.close()


async def send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Writes ``data``; False when the server closed the connection first."""
    try:
        writer.write(data)
        await writer.drain()
        return True
    except OSError:
        return False


async def poll(
    stream: Stream, timeout: float = 30.0
) -> tuple[list[tuple[list[bytes], bytes]], bytes]:
    """One ``get messages``: its entries, and the line that ended it (``END``, or an error)."""
    reader, writer = stream
    writer.write(b"get messages\r\n")
    line = await read_line(reader, timeout)
    if line == END:
        return [], line
    m = VALUE_RE.fullmatch(line.rstrip(b"\r\n"))
    if not m:
        return [], line
    block = await read_exact(reader, int(m[2]) + 2, timeout)
    tail = await read_line(reader, timeout)
    entries = parse_entries(block[:-2])
    if entries is None or tail != END:
        return [], b"malformed reply"
    return entries, tail


class Poller:
    """A subscriber polling ``topics`` every ``period`` s in a task, keeping every payload."""

    def __init__(self, port: int, topics: list[bytes], period: float = 0.05) -> None:
        self.port, self.topics, self.period = port, topics, period
        self.payloads: list[bytes] = []
        self.end: bytes | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stream: Stream | None = None

    async def start(self) -> Poller:
        self.stream = await connect(self.port)
        self.stream[1].write(subscribe(self.topics))
        line = await read_line(self.stream[0])
        if line != STORED:
            raise RuntimeError(f"subscribe answered {line!r}")
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self.stream is not None
        try:
            while not self._stop.is_set():
                entries, last = await poll(self.stream)
                self.payloads += [p for _, p in entries]
                if last != END:
                    self.end = last
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.period)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as error:
            self.end = repr(error).encode()

    async def stop(self, drain: float = 1.0) -> None:
        await asyncio.sleep(drain)  # a last poll or two
        self._stop.set()
        if self._task:
            await self._task
        if self.stream:
            close(self.stream[1])


# -- the server, measured from outside ------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def proc_status(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key.encode() + b":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def count_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def kraken_argv() -> list[str]:
    if KRAKEN.exists():
        return [str(KRAKEN)]
    return [sys.executable, "-m", "kraken"]


def kraken_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if not KRAKEN.exists():
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])
        )
    env.pop("KRAKEN_ADMIN_TOKEN", None)
    env.update(extra or {})
    return env


class Server:
    """A Kraken server this harness started, known by its PID."""

    def __init__(
        self,
        workdir: Path,
        options: Iterable[str] = (),
        nofile: int | None = None,
        launcher: str = "run",
        token: str | None = None,
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.token = token
        self.log_path = workdir / f"kraken-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.start_seconds = 0.0
        self.start_cmdline_had_token = False
        ports = ["--tcp-server-port", str(self.port), "--admin-port", str(self.admin_port)]
        started = time.monotonic()
        if launcher == "run":
            argv = [*kraken_argv(), "run", *ports, *options]
            if nofile is not None:
                argv = ["prlimit", f"--nofile={nofile}:{nofile}", *argv]
            self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
            self.process = subprocess.Popen(
                argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=kraken_env()
            )
            self.pid = self.process.pid
        else:  # kraken start: a server in the background, in its own session
            self.log_file = None
            pid_file = workdir / f"kraken-{self.port}.pid"
            argv = [
                *kraken_argv(),
                "start",
                *ports,
                "--log-file",
                str(self.log_path),
                "--pid-file",
                str(pid_file),
                *options,
            ]
            starter = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=kraken_env()
            )
            while starter.poll() is None and token:  # what `ps` shows of it meanwhile
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{starter.pid}/cmdline").read_bytes()
                    self.start_cmdline_had_token |= token.encode() in cmdline
                time.sleep(0.01)
            out, _ = starter.communicate(timeout=START_TIMEOUT)
            if starter.returncode != 0:
                raise RuntimeError(f"kraken start failed: {out.decode(errors='replace')}")
            self.pid = int(pid_file.read_text().split()[0])
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    if self.get("/health")[0] == 200:
                        socket.create_connection((HOST, self.port), timeout=1).close()
                        break
                except OSError:
                    pass
                if not self.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{self.log()[-3000:]}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    # what /proc says
    def rss(self) -> int:
        return proc_status(self.pid, "VmRSS")

    def hwm(self) -> int:
        return proc_status(self.pid, "VmHWM")

    def reset_hwm(self) -> None:
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def fds(self) -> int:
        return count_fds(self.pid)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    # the admin API, as the harness's own (allowed) client
    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.admin_port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def get_json(self, path: str, patience: float = 15.0) -> Any:
        """GET ``path``, retried while the admin API refuses (503) or is slow."""
        deadline = time.monotonic() + patience
        while True:
            try:
                status, body = self.get(path)
                if status == 200:
                    return json.loads(body) if path != "/metrics" else body.decode()
            except OSError:
                pass
            if time.monotonic() > deadline or not self.alive():
                return None
            time.sleep(0.2)

    def status(self) -> dict[str, Any]:
        return self.get_json("/status") or {}

    def metrics(self) -> dict[str, float]:
        text = self.get_json("/metrics") or ""
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def log(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        """The exit code once the server has exited (None when it is not our child)."""
        if self.process is not None:
            try:
                self.returncode = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError from None
            return self.returncode
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(STOP_TIMEOUT)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    self.wait(5)
        if self.log_file:
            self.log_file.close()


class Sampler:
    """Samples the server's VmRSS (every 50 ms) and descriptors (every 200 ms) in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.05):
            self.peak_rss = max(self.peak_rss, proc_status(self.pid, "VmRSS"))
            if tick % 4 == 0:
                self.peak_fds = max(self.peak_fds, count_fds(self.pid))
            tick += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# -- the control pair ----------------------------------------------------------------


class Control:
    """The control publisher and subscriber, in a process of their own."""

    def __init__(self, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.hostile", "--control", str(port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            self.process.kill()
            raise RuntimeError(f"the control pair did not start: {line!r}")

    def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(b"stop\n")
            self.process.stdin.flush()
        try:
            out, _ = self.process.communicate(timeout=30)
            result: dict[str, Any] = json.loads(out)
            return result
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            self.process.kill()
            self.process.wait()
            return {"error": "the control pair did not report"}


async def control_main(port: int) -> None:
    """The control pair's process: runs until a line on stdin, then prints its result."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sub = await connect(port)
    sub[1].write(subscribe([CONTROL_TOPIC]))
    if await read_line(sub[0]) != STORED:
        raise SystemExit("control: subscribe failed")
    pub = await connect(port)
    print("ready", flush=True)

    stop_time = 0.0

    def stopping() -> None:
        nonlocal stop_time
        stop_time = time.time()
        stop.set()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        loop.call_soon_threadsafe(stopping)

    threading.Thread(target=wait_for_stop, daemon=True).start()
    acked: list[int] = []
    acked_at: dict[int, float] = {}
    answered_poll_sent = 0.0  # when the last poll that got an answer was sent
    ack_delays: list[float] = []
    received: Counter[int] = Counter()
    order: list[int] = []
    delays: list[float] = []
    foreign = 0
    ends: dict[str, str] = {}
    sent = 0

    async def publisher() -> None:
        nonlocal sent
        reader, writer = pub
        while not stop.is_set():
            sent += 1
            started = time.time()
            writer.write(publish([([CONTROL_TOPIC], b"%d %.6f" % (sent, started))]))
            try:
                line = await read_line(reader, 60)
            except (OSError, TimeoutError) as error:
                ends["publisher"] = repr(error)
                return
            if line == STORED:
                acked.append(sent)
                acked_at[sent] = time.time()
                ack_delays.append(time.time() - started)
            else:
                ends["publisher"] = line.decode(errors="replace").strip() or "EOF"
                return
            await asyncio.sleep(max(0.0, CONTROL_PERIOD - (time.time() - started)))

    async def subscriber() -> None:
        nonlocal foreign, answered_poll_sent
        quiet_since = None
        while True:
            poll_sent = time.time()
            try:
                entries, last = await poll(sub, 60)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                ends["subscriber"] = repr(error)
                return
            if last == END:
                answered_poll_sent = poll_sent
            now = time.time()
            for _, payload in entries:
                try:
                    seq_text, stamp = payload.split(b" ")
                    seq = int(seq_text)
                except ValueError:
                    foreign += 1
                    continue
                received[seq] += 1
                order.append(seq)
                delays.append(now - float(stamp))
            if last != END:
                ends["subscriber"] = last.decode(errors="replace").strip() or "EOF"
                return
            if stop.is_set():
                # the publisher has stopped: poll until every acknowledged message is in
                if all(received[s] for s in acked) or "publisher" in ends:
                    quiet_since = quiet_since or now
                    if now - quiet_since > 0.2:
                        return
                if now - stop_time > 5:
                    return
            await asyncio.sleep(CONTROL_PERIOD)

    publishing = asyncio.create_task(publisher())
    subscribing = asyncio.create_task(subscriber())
    await stop.wait()
    await publishing
    await subscribing
    for _, writer in (sub, pub):
        close(writer)
    delays.sort()
    ack_delays.sort()
    result = {
        "sent": sent,
        "acked": len(acked),
        "received_once": sum(
            1 for s in acked if received[s] == 1 and acked_at[s] < answered_poll_sent
        ),
        # acknowledged before a poll that was answered, yet never received: lost. Those
        # acknowledged after the subscriber's last answered poll (it was closed: a drain)
        # could not reach it, and are counted apart.
        "lost": sum(1 for s in acked if received[s] == 0 and acked_at[s] < answered_poll_sent),
        "acked_after_last_poll": sum(1 for s in acked if acked_at[s] >= answered_poll_sent),
        "duplicates": sum(c - 1 for c in received.values() if c > 1),
        "out_of_order": sum(1 for a, b in itertools.pairwise(order) if b <= a),
        "foreign": foreign,
        "max_delay_ms": round(1000 * delays[-1], 1) if delays else None,
        "p99_delay_ms": round(1000 * delays[int(0.99 * (len(delays) - 1))], 1) if delays else None,
        "max_ack_ms": round(1000 * ack_delays[-1], 1) if ack_delays else None,
        "ends": ends,
    }
    print(json.dumps(result), flush=True)


# -- scenarios -----------------------------------------------------------------------


@dataclass
class Outcome:
    sent: str = ""
    answered: str = ""
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    # what the generic checks should expect
    server_exits: bool = False
    control_closed_by: str | None = None  # the line the control pair may end on

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, bool(ok), detail))
        return bool(ok)


class Ctx:
    def __init__(self, server: Server, rng: random.Random, scale: float, workdir: Path) -> None:
        self.server = server
        self.port = server.port
        self.rng = rng
        self.scale = scale
        self.workdir = workdir
        self.out = Outcome()

    def n(self, count: int) -> int:
        return max(1, int(count * self.scale))


@dataclass
class Scenario:
    name: str
    summary: str
    run: Callable[[Ctx], Awaitable[None]]
    options: tuple[str, ...] = ()
    nofile: int | None = None
    launcher: str = "run"
    token: str | None = None
    settle: float = 2.0  # seconds after the attack before "after" is measured


SCENARIOS: list[Scenario] = []


def scenario(
    name: str, summary: str, **kwargs: Any
) -> Callable[[Callable[[Ctx], Awaitable[None]]], Callable[[Ctx], Awaitable[None]]]:
    def register(run: Callable[[Ctx], Awaitable[None]]) -> Callable[[Ctx], Awaitable[None]]:
        SCENARIOS.append(Scenario(name, summary, run, **kwargs))
        return run

    return register


async def gather_limited(n: int, coroutines: Iterable[Awaitable[Any]]) -> list[Any]:
    semaphore = asyncio.Semaphore(n)

    async def one(c: Awaitable[Any]) -> Any:
        async with semaphore:
            return await c

    return await asyncio.gather(*(one(c) for c in coroutines))


def mb(n: float) -> str:
    return f"{n / MB:.0f}"


def counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counter.most_common())


# fuzz ------------------------------------------------------------------------------

FUZZ_TOPICS = [b"fz%d" % i for i in range(40)] + [
    b"a" * 250,
    b"b" * 251,
    b"t\x01",
    b"\xc3\xa9t\xc3\xa9",
    b"del\x7f",
]
SPECIAL_NUMBERS = [
    b"0",
    b"-1",
    b"2147483648",
    b"4294967296",
    b"18446744073709551616",
    b"9" * 30,
    b"0" * 40 + b"7",
    b"9" * 5000,
    b"1e3",
    b"0x10",
    b" 5",
    b"",
    b"8388608",
    b"8388609",
]
INTERESTING_BYTES = b"\x00 \r\n\x7f\xff0:9"


def fuzz_valid(rng: random.Random) -> bytes:
    def topics() -> bytes:
        return b" ".join(rng.choice(FUZZ_TOPICS) for _ in range(rng.randint(0, 6)))

    noreply = rng.random() < 0.1
    k = rng.random()
    if k < 0.07:
        return kraken_set(b"register", b"", noreply)
    if k < 0.22:
        return kraken_set(rng.choice([b"subscribe", b"unsubscribe"]), topics(), noreply)
    if k < 0.32:
        horizon = rng.choice(
            [
                b"%.6f" % (time.time() - rng.uniform(0, 30)),
                b"%d" % time.time(),
                b"0",
                b"-1",
                b"1e9",
                b"%.7f" % time.time(),
                b"%d" % (time.time() + 3600),
                b"",
            ]
        )
        return kraken_set(b"retro_subscribe", horizon + b"\r\n" + topics(), noreply)
    if k < 0.62:
        entries = [
            entry([t for t in topics().split(b" ") if t], rng.randbytes(rng.randint(0, 64)))
            for _ in range(rng.randint(1, 4))
        ]
        block = b"\r\n".join(entries) + (b"\r\n" if rng.random() < 0.3 else b"")
        return kraken_set(b"publish", block, noreply)
    if k < 0.85:
        return rng.choice(
            [
                b"get messages\r\n",
                b"get messages horizon\r\n",
                b"get horizon\r\n",
                b"get nothing here\r\n",
                b"get\r\n",
                b"\r\n",
            ]
        )
    if k < 0.97:
        return b"version\r\n"
    if k < 0.995:
        return kraken_set(b"frobnicate", b"x")
    return b"quit\r\n"


def fuzz_mutate(rng: random.Random, request: bytes) -> bytes:
    data = bytearray(request)
    for _ in range(rng.randint(1, 3)):
        if not data:
            data += rng.randbytes(1)
            continue
        pos = rng.randrange(len(data))
        op = rng.randrange(9)
        if op == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del data[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            data[pos:pos] = data[pos : pos + rng.randint(1, 32)]
        elif op == 4:
            runs = list(re.finditer(rb"[0-9]+", bytes(data)))
            if runs:
                m = rng.choice(runs)
                data[m.start() : m.end()] = rng.choice(SPECIAL_NUMBERS)
        elif op == 5:
            crlf = [m.start() for m in re.finditer(rb"\r\n", bytes(data))]
            if crlf:
                at = rng.choice(crlf)
                data[at : at + 2] = rng.choice([b"\n", b"\r", b"", b"\r\r\n", b"\n\r"])
        elif op == 6:
            del data[pos:]
        elif op == 7:
            data[pos:pos] = rng.choice([b"\r\n", b" ", b"  ", b"\t"])
        else:
            data[pos] = rng.choice(INTERESTING_BYTES)
    return bytes(data)


def fuzz_request(rng: random.Random) -> bytes:
    k = rng.random()
    if k < 0.4:
        raw = rng.randbytes(rng.randint(1, 300))
        return raw + b"\r\n" if rng.random() < 0.3 else raw
    if k < 0.9:
        return fuzz_mutate(rng, fuzz_valid(rng))
    return fuzz_valid(rng)


@scenario(
    "fuzz",
    "100,000 fuzzed requests (40% random bytes, 50% mutated valid, 10% valid) over 10,000 "
    "connections, 50 at a time, each led by a canary publish that must reach its subscriber",
)
async def fuzz(ctx: Ctx) -> None:
    per_connection = 10  # a fault that closes comes early: few requests a connection get read
    connections = ctx.n(10_000)
    batches = [[fuzz_request(ctx.rng) for _ in range(per_connection)] for _ in range(connections)]
    chunkings = [ctx.rng.randrange(1 << 30) for _ in range(connections)]
    canary = await Poller(ctx.port, [CANARY_TOPIC], 0.1).start()
    replies = Replies()
    ends: Counter[str] = Counter()
    first_bad = 0

    async def one(i: int) -> None:
        nonlocal first_bad
        conn = await Raw.open(ctx.port)
        head = publish([([CANARY_TOPIC], b"canary %d" % i)]) + b"version\r\n"
        data = head + b"".join(batches[i])
        rng = random.Random(chunkings[i])

        async def write() -> None:
            at = 0
            while at < len(data):
                size = rng.choice([1, 7, 100, 1000, 4096, 1 << 16])
                if not await conn.send(data[at : at + size]):
                    return
                at += size
            conn.write_eof()

        writing = asyncio.create_task(write())
        out, end = await conn.read_all(20)
        await writing
        conn.close()
        ends[end] += 1
        got = classify(out)
        if got.first[:2] != ["STORED", "VERSION"]:
            first_bad += 1
        replies.kinds.update(got.kinds)
        replies.malformed += got.malformed
        replies.after_close += got.after_close

    started = time.monotonic()
    log_before = ctx.server.log_size()
    bytes_before = ctx.server.metrics().get("kraken_bytes_received_total", 0)
    await gather_limited(50, (one(i) for i in range(connections)))
    bytes_read = ctx.server.metrics().get("kraken_bytes_received_total", 0) - bytes_before
    bytes_sent = sum(len(r) for batch in batches for r in batch)
    elapsed = time.monotonic() - started
    log_growth = ctx.server.log_size() - log_before
    await canary.stop()
    got = Counter(canary.payloads)
    expected = {b"canary %d" % i for i in range(connections)}
    o = ctx.out
    o.sent = f"{connections * per_connection:,} fuzzed requests on {connections:,} connections"
    total = sum(replies.kinds.values())
    top = ", ".join(f"{k} {v:,}" for k, v in replies.kinds.most_common(5))
    o.answered = (
        f"{total:,} replies ({top}, ...) in {elapsed:.0f} s; log +{log_growth / 1000:.0f} KB"
    )
    o.figures["reply_kinds"] = dict(replies.kinds)
    o.figures["connection_ends"] = dict(ends)
    o.figures["log_bytes"] = log_growth
    o.figures["fuzz_bytes_sent"] = bytes_sent
    o.figures["bytes_read_by_server"] = bytes_read
    o.figures["log_bytes_per_framing_error"] = round(
        log_growth / max(1, sum(replies.kinds[k] for k in CLOSING)), 1
    )
    o.check("no internal error reply", replies.kinds["INTERNAL ERROR"] == 0)
    o.check(
        "every reply is a documented one",
        not replies.malformed,
        f"{len(replies.malformed)} malformed, first {replies.malformed[:3]!r}",
    )
    o.check(
        "nothing after an error that closes", replies.after_close == 0, str(replies.after_close)
    )
    o.check(
        "each connection's first requests answered (STORED, VERSION)",
        first_bad == 0,
        f"{first_bad} not",
    )
    o.check(
        "each canary publish delivered exactly once",
        set(got) == expected and all(v == 1 for v in got.values()),
        f"{len(set(got) & expected)}/{len(expected)} delivered, "
        f"{sum(v - 1 for v in got.values())} duplicates, poller end {canary.end!r}",
    )
    o.check("every connection closed by the server after EOF", ends["timeout"] == 0, counts(ends))


# stalled ---------------------------------------------------------------------------

STALLS = [
    (
        b"set publish 0 0 27\r\nMESSAGE topicA 9\r\nhi ther",
        b"2 more bytes of a 27-byte set publish",
    ),
    (b"set subscribe 0 0 6\r\ntopicA", b"the \\r\\n after a 6-byte set subscribe data block"),
    (b"set subscribe 0 0 6\r\ntopicA\r", b"the \\n after a 6-byte set subscribe data block"),
    (b"set publish 0 0 2", b"the end of a request line (17 bytes so far)"),
]
STALL_TIMEOUT = 10.0


@scenario(
    "stalled",
    "2,000 connections each send half a request (4 kinds) and wait: each must get "
    f"CLIENT_ERROR incomplete request after request_timeout ({STALL_TIMEOUT:.0f} s here), "
    "never early, at most 2 s late",
    options=("--request-timeout", str(STALL_TIMEOUT)),
)
async def stalled(ctx: Ctx) -> None:
    n = ctx.n(2000)
    streams: list[tuple[Stream, float, int]] = []
    for i in range(n):
        stream = await connect(ctx.port)
        kind = i % len(STALLS)
        stream[1].write(STALLS[kind][0])
        streams.append((stream, time.monotonic(), kind))
        if i % 200 == 199:
            await asyncio.sleep(0)
    opened = ctx.server.status().get("clients", 0)

    async def one(stream: Stream, sent: float, kind: int) -> tuple[float, bool, str]:
        out, end = await read_all(stream[0], STALL_TIMEOUT + 15)
        delay = time.monotonic() - sent
        close(stream[1])
        expected = b"CLIENT_ERROR incomplete request: waited %d s for %s" % (
            STALL_TIMEOUT,
            STALLS[kind][1],
        )
        return delay, out.startswith(expected) and out.endswith(b"\r\n") and end == "eof", end

    results = await asyncio.gather(*(one(*s) for s in streams))
    delays = sorted(d for d, _, _ in results)
    right = sum(ok for _, ok, _ in results)
    o = ctx.out
    o.sent = f"{n:,} half requests ({len(STALLS)} kinds), then silence"
    o.answered = (
        f"{right:,} x CLIENT_ERROR incomplete request + close, {delays[0]:.2f}-{delays[-1]:.2f} s "
        "after the last byte"
    )
    o.figures.update(clients_while_stalled=opened, min_delay=delays[0], max_delay=delays[-1])
    o.check("all held open until the timeout", opened >= n, f"{opened} clients in /status")
    o.check("each answered the documented line, then closed", right == n, f"{right}/{n}")
    o.check("never early", delays[0] >= STALL_TIMEOUT, f"first after {delays[0]:.3f} s")
    o.check("at most 2 s late", delays[-1] <= STALL_TIMEOUT + 2.0, f"last after {delays[-1]:.3f} s")


# huge lengths, long lines, parser inputs ----------------------------------------------


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[bytes, str, float]:
    """Sends ``data`` on a new connection, then EOF; returns what came back, how it ended,
    and the time from the send to the end."""
    conn = await Raw.open(port)
    started = time.monotonic()
    reading = asyncio.ensure_future(conn.read_all(timeout))
    if await conn.send(data):
        conn.write_eof()
    out, end = await reading
    conn.close()
    return out, end, time.monotonic() - started


@scenario(
    "huge-length",
    "set lines declaring 2 GB (2147483648) and 5,000-digit block lengths, a 5,000-digit entry "
    "length inside a publish, 8 MiB + 1; zero-padded and exactly-8-MiB blocks must pass",
)
async def huge_length(ctx: Ctx) -> None:
    each = ctx.n(300)
    nines = b"9" * 5000
    inner = entry([b"t"], b"x").replace(b" 1\r\n", b" " + nines + b"\r\n")
    cases = [
        (
            "2 GB length",
            b"set publish 0 0 2147483648\r\n",
            b"CLIENT_ERROR data block of 2147483648 bytes exceeds 8388608 bytes\r\n",
            each,
        ),
        (
            "5,000-digit length",
            b"set publish 0 0 " + nines + b"\r\n",
            b"CLIENT_ERROR data block with a 5000-digit length exceeds 8388608 bytes\r\n",
            each,
        ),
        (
            "5,000-digit entry length",
            kraken_set(b"publish", inner) + b"version\r\n",
            b"CLIENT_ERROR bad publish block\r\nVERSION ",
            each,
        ),
        (
            "8 MiB + 1",
            b"set publish 0 0 8388609\r\n",
            b"CLIENT_ERROR data block of 8388609 bytes exceeds 8388608 bytes\r\n",
            each,
        ),
        ("-1", b"set publish 0 0 -1\r\n", b"CLIENT_ERROR bad data length\r\n", 20),
    ]
    log_before = ctx.server.log_size()
    o = ctx.out
    answered = []
    sent = 0
    for name, data, expected, count in cases:
        results = await gather_limited(50, (exchange(ctx.port, data) for _ in range(count)))
        sent += count
        right = sum(out.startswith(expected) for out, _, _ in results)
        slowest = max(t for _, _, t in results)
        longest = max(len(out) for out, _, _ in results)
        o.check(
            f"{name}: the documented reply, at once, not echoed",
            right == count and slowest < 2 and longest < 200,
            f"{right}/{count} right, slowest {slowest * 1000:.0f} ms, longest reply {longest} B",
        )
        first_line = expected.split(CRLF)[0].decode()[:40]
        answered.append(f"{name}: {first_line}... x{right}")
    log_growth = ctx.server.log_size() - log_before
    padded = entry([b"t"], b"hello")
    data = b"set publish 0 0 %s%d\r\n%s\r\nversion\r\n" % (b"0" * 4990, len(padded), padded)
    out, _, _ = await exchange(ctx.port, data)
    o.check(
        "zero-padded length (4,990 zeros) accepted",
        out.startswith(STORED + b"VERSION"),
        repr(out[:60]),
    )
    n = 8388608 - len(entry([b"limit"], b"")) - 6  # the length field grows by 6 digits
    big = entry([b"limit"], b"y" * n)
    out, _, took = await exchange(ctx.port, kraken_set(b"publish", big) + b"version\r\n", 30)
    o.check(
        "a block of exactly 8 MiB accepted",
        len(big) == 8388608 and out.startswith(STORED),
        f"{len(big)} B: {out[:40]!r} in {took:.2f} s",
    )
    sent += 2
    o.sent = f"{sent:,} requests: " + ", ".join(f"{c[0]} x{c[3]}" for c in cases)
    o.answered = (
        "CLIENT_ERROR data block ... exceeds 8388608 bytes (2 GB, 8 MiB + 1) or with a "
        "5000-digit length, then the close, within ms; bad publish block (entry), connection "
        "kept; bad data length (-1)"
    )
    o.figures["replies"] = answered
    o.figures["log_bytes_per_request"] = round(log_growth / sum(c[3] for c in cases), 1)
    o.check(
        "the log grows little per request (issue 11: 4.6 KB)",
        log_growth / sum(c[3] for c in cases) < 400,
        f"{log_growth / sum(c[3] for c in cases):.0f} B per request",
    )


@scenario(
    "long-line",
    "10 MB lines: 20 connections each stream 10 MB without a line end, 20 send 10 MB with "
    "one; exactly 8,192 bytes passes, 8,193 not; 10 MB of empty lines from a client that "
    "reads nothing for 5 s",
)
async def long_line(ctx: Ctx) -> None:
    size = 10 * 1000 * 1000
    n = ctx.n(20)
    expected = b"CLIENT_ERROR request line longer than 8192 bytes\r\n"
    chunk = b"a" * (1 << 16)
    o = ctx.out

    async def stream_line(with_end: bool) -> tuple[bool, int]:
        conn = await Raw.open(ctx.port)
        reading = asyncio.ensure_future(conn.read_all(15))
        sent = 0
        if with_end:
            ok = await conn.send(b"get " + b"a" * size + b"\r\n")
            sent = size if ok else 0
        else:
            while sent < size and await conn.send(chunk):
                sent += len(chunk)
        out, _ = await reading
        conn.close()
        return out == expected, sent

    results = await asyncio.gather(*(stream_line(False) for _ in range(n)))
    o.check(
        "10 MB without a line end: the documented reply, then closed",
        all(ok for ok, _ in results),
        f"{sum(ok for ok, _ in results)}/{n}; the server took at most "
        f"{max(s for _, s in results) / MB:.1f} MB before closing",
    )
    results = await asyncio.gather(*(stream_line(True) for _ in range(n)))
    o.check(
        "10 MB with a line end: the documented reply, then closed",
        all(ok for ok, _ in results),
        f"{sum(ok for ok, _ in results)}/{n}",
    )
    out, _, _ = await exchange(ctx.port, b"get " + b"k" * 8188 + b"\r\nversion\r\n")
    o.check(
        "a line of exactly 8,192 bytes is served", out.startswith(END + b"VERSION"), repr(out[:40])
    )
    out, _, _ = await exchange(ctx.port, b"get " + b"k" * 8189 + b"\r\n")
    o.check("8,193 bytes is refused", out == expected, repr(out[:60]))
    o.sent = f"{n} x 10 MB streamed without a line end, {n} x 10 MB lines, 8,192/8,193-byte lines"
    o.answered = "CLIENT_ERROR request line longer than 8192 bytes, then the close"


class Pinger:
    """``version`` every 10 ms on a connection of its own: the worst wait for its answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.worst = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Pinger:
        reader, writer = await connect(self.port)

        async def run() -> None:
            while not self._stop.is_set():
                started = time.monotonic()
                writer.write(b"version\r\n")
                await read_line(reader, 60)
                self.worst = max(self.worst, time.monotonic() - started)
                await asyncio.sleep(0.01)
            close(writer)

        self._task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


@scenario(
    "pipeline-flood",
    "one connection pipelines 10 MB of empty lines (5,000,000 requests, each answered ERROR) "
    "and reads its replies; then again, reading nothing for 5 s (4 KB receive buffer)",
)
async def pipeline_flood(ctx: Ctx) -> None:
    o = ctx.out
    lines = ctx.n(5_000_000)
    data = b"\r\n" * lines + b"version\r\n"
    expected = 7 * lines + len(b"VERSION 0.1.0\r\n")
    results = []
    for delay in (0.0, 5.0):
        conn = await Raw.open(ctx.port, rcvbuf=4096 if delay else None)
        async with Pinger(ctx.port) as pinger:
            started = time.monotonic()
            sending = asyncio.ensure_future(conn.send(data))
            rss_unread = unsent = 0
            if delay:
                await asyncio.sleep(delay)
                rss_unread = ctx.server.rss()
                unsent = ctx.server.status().get("largest_unsent_bytes", 0)
            received = bytearray()
            while len(received) < expected:
                try:
                    chunk = await asyncio.wait_for(conn.loop.sock_recv(conn.sock, 1 << 20), 30)
                except (TimeoutError, OSError):
                    break
                if not chunk:
                    break
                received += chunk
            await sending
            took = time.monotonic() - started
        conn.close()
        errors = received.count(b"ERROR\r\n")
        results.append((delay, errors, took, pinger.worst, rss_unread, unsent))
        o.check(
            f"{'reading' if not delay else 'unread for 5 s'}: every empty line answered ERROR",
            errors == lines and received.endswith(b"VERSION 0.1.0\r\n"),
            f"{errors:,}/{lines:,} in {took:.1f} s",
        )
        if delay:
            o.check(
                "unread replies bounded while unread",
                unsent <= 16 * MB,
                f"RSS {rss_unread / MB:.0f} MB, largest_unsent_bytes {unsent:,} after 5 s",
            )
        o.check(
            f"{'reading' if not delay else 'unread for 5 s'}: another client answered within 1 s",
            pinger.worst < 1.0,
            f"a version request on another connection waited up to {pinger.worst * 1000:.0f} ms",
        )
    o.figures["phases"] = [
        {"unread_s": d, "errors": e, "seconds": round(t, 2), "worst_other_ms": round(w * 1000)}
        for d, e, t, w, _, _ in results
    ]
    o.sent = f"2 x {lines * 2 / 1e6:.0f} MB of empty lines ({lines:,} requests) on one connection"
    o.answered = (
        f"ERROR to each, in {results[0][2]:.1f} s and {results[1][2]:.1f} s; another client "
        f"waited up to {results[0][3]:.1f} s and {results[1][3]:.1f} s"
    )


@scenario(
    "parser-inputs",
    "issue 11's parser breakers, each pipelined behind a canary publish in the same write: "
    "251 spaces as a topic list, a 4,300-digit entry length, a 4,301-digit block length",
)
async def parser_inputs(ctx: Ctx) -> None:
    canary = await Poller(ctx.port, [CANARY_TOPIC], 0.05).start()
    cases = [
        ("251 spaces", kraken_set(b"subscribe", b" " * 251) + b"version\r\n", STORED + b"VERSION"),
        (
            "4,300-digit entry length",
            kraken_set(b"publish", b"MESSAGE t " + b"9" * 4300 + b"\r\nx") + b"version\r\n",
            b"CLIENT_ERROR bad publish block\r\nVERSION",
        ),
        (
            "4,301-digit block length",
            b"set publish 0 0 " + b"9" * 4301 + b"\r\n",
            b"CLIENT_ERROR data block with a 4301-digit length exceeds 8388608 bytes\r\n",
        ),
    ]
    o = ctx.out
    for i, (name, data, expected) in enumerate(cases):
        head = publish([([CANARY_TOPIC], b"canary %d" % i)])
        out, _, _ = await exchange(ctx.port, head + data)
        o.check(
            f"{name}: answered, the publish before it kept",
            out.startswith(STORED + expected),
            repr(out[:90]),
        )
    # issue 11, item 7: what a reply echoes of the client's input is capped
    name = b"x" * 8000
    out, _, _ = await exchange(ctx.port, kraken_set(name, b"abc") + b"version\r\n")
    first = out.split(CRLF)[0]
    o.check(
        "an 8,000-byte set command name: refused, echoed capped, connection kept",
        first.startswith(b"CLIENT_ERROR unknown command x") and len(first) < 120,
        f"{len(first)}-byte reply line, then {out.split(CRLF)[1][:20]!r}",
    )
    await canary.stop(0.5)
    o.check(
        "each canary delivered once",
        sorted(canary.payloads) == [b"canary %d" % i for i in range(len(cases))],
        repr(canary.payloads),
    )
    o.sent = (
        "3 connections: a publish, then "
        + ", ".join(c[0] for c in cases)
        + "; an 8,000-byte set command name"
    )
    o.answered = (
        f"STORED, then STORED / bad publish block / 4301-digit length error; a "
        f"{len(first)}-byte CLIENT_ERROR unknown command"
    )


# topics --------------------------------------------------------------------------------


def topic_list(count: int, prefix: bytes = b"t", start: int = 0) -> bytes:
    return b" ".join(b"%s%06d" % (prefix, i) for i in range(start, start + count))


async def request(
    stream: Stream, data: bytes, lines: int = 1, timeout: float = 60.0
) -> list[bytes]:
    stream[1].write(data)
    await stream[1].drain()
    return [await read_line(stream[0], timeout) for _ in range(lines)]


@scenario(
    "subscribe-940k",
    "set subscribe naming 940,000 distinct topics (7.5 MB), 5 times on 5 connections; "
    "then 10,000 (the limit) and one more; then 20 connections x 10,000 topics",
)
async def subscribe_940k(ctx: Ctx) -> None:
    o = ctx.out
    count = 940_000
    block = topic_list(count)
    expected = (
        b"CLIENT_ERROR too many subscriptions: 0 held + %d new exceeds "
        b"max_subscriptions_per_client 10000\r\n" % count
    )
    times = []
    rss = []
    waits = {}
    peaks = {}
    ctx.server.reset_hwm()
    async with Pinger(ctx.port) as pinger:
        for _ in range(ctx.n(5)):
            stream = await connect(ctx.port)
            started = time.monotonic()
            replies = await request(stream, kraken_set(b"subscribe", block) + b"version\r\n", 2)
            times.append(time.monotonic() - started)
            rss.append(ctx.server.rss())
            o.check(
                "940,000 topics refused whole, connection kept",
                replies[0] == expected and VERSION_RE.fullmatch(replies[1]) is not None,
                repr(replies[0][:100]),
            )
            close(stream[1])
    waits["940k"] = round(pinger.worst * 1000)
    peaks["940k"] = round(ctx.server.hwm() / MB)
    subs = ctx.server.status().get("subscriptions")
    o.check("nothing subscribed", subs == 1, f"/status subscriptions {subs} (the control's 1)")
    stream = await connect(ctx.port)
    at_limit = await request(stream, kraken_set(b"subscribe", topic_list(10_000, b"l")))
    one_more = await request(stream, kraken_set(b"subscribe", b"extra"))
    again = await request(stream, kraken_set(b"subscribe", b"l000000 l009999"))
    o.check("exactly 10,000 accepted", at_limit == [STORED], repr(at_limit))
    o.check(
        "one more refused",
        one_more[0].startswith(b"CLIENT_ERROR too many subscriptions: 10000 held + 1 new"),
        repr(one_more),
    )
    o.check("topics already held pass at the limit", again == [STORED], repr(again))
    close(stream[1])
    await asyncio.sleep(0.5)
    base = ctx.server.rss()
    many = [await connect(ctx.port) for _ in range(ctx.n(20))]
    async with Pinger(ctx.port) as pinger:
        for i, s in enumerate(many):
            await request(s, kraken_set(b"subscribe", topic_list(10_000, b"m%02d" % i)))
    waits["10,000 each"] = round(pinger.worst * 1000)
    held = ctx.server.rss()
    per_subscription = (held - base) / (len(many) * 10_000)
    for s in many:
        close(s[1])
    o.figures.update(
        seconds_per_940k_request=[round(t, 2) for t in times],
        rss_after_each_mb=[round(r / MB) for r in rss],
        bytes_per_subscription=round(per_subscription),
        worst_wait_of_another_client_ms=waits,
        rss_peak_mb=peaks,
    )
    o.sent = (
        f"{len(times)} x subscribe of 940,000 topics (7.5 MB), 10,000 + 1 topics, "
        f"{len(many)} x 10,000 topics"
    )
    o.answered = (
        f"CLIENT_ERROR too many subscriptions in {min(times):.2f}-{max(times):.2f} s; "
        f"10,000 STORED; {len(many) * 10_000:,} subscriptions cost {per_subscription:.0f} B "
        f"each; another client waited up to {waits['940k']} ms"
    )


@scenario(
    "publish-940k",
    "publish of one message naming 940,000 topics, 5 times; then 10,000 (the limit) and "
    "10,001; then 100 messages of 10,000 distinct topics each, into the retro buffer",
)
async def publish_940k(ctx: Ctx) -> None:
    o = ctx.out
    count = 940_000
    block = b"MESSAGE " + topic_list(count) + b" 5\r\nhello"
    expected = (
        b"CLIENT_ERROR too many topics: %d in one message exceeds max_topics_per_message 10000\r\n"
        % count
    )
    watcher = await Poller(ctx.port, [b"t000000", b"t469999", b"t939999"], 0.1).start()
    stream = await connect(ctx.port)
    times = []
    waits = {}
    peaks = {}
    ctx.server.reset_hwm()
    async with Pinger(ctx.port) as pinger:
        for _ in range(ctx.n(5)):
            started = time.monotonic()
            replies = await request(stream, kraken_set(b"publish", block) + b"version\r\n", 2)
            times.append(time.monotonic() - started)
            o.check(
                "940,000 topics refused, connection kept",
                replies[0] == expected and VERSION_RE.fullmatch(replies[1]) is not None,
                repr(replies[0][:100]),
            )
    waits["940k"] = round(pinger.worst * 1000)
    peaks["940k"] = round(ctx.server.hwm() / MB)
    await watcher.stop(0.5)
    rss_refused = ctx.server.rss()
    at_limit = await request(
        stream, kraken_set(b"publish", b"MESSAGE " + topic_list(10_000) + b" 2\r\nok")
    )
    over = await request(
        stream, kraken_set(b"publish", b"MESSAGE " + topic_list(10_001) + b" 2\r\nno")
    )
    o.check("exactly 10,000 topics accepted", at_limit == [STORED], repr(at_limit))
    o.check(
        "10,001 refused", over[0].startswith(b"CLIENT_ERROR too many topics: 10001"), repr(over)
    )
    n = ctx.n(100)
    took = []
    ctx.server.reset_hwm()
    async with Pinger(ctx.port) as pinger:
        for i in range(n):
            data = b"MESSAGE " + topic_list(10_000, b"p%03d" % i) + b" 100\r\n" + b"z" * 100
            started = time.monotonic()
            replies = await request(stream, kraken_set(b"publish", data))
            took.append(time.monotonic() - started)
            if replies != [STORED]:
                o.check("10,000-topic publishes accepted", False, repr(replies))
                break
    waits["10,000-topic publishes"] = round(pinger.worst * 1000)
    peaks["10,000-topic publishes"] = round(ctx.server.hwm() / MB)
    close(stream[1])
    m = ctx.server.metrics()
    buffered = m.get("kraken_buffered_bytes", -1)
    o.figures.update(
        seconds_per_940k_request=[round(t, 2) for t in times],
        rss_after_refusals_mb=round(rss_refused / MB),
        buffered_bytes=buffered,
        buffered_messages=m.get("kraken_buffered_messages"),
        evicted_for_bytes=m.get("kraken_buffer_evicted_for_bytes_total"),
        ms_per_10000_topic_publish_first_last=[round(took[0] * 1000), round(took[-1] * 1000)],
        worst_wait_of_another_client_ms=waits,
        rss_peak_mb=peaks,
        rss_after_mb=round(ctx.server.rss() / MB),
    )
    o.check(
        "nothing of the refused ones delivered",
        watcher.payloads == [] and watcher.end is None,
        f"{len(watcher.payloads)} delivered to a subscriber of 3 of the topics",
    )
    o.check(
        "retro buffer within 4 x 16 MiB charged",
        0 < buffered <= 4 * 16 * MB,
        f"kraken_buffered_bytes {buffered:,.0f}, {m.get('kraken_buffered_messages')} messages",
    )
    o.sent = (
        f"{len(times)} x 1 message naming 940,000 topics; 10,000 and 10,001; {n} x 10,000 topics"
    )
    o.answered = (
        f"CLIENT_ERROR too many topics in {min(times):.2f}-{max(times):.2f} s; "
        f"STORED at 10,000; retro buffer charged {buffered / MB:.0f} MiB; another client "
        f"waited up to {waits['940k']} ms (940,000), {waits['10,000-topic publishes']} ms "
        "(10,000-topic publishes)"
    )


def shard_topics(shards: int = 4, prefix: bytes = b"fill") -> list[bytes]:
    """One topic per router shard: shard = crc32(topic) % shards (docs/protocol.md)."""
    found: dict[int, bytes] = {}
    i = 0
    while len(found) < shards:
        topic = b"%s%d" % (prefix, i)
        found.setdefault(zlib.crc32(topic) % shards, topic)
        i += 1
    return [found[s] for s in range(shards)]


async def horizon(stream: Stream) -> bytes:
    replies = await request(stream, b"get horizon\r\n", 3)
    return replies[1].strip()


@scenario(
    "retro-fill",
    "4 x 10,000 messages of 16 KB (one topic per shard), 100 per publish; then "
    "retro_subscribe from before the fill (NOT_FOUND) and from before the last publish "
    "(STORED, exactly its 100 messages)",
)
async def retro_fill(ctx: Ctx) -> None:
    o = ctx.out
    topics = shard_topics()
    size = 16 * 1024
    total = ctx.n(40_000)
    per_publish = 100
    stream = await connect(ctx.port)
    start_horizon = await horizon(stream)
    last_horizon = b""
    started = time.monotonic()
    seq = 0
    while seq < total:
        if seq + per_publish >= total:
            last_horizon = await horizon(stream)
        messages = []
        for _ in range(min(per_publish, total - seq)):
            messages.append(([topics[seq % 4]], b"%08d" % seq + b"f" * (size - 8)))
            seq += 1
        replies = await request(stream, publish(messages))
        if replies != [STORED]:
            o.check("every publish STORED", False, repr(replies))
            break
    elapsed = time.monotonic() - started
    close(stream[1])
    last_count = total - (total - 1) // per_publish * per_publish
    m = ctx.server.metrics()
    old = await connect(ctx.port)
    r_old = await request(
        old, kraken_set(b"retro_subscribe", start_horizon + b"\r\n" + b" ".join(topics))
    )
    close(old[1])
    new = await connect(ctx.port)
    r_new = await request(
        new, kraken_set(b"retro_subscribe", last_horizon + b"\r\n" + b" ".join(topics))
    )
    entries, _ = await poll(new)
    close(new[1])
    seqs = [int(p[:8]) for _, p in entries]
    o.check("a horizon before the evictions: NOT_FOUND", r_old == [b"NOT_FOUND\r\n"], repr(r_old))
    o.check(
        "a horizon before the last publish: STORED, exactly its messages",
        r_new == [STORED] and seqs == list(range(total - last_count, total)),
        f"{r_new!r}, {len(seqs)} messages",
    )
    buffered = m.get("kraken_buffered_bytes", -1)
    o.check(
        "retro buffer within 4 x 16 MiB charged", 0 < buffered <= 4 * 16 * MB, f"{buffered:,.0f} B"
    )
    o.check("messages evicted for bytes", m.get("kraken_buffer_evicted_for_bytes_total", 0) > 0, "")
    o.figures.update(
        buffered_bytes=buffered,
        buffered_messages=m.get("kraken_buffered_messages"),
        evicted_for_bytes=m.get("kraken_buffer_evicted_for_bytes_total"),
        publish_mb_per_s=round(total * size / MB / elapsed),
    )
    o.sent = (
        f"{total:,} messages of 16 KB ({total * size / MB:,.0f} MiB) in "
        f"{total // per_publish} publishes, 2 retro_subscribes"
    )
    o.answered = (
        f"STORED all in {elapsed:.1f} s; buffer {buffered / MB:.0f} MiB charged, "
        f"{m.get('kraken_buffered_messages', 0):,.0f} messages kept; NOT_FOUND / STORED {len(seqs)}"
    )


@scenario(
    "partial-blocks",
    f"64 connections each send a set publish of 8 MiB (max_request_bytes) less one byte, "
    f"then stall until request_timeout ({STALL_TIMEOUT:.0f} s here), twice; then 20 such "
    "connections one at a time, closed by the client: is the memory given back?",
    options=("--request-timeout", str(STALL_TIMEOUT)),
    settle=3.0,
)
async def partial_blocks(ctx: Ctx) -> None:
    o = ctx.out
    n = ctx.n(64)
    size = 8 * MB
    block = b"y" * (size - 1)
    expected = b"CLIENT_ERROR incomplete request: waited %d s for 1 more byte of a %d-byte " % (
        STALL_TIMEOUT,
        size,
    )
    rounds = []
    for _ in range(2):  # twice: is what the first held reused, or does memory grow?
        conns = []
        for _ in range(n):
            conn = await Raw.open(ctx.port)
            await conn.send(b"set publish 0 0 %d\r\n" % size)
            await conn.send(block)
            conns.append(conn)
        sent = time.monotonic()
        await asyncio.sleep(1)
        held = ctx.server.rss()
        ends = await asyncio.gather(*(c.read_all(STALL_TIMEOUT + 10) for c in conns))
        closed = time.monotonic() - sent
        for c in conns:
            c.close()
        await asyncio.sleep(2)
        right = sum(out.startswith(expected) for out, _ in ends)
        rounds.append((held, ctx.server.rss(), right, closed))
    o.figures["rounds"] = [
        {"rss_held_mb": round(h / MB), "rss_after_mb": round(a / MB), "closed_after_s": round(c, 1)}
        for h, a, _, c in rounds
    ]
    # one connection at a time: the block all but sent, then the client closes
    sequential = ctx.n(20)
    before = ctx.server.rss()
    for _ in range(sequential):
        conn = await Raw.open(ctx.port)
        await conn.send(b"set publish 0 0 %d\r\n" % size + block)
        await asyncio.sleep(0.2)
        conn.close()
    await asyncio.sleep(2)
    grown = ctx.server.rss() - before
    clients = ctx.server.status().get("clients")
    o.figures.update(sequential_closes=sequential, rss_growth_mb=round(grown / MB))
    o.check(
        "connections closed one at a time leave nothing behind",
        grown <= 2 * size,
        f"RSS +{grown / MB:.0f} MB after {sequential} connections, one at a time, each closed "
        f"with {size - 1:,} bytes of an {size:,}-byte block sent; /status clients {clients}",
    )
    o.check(
        "each closed by request_timeout with the documented line",
        all(r == n for _, _, r, _ in rounds),
        f"{[r for _, _, r, _ in rounds]} of {n}",
    )
    o.check(
        "the same attack again does not grow memory (retained, not leaked)",
        rounds[1][1] <= rounds[0][1] * 1.1,
        f"RSS after the first {rounds[0][1] / MB:.0f} MB, "
        f"after the second {rounds[1][1] / MB:.0f} MB",
    )
    o.sent = (
        f"twice: {n} x (set publish 0 0 {size} + {size - 1} bytes), then silence; then "
        f"{sequential} such connections one at a time, closed by the client"
    )
    o.answered = (
        f"RSS {rounds[0][0] / MB:.0f} MB while they wait; CLIENT_ERROR incomplete request to "
        f"each after {rounds[0][3]:.1f} s; RSS after {rounds[0][1] / MB:.0f} and "
        f"{rounds[1][1] / MB:.0f} MB; +{grown / MB:.0f} MB after the {sequential} closed one at "
        "a time"
    )


# clients that do not read ------------------------------------------------------------


async def fill(stream: Stream, topic: bytes, total: int, message: int = MB) -> None:
    """Publishes ``total`` bytes of ``message``-byte payloads to ``topic``, 7 per publish."""
    payload = b"q" * message
    sent = 0
    while sent < total:
        k = min(7, -(-(total - sent) // message))
        replies = await request(stream, publish([([topic], payload)] * k))
        if replies != [STORED]:
            raise RuntimeError(f"publish answered {replies!r}")
        sent += k * message


@scenario(
    "poll-no-read",
    "8 clients (4 KB receive buffers) get 40 MB queued each, poll, never read (issue 11: RSS "
    "96 -> 466 MB, not counted); then 8 MB more each and another poll, until closed",
    settle=12.0,
)
async def poll_no_read(ctx: Ctx) -> None:
    o = ctx.out
    n = ctx.n(8)
    queued = 40 * MB if ctx.scale >= 1 else 8 * MB

    async def attack(tag: int) -> dict[str, Any]:
        readers = [await connect(ctx.port, rcvbuf=4096) for _ in range(n)]
        for i, r in enumerate(readers):
            await request(r, subscribe([b"pnr%d-%d" % (tag, i)]))
        pub = await connect(ctx.port)
        for i in range(n):
            await fill(pub, b"pnr%d-%d" % (tag, i), queued)
        await asyncio.sleep(1)
        rss_queued = ctx.server.rss()
        for r in readers:
            r[1].write(b"get messages\r\n")
        await asyncio.sleep(2)
        first = ctx.server.status()
        rss_polled = ctx.server.rss()
        slow_before = first.get("slow_consumers", 0)
        rounds = 0
        slow = 0
        while rounds < 8 and slow < n:
            rounds += 1
            for i in range(n):
                await fill(pub, b"pnr%d-%d" % (tag, i), 8 * MB)
            for r in readers:
                with contextlib.suppress(OSError):
                    r[1].write(b"get messages\r\n")
            await asyncio.sleep(1.5)
            slow = ctx.server.status().get("slow_consumers", 0) - slow_before
        # the server drops a slow consumer that does not read its replies 10 s after its close
        await asyncio.gather(*(read_all(r[0], 15) for r in readers))
        for r in readers:
            close(r[1])
        close(pub[1])
        await asyncio.sleep(2)
        return {
            "rss_queued": rss_queued,
            "rss_polled": rss_polled,
            "unsent": first.get("unsent_bytes", 0),
            "largest_unsent": first.get("largest_unsent_bytes", 0),
            "rounds": rounds,
            "slow": slow,
            "unsent_after": ctx.server.status().get("unsent_bytes", -1),
            "rss_after": ctx.server.rss(),
        }

    a = await attack(1)
    b = await attack(2)  # the same again: memory reused, or growing?
    o.figures.update(
        first={k: round(v / MB) if k.startswith("rss") else v for k, v in a.items()},
        second={k: round(v / MB) if k.startswith("rss") else v for k, v in b.items()},
        rss_per_unsent_byte=round((a["rss_polled"] - a["rss_queued"]) / max(1, a["unsent"]), 2),
    )
    o.check(
        "the unread replies show in /status",
        a["unsent"] >= n * (queued - 8 * MB),
        f"unsent_bytes {a['unsent']:,}, largest {a['largest_unsent']:,}",
    )
    o.check(
        "no client held more than max_queued_bytes unsent",
        a["largest_unsent"] <= 64 * MB,
        f"largest {a['largest_unsent']:,}",
    )
    o.check(
        "each closed as a slow consumer once past max_queued_bytes",
        a["slow"] >= n and b["slow"] >= n,
        f"{a['slow']} and {b['slow']} slow consumers after {a['rounds']} and {b['rounds']} rounds",
    )
    o.check(
        "nothing left unsent once they are gone",
        a["unsent_after"] == 0 and b["unsent_after"] == 0,
        f"{a['unsent_after']}, {b['unsent_after']}",
    )
    o.check(
        "the same attack again does not grow memory (retained, not leaked)",
        b["rss_after"] <= a["rss_after"] * 1.1,
        f"RSS after the first {a['rss_after'] / MB:.0f} MB, after the second "
        f"{b['rss_after'] / MB:.0f} MB",
    )
    o.sent = (
        f"twice: {n} clients with {queued // MB} MB queued each poll and never read; then +8 MB "
        "and a poll per round until closed"
    )
    o.answered = (
        f"after the poll {a['unsent'] / MB:.0f} MB unsent in /status, RSS "
        f"{a['rss_queued'] / MB:.0f} -> {a['rss_polled'] / MB:.0f} MB; all {a['slow']} slow "
        f"consumers after {a['rounds']} more rounds; RSS after each attack "
        f"{a['rss_after'] / MB:.0f} and {b['rss_after'] / MB:.0f} MB"
    )


@scenario(
    "slow-consumer",
    "subscribers that never poll: 4 past max_queued_messages (100,001 x 100 B), 4 past "
    "max_queued_bytes (70 x 1 MB); 2 that poll but read 1 MB/s while 3 MB/s arrive",
    settle=3.0,
)
async def slow_consumer(ctx: Ctx) -> None:
    o = ctx.out
    pub = await connect(ctx.port)
    results = []
    # A: the message count
    subs = [await connect(ctx.port) for _ in range(4)]
    for s in subs:
        await request(s, subscribe([b"sc-count"]))
    count = 100_001
    stored = 0
    for start in range(0, count, 1000):
        k = min(1000, count - start)
        replies = await request(pub, publish([([b"sc-count"], b"c" * 100)] * k))
        stored += replies == [STORED]
    lines = []
    for s in subs:
        out, _ = await read_all(s[0], 5)
        lines.append(out)
        close(s[1])
    ok = all(line == b"SERVER_ERROR slow consumer\r\n" for line in lines)
    o.check(
        "100,001 messages: each non-poller closed with SERVER_ERROR slow consumer",
        ok,
        repr(lines[:1]),
    )
    o.check(
        "the publisher never blocked or refused", stored == -(-count // 1000), f"{stored} STORED"
    )
    results.append(ok)
    # B: the bytes
    subs = [await connect(ctx.port) for _ in range(4)]
    for s in subs:
        await request(s, subscribe([b"sc-bytes"]))
    await fill(pub, b"sc-bytes", 70 * MB)
    lines = []
    for s in subs:
        out, _ = await read_all(s[0], 5)
        lines.append(out)
        close(s[1])
    ok = all(line == b"SERVER_ERROR slow consumer\r\n" for line in lines)
    o.check("70 MB queued: each closed with SERVER_ERROR slow consumer", ok, repr(lines[:1]))
    # C: slow readers
    readers = [await connect(ctx.port, rcvbuf=4096) for _ in range(2)]
    for r in readers:
        await request(r, subscribe([b"sc-slow"]))
    got = [0, 0]
    ended: list[bytes | None] = [None, None]
    stop = asyncio.Event()

    async def slow_reader(i: int) -> None:
        reader, writer = readers[i]
        while not stop.is_set():
            with contextlib.suppress(OSError):
                writer.write(b"get messages\r\n")
            try:
                data = await asyncio.wait_for(reader.read(100_000), 0.1)
            except TimeoutError:
                continue
            except OSError:
                ended[i] = b"reset"
                return
            if not data:
                ended[i] = b"EOF"
                return
            got[i] += len(data)
            if b"SERVER_ERROR slow consumer" in data[-64:]:
                ended[i] = b"SERVER_ERROR slow consumer"
                return
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(slow_reader(i)) for i in range(2)]
    started = time.monotonic()
    while time.monotonic() - started < 45 and not all(ended):
        await fill(pub, b"sc-slow", 3 * MB, 256 * 1024)
        await asyncio.sleep(max(0.0, 1 - (time.monotonic() - started) % 1))
    closed_after = time.monotonic() - started
    await asyncio.sleep(12)  # dropped 10 s after the close when the line is never read
    stop.set()
    await asyncio.gather(*tasks)
    for r in readers:
        close(r[1])
    close(pub[1])
    m = ctx.server.metrics()
    o.check(
        "slow readers closed as slow consumers",
        m.get('kraken_disconnects_total{reason="slow_consumer"}', 0) >= 10,
        f"{ended!r} after {closed_after:.0f} s, having read {got[0] / MB:.0f} and "
        f"{got[1] / MB:.0f} MB",
    )
    o.figures.update(
        slow_readers_closed_after_s=round(closed_after, 1), slow_reader_ends=[str(e) for e in ended]
    )
    o.sent = "4 non-pollers x 100,001 messages; 4 x 70 MB; 2 readers at 1 MB/s fed 3 MB/s"
    o.answered = (
        f"SERVER_ERROR slow consumer to all 8 non-pollers; slow readers closed after "
        f"{closed_after:.0f} s; publisher always STORED"
    )


# connections -------------------------------------------------------------------------


@scenario(
    "max-clients",
    "with --max-tcp-clients 1000: 1,100 idle connections (the control pair holds 2), then "
    "100 of them closed and 100 new ones",
    options=("--max-tcp-clients", "1000"),
)
async def max_clients(ctx: Ctx) -> None:
    o = ctx.out
    streams = [await connect(ctx.port) for _ in range(1100)]
    await asyncio.sleep(1)

    async def refused(stream: Stream) -> bytes | None:
        try:
            data = await asyncio.wait_for(stream[0].read(100), 0.2)
        except TimeoutError:
            return None
        except OSError:
            return b"reset"
        return data

    answers = await asyncio.gather(*(refused(s) for s in streams))
    kept = [s for s, a in zip(streams, answers, strict=True) if a is None]
    lines = Counter(a for a in answers if a is not None)
    o.check(
        "998 kept, the rest told SERVER_ERROR Too many clients",
        len(kept) == 998 and lines == Counter({b"SERVER_ERROR Too many clients\r\n": 102}),
        f"{len(kept)} kept, {dict(lines)}",
    )
    for s in kept[:100]:
        close(s[1])
    await asyncio.sleep(0.5)
    again = [await connect(ctx.port) for _ in range(100)]
    answers2 = await asyncio.gather(*(refused(s) for s in again))
    o.check(
        "slots freed are usable again",
        all(a is None for a in answers2),
        Counter(answers2).most_common(2).__repr__(),
    )
    for s in streams + again:
        close(s[1])
    o.sent = "1,100 idle connections, then 100 closed and 100 new"
    o.answered = (
        f"{len(kept)} kept, {sum(lines.values())} refused with SERVER_ERROR Too many clients"
    )


@scenario(
    "connect-close",
    "50,000 connect/close cycles, 25 at a time: close at once, RST, version, quit, "
    "subscribe then close, half a request then close; RSS and fds must return to baseline",
    settle=3.0,
)
async def connect_close(ctx: Ctx) -> None:
    o = ctx.out
    total = ctx.n(50_000)
    warmup = ctx.n(10_000)  # the first few thousand cycles grow the heap once, then it is flat

    async def cycle(i: int) -> bool:
        kind = i % 6
        try:
            reader, writer = await connect(ctx.port)
            if kind == 0:
                close(writer)
            elif kind == 1:
                close(writer, reset=True)
            elif kind == 2:
                writer.write(b"version\r\n")
                ok = VERSION_RE.fullmatch(await read_line(reader, 10)) is not None
                close(writer)
                return ok
            elif kind == 3:
                writer.write(b"quit\r\n")
                out, end = await read_all(reader, 10)
                close(writer)
                return out == b"" and end == "eof"
            elif kind == 4:
                writer.write(subscribe([b"cc%d" % (i % 997), b"cc-all"]))
                ok = await read_line(reader, 10) == STORED
                close(writer)
                return ok
            else:
                writer.write(b"set publish 0 0 50\r\nMESS")
                close(writer)
            return True
        except OSError:
            return False

    async def run(count: int, offset: int) -> int:
        next_i = offset
        failures = 0

        async def worker() -> None:
            nonlocal next_i, failures
            while next_i < offset + count:
                i = next_i
                next_i += 1
                failures += not await cycle(i)

        await asyncio.gather(*(worker() for _ in range(25)))
        return failures

    first_rss = ctx.server.rss()
    await run(warmup, 0)
    await asyncio.sleep(2)
    base_rss, base_fds = ctx.server.rss(), ctx.server.fds()
    base_status = ctx.server.status()
    log_before = ctx.server.log_size()
    started = time.monotonic()
    failures = 0
    steps = []
    step = max(1, total // 5)
    for done in range(0, total, step):
        failures += await run(min(step, total - done), warmup + done)
        steps.append(round(ctx.server.rss() / MB, 1))
    elapsed = time.monotonic() - started
    log_growth = ctx.server.log_size() - log_before
    await asyncio.sleep(3)
    rss, fds = ctx.server.rss(), ctx.server.fds()
    st = ctx.server.status()
    o.figures.update(
        rss_before_warmup_mb=round(first_rss / MB, 1),
        rss_every_fifth_mb=steps,
        baseline_rss_mb=round(base_rss / MB, 1),
        after_rss_mb=round(rss / MB, 1),
        baseline_fds=base_fds,
        after_fds=fds,
        cycles_per_second=round(total / elapsed),
        log_bytes=log_growth,
    )
    o.check("every cycle behaved", failures == 0, f"{failures} failures")
    o.check("fds back to baseline", fds == base_fds, f"{base_fds} -> {fds}")
    o.check(
        "RSS back to baseline (within 2 MB)",
        rss - base_rss <= 2 * MB,
        f"{base_rss / MB:.1f} -> {rss / MB:.1f} MB",
    )
    o.check(
        "no client, topic or subscription left",
        (st.get("clients"), st.get("topics"), st.get("subscriptions"))
        == (
            base_status.get("clients"),
            base_status.get("topics"),
            base_status.get("subscriptions"),
        ),
        f"clients {st.get('clients')}, topics {st.get('topics')}, "
        f"subscriptions {st.get('subscriptions')}",
    )
    o.check(
        "nothing logged at info for ordinary connects and closes",
        log_growth == 0,
        f"{log_growth} B",
    )
    o.sent = (
        f"{total:,} cycles (6 kinds) after {warmup:,} of warm-up, {total / elapsed:,.0f} a second"
    )
    o.answered = (
        f"RSS {first_rss / MB:.1f} MB at start, {base_rss / MB:.1f} after the warm-up, "
        f"{rss / MB:.1f} after; fds {base_fds} -> {fds}; log +{log_growth} B"
    )


# the admin API -------------------------------------------------------------------------


def http_request(
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", *(f"{k}: {v}" for k, v in headers)]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def http_send(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int | None, bytes]:
    reader, writer = await connect(port)
    await send(writer, raw)
    out, _ = await read_all(reader, timeout)
    close(writer)
    m = re.match(rb"HTTP/1\.[01] ([0-9]{3})", out)
    return (int(m[1]) if m else None), out.partition(b"\r\n\r\n")[2]


async def admin_cases(ctx: Ctx, cases: list[tuple[str, bytes, int]]) -> None:
    o = ctx.out
    got: Counter[int | None] = Counter()
    for name, raw, expected in cases:
        status, body = await http_send(ctx.server.admin_port, raw)
        got[status] += 1
        o.check(f"{name}: {expected}", status == expected, f"{status} {body[:110]!r}")
    o.sent = f"{len(cases)} requests"
    o.answered = counts(got)


@scenario(
    "admin-csrf",
    "what a web page can send to the admin API: POST /shutdown with Host and Origin of "
    "attacker.example and text/plain, and variants (same Host, Origin null, another local "
    "origin, Sec-Fetch-Site, form and multipart bodies, a preflight, PUT /log_level)",
)
async def admin_csrf(ctx: Ctx) -> None:
    here = f"127.0.0.1:{ctx.server.admin_port}"
    attacker = [("Host", "attacker.example"), ("Origin", "http://attacker.example")]
    text = [("Content-Type", "text/plain")]
    json_type = [("Content-Type", "application/json")]
    cases = [
        ("issue 11's request", http_request("POST", "/shutdown", attacker + text, b"{}"), 403),
        (
            "the same with the server's Host",
            http_request(
                "POST",
                "/shutdown",
                [("Host", here), ("Origin", "http://attacker.example"), *text],
                b"{}",
            ),
            403,
        ),
        (
            "no Origin, text/plain",
            http_request("POST", "/shutdown", [("Host", here), *text], b"{}"),
            415,
        ),
        (
            "form body",
            http_request(
                "POST",
                "/shutdown",
                [("Host", here), ("Content-Type", "application/x-www-form-urlencoded")],
                b"a=1",
            ),
            415,
        ),
        (
            "multipart body",
            http_request(
                "POST",
                "/shutdown",
                [("Host", here), ("Content-Type", "multipart/form-data; boundary=x")],
                b"--x--",
            ),
            415,
        ),
        (
            "Origin: null",
            http_request(
                "POST", "/shutdown", [("Host", here), ("Origin", "null"), *json_type], b"{}"
            ),
            403,
        ),
        (
            "another local origin",
            http_request(
                "POST",
                "/shutdown",
                [
                    ("Host", f"localhost:{ctx.server.admin_port}"),
                    ("Origin", "http://localhost:8080"),
                    *json_type,
                ],
                b"{}",
            ),
            403,
        ),
        (
            "Sec-Fetch-Site: cross-site",
            http_request(
                "POST",
                "/shutdown",
                [("Host", here), ("Sec-Fetch-Site", "cross-site"), *json_type],
                b"{}",
            ),
            403,
        ),
        (
            "Sec-Fetch-Site: same-site",
            http_request(
                "POST",
                "/shutdown",
                [("Host", here), ("Sec-Fetch-Site", "same-site"), *json_type],
                b"{}",
            ),
            403,
        ),
        (
            "CORS preflight from attacker.example",
            http_request(
                "OPTIONS",
                "/shutdown",
                [
                    ("Host", here),
                    ("Origin", "http://attacker.example"),
                    ("Access-Control-Request-Method", "POST"),
                ],
            ),
            403,
        ),
        (
            "OPTIONS without an Origin (no preflight is ever granted)",
            http_request("OPTIONS", "/shutdown", [("Host", here)]),
            405,
        ),
        (
            "PUT /log_level text/plain",
            http_request("PUT", "/log_level", [("Host", here), *text], b'{"level": "debug"}'),
            415,
        ),
        (
            "GET /topics cross-site",
            http_request("GET", "/topics", [("Host", here), ("Origin", "http://attacker.example")]),
            403,
        ),
    ]
    await admin_cases(ctx, cases)
    level = ctx.server.get_json("/log_level")
    ctx.out.check("log level unchanged", level == {"level": "info"}, repr(level))


@scenario(
    "admin-rebind",
    "DNS rebinding: GET /topics, /config, /queues, /status with Host attacker.example (and "
    "a rebound name with the port); localhost, *.localhost, IP addresses and no Host pass",
)
async def admin_rebind(ctx: Ctx) -> None:
    port = ctx.server.admin_port
    cases = []
    for path in ("/topics", "/config", "/queues", "/status", "/metrics"):
        cases.append(
            (
                f"GET {path} Host attacker.example",
                http_request("GET", path, [("Host", "attacker.example")]),
                403,
            )
        )
    cases += [
        (
            "Host rebound.attacker.example:port",
            http_request("GET", "/config", [("Host", f"rebound.attacker.example:{port}")]),
            403,
        ),
        (
            "Host 127.0.0.1.nip.io",
            http_request("GET", "/config", [("Host", "127.0.0.1.nip.io")]),
            403,
        ),
        (
            "Host localhost:port",
            http_request("GET", "/topics", [("Host", f"localhost:{port}")]),
            200,
        ),
        (
            "Host kraken.localhost",
            http_request("GET", "/topics", [("Host", "kraken.localhost")]),
            200,
        ),
        (
            "Host 127.0.0.1:port",
            http_request("GET", "/topics", [("Host", f"127.0.0.1:{port}")]),
            200,
        ),
        ("Host [::1]:port", http_request("GET", "/topics", [("Host", f"[::1]:{port}")]), 200),
        ("HTTP/1.0, no Host", http_request("GET", "/topics", [], version="1.0"), 200),
    ]
    await admin_cases(ctx, cases)


@scenario(
    "admin-fds",
    "the server started under prlimit --nofile=1024:1024: 1,100 idle admin connections, "
    "64 slowloris ones, then 500 Kraken clients must be served",
    nofile=1024,
    settle=2.0,
)
async def admin_fds(ctx: Ctx) -> None:
    o = ctx.out
    limits = Path(f"/proc/{ctx.server.pid}/limits").read_text()
    soft = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
    o.check(
        "the server runs with 1024 descriptors",
        soft is not None and soft[1] == "1024",
        soft[0] if soft else limits,
    )
    warned = "open files limit stays at 1024" in ctx.server.log()
    o.check("the start logs that the limit is too low", warned, "")
    idle = []
    for _ in range(1100):
        idle.append((await connect(ctx.server.admin_port), time.monotonic()))
    await asyncio.sleep(1.5)

    async def state(stream: Stream) -> bytes | None:
        try:
            data = await asyncio.wait_for(stream[0].read(4096), 0.05)
        except TimeoutError:
            return None
        except OSError:
            return b"reset"
        return data

    answers = await asyncio.gather(*(state(s) for s, _ in idle))
    held = [(s, t) for (s, t), a in zip(idle, answers, strict=True) if a is None]
    refused = sum(1 for a in answers if a is not None and a.startswith(b"HTTP/1.1 503"))
    other = Counter(a[:12] for a in answers if a is not None and not a.startswith(b"HTTP/1.1 503"))
    o.check(
        "at most 64 admin connections held, the rest 503",
        len(held) <= 64 and refused == 1100 - len(held),
        f"{len(held)} held, {refused} x 503, other {dict(other)}",
    )
    peak_admin_fds = ctx.server.fds()
    status, _ = await http_send(
        ctx.server.admin_port, http_request("GET", "/health", [("Host", "127.0.0.1")]), 5
    )
    o.check("a new admin request meanwhile: 503", status == 503, f"{status}")
    clients = []
    served = 0
    for _ in range(500):
        s = await connect(ctx.port)
        s[1].write(b"version\r\n")
        clients.append(s)
    for s in clients:
        with contextlib.suppress(OSError, TimeoutError):
            served += VERSION_RE.fullmatch(await read_line(s[0], 10)) is not None
    fds_with_clients = ctx.server.fds()
    for s in clients:
        close(s[1])
    o.check(
        "500 Kraken clients served meanwhile",
        served == 500,
        f"{served}/500, server fds {fds_with_clients}",
    )
    # the held ones are closed by admin_timeout (10 s) after they connected
    closes = []
    for s, t in held:
        await read_all(s[0], 20)
        closes.append(time.monotonic() - t)
        close(s[1])
    for s, _ in idle:
        close(s[1])
    o.check(
        "idle admin connections closed after admin_timeout",
        bool(closes) and min(closes) >= 9.9 and max(closes) <= 13,
        f"closed {min(closes, default=0):.3f}-{max(closes, default=0):.3f} s after connecting",
    )
    # slowloris: a header byte a second
    loris = [await connect(ctx.server.admin_port) for _ in range(64)]
    started = time.monotonic()
    for s in loris:
        s[1].write(b"GET /health HTTP/1.1\r\nX-a: ")
    open_ = list(loris)
    while open_ and time.monotonic() - started < 20:
        await asyncio.sleep(1)
        still = []
        for s in open_:
            if s[0].at_eof() or not await send(s[1], b"a"):
                continue
            still.append(s)
        open_ = [s for s in still if not s[0].at_eof()]
    loris_closed = time.monotonic() - started
    for s in loris:
        close(s[1])
    o.check(
        "slowloris connections closed by admin_timeout",
        not open_ and loris_closed <= 13,
        f"all closed after {loris_closed:.0f} s, {len(open_)} still open",
    )
    status, _ = await http_send(
        ctx.server.admin_port, http_request("GET", "/health", [("Host", "127.0.0.1")]), 5
    )
    o.check("the admin API answers again", status == 200, f"{status}")
    o.figures.update(
        admin_held=len(held),
        admin_refused=refused,
        fds_while_held=peak_admin_fds,
        fds_with_clients=fds_with_clients,
    )
    o.sent = "1,100 idle admin connections; 500 Kraken clients; 64 slowloris admin connections"
    o.answered = (
        f"{len(held)} held, closed {min(closes, default=0):.1f}-{max(closes, default=0):.1f} s "
        f"later; {refused} x 503; {served}/500 clients served ({fds_with_clients} fds); "
        f"slowloris closed in {loris_closed:.0f} s"
    )


@scenario(
    "admin-json",
    "PUT /log_level with nested JSON (100,000 deep, 200 KB; 30,000 deep, 60 KB; nested "
    "objects), a 2 GB Content-Length, a chunked 100 KB body, a client gone mid-body",
)
async def admin_json(ctx: Ctx) -> None:
    here = [("Host", f"127.0.0.1:{ctx.server.admin_port}"), ("Content-Type", "application/json")]
    deep_object = b'{"level": ' + b'{"a": ' * 8_000 + b"1" + b"}" * 8_000 + b"}"
    chunked = b"".join(b"%x\r\n%s\r\n" % (1000, b"[" * 1000) for _ in range(100)) + b"0\r\n\r\n"
    cases = [
        (
            "100,000 deep (200 KB)",
            http_request("PUT", "/log_level", here, b"[" * 100_000 + b"]" * 100_000),
            413,
        ),
        (
            "30,000 deep (60 KB)",
            http_request("PUT", "/log_level", here, b"[" * 30_000 + b"]" * 30_000),
            400,
        ),
        (
            f"8,000 nested objects ({len(deep_object) // 1000} KB)",
            http_request("PUT", "/log_level", here, deep_object),
            400,
        ),
        (
            "Content-Length 2 GB, 4 bytes sent: refused at once",
            (
                b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2147483648\r\n\r\n"
            )
            + b"[[[[",
            413,
        ),
        (
            "chunked 100 KB",
            (
                b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            + chunked,
            413,
        ),
    ]
    await admin_cases(ctx, cases)
    # a 2 GB body really sent: refused once 64 KiB have come, memory flat
    reader, writer = await connect(ctx.server.admin_port)
    writer.write(
        b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2147483648\r\n\r\n"
    )
    streamed = 0
    answer = b""
    started = time.monotonic()
    chunk = b"[" * (1 << 16)
    rss_streaming = 0
    while time.monotonic() - started < 20 and streamed < 512 * MB:
        try:
            answer += await asyncio.wait_for(reader.read(4096), 0.001)
        except TimeoutError:
            pass
        except OSError:
            break
        if reader.at_eof() or not await send(writer, chunk):
            break
        streamed += len(chunk)
        if streamed % (8 * MB) == 0:
            rss_streaming = max(rss_streaming, ctx.server.rss())
    rest, _ = await read_all(reader, 5)
    answer += rest
    close(writer)
    ctx.out.check(
        "a 2 GB body streamed: 413, memory flat",
        answer.startswith(b"HTTP/1.1 413") and rss_streaming < 100 * MB,
        f"{answer[:30]!r}; the server took {streamed / MB:.0f} MB in "
        f"{time.monotonic() - started:.1f} s before closing, RSS {rss_streaming / MB:.0f} MB",
    )
    ctx.out.figures["mb_read_of_2gb_body"] = round(streamed / MB)
    # gone mid-body
    for _ in range(10):
        reader, writer = await connect(ctx.server.admin_port)
        writer.write(
            b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"level"'
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        close(writer)
    await asyncio.sleep(0.5)
    level = ctx.server.get_json("/log_level")
    ctx.out.check("log level unchanged", level == {"level": "info"}, repr(level))
    ctx.out.sent += ", 10 clients gone mid-body"


TOKEN = "hostile-secret-7f3a9c"


@scenario(
    "admin-token",
    "kraken start --admin-token T: T must not be in the server's /proc/PID/cmdline, nor in "
    "kraken config, GET /config or the log; requests without it get 401",
    launcher="start",
    token=TOKEN,
)
async def admin_token(ctx: Ctx) -> None:
    o = ctx.out
    server = ctx.server
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    o.check(
        "not in the server's /proc/PID/cmdline",
        TOKEN.encode() not in cmdline,
        cmdline.replace(b"\0", b" ")[:200].decode(),
    )
    environ = Path(f"/proc/{server.pid}/environ")
    mode = stat.S_IMODE(environ.stat().st_mode)
    in_env = f"KRAKEN_ADMIN_TOKEN={TOKEN}".encode() in environ.read_bytes()
    o.check(
        "in its environment, readable by its user only", in_env and mode == 0o400, f"mode {mode:o}"
    )
    o.check(
        "the kraken start process showed it while it ran (documented)",
        True,
        f"seen: {server.start_cmdline_had_token}, start took {server.start_seconds:.1f} s",
    )
    env = kraken_env({"KRAKEN_ADMIN_TOKEN": TOKEN})
    shown = subprocess.run(
        [*kraken_argv(), "config", "--admin-port", str(server.admin_port)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    o.check(
        "kraken config masks it",
        TOKEN not in shown.stdout + shown.stderr and "(set)" in shown.stdout,
        next(
            (line for line in shown.stdout.splitlines() if "admin_token " in line),
            shown.stdout[:200],
        ),
    )
    config = server.get_json("/config") or {}
    o.check(
        "GET /config masks it",
        TOKEN not in json.dumps(config) and config.get("admin_token", {}).get("value") == "(set)",
        repr(config.get("admin_token")),
    )
    here = [("Host", f"127.0.0.1:{server.admin_port}")]
    statuses = []
    for headers in (
        [],
        [("Authorization", "Bearer wrong")],
        [("Authorization", f"Bearer {TOKEN}")],
    ):
        status, _ = await http_send(
            server.admin_port, http_request("GET", "/status", here + headers)
        )
        statuses.append(status)
    o.check(
        "no token 401, a wrong one 401, the right one 200",
        statuses == [401, 401, 200],
        repr(statuses),
    )
    toml = ctx.workdir / "bad-token.toml"
    toml.write_text("admin_token = 987654321\n")
    bad = subprocess.run(
        [*kraken_argv(), "run", "--config", str(toml), "--tcp-server-port", str(free_port())],
        capture_output=True,
        text=True,
        env=kraken_env(),
        timeout=30,
    )
    o.check(
        "a bad token value in a config file is not echoed",
        bad.returncode == 2 and "987654321" not in bad.stderr and "not shown" in bad.stderr,
        bad.stderr.strip()[:160],
    )
    # kraken run with the token on its own command line: it must warn
    port = free_port()
    warn_log = ctx.workdir / "run-with-token.log"
    with open(warn_log, "wb") as log:
        proc = subprocess.Popen(
            [
                *kraken_argv(),
                "run",
                "--tcp-server-port",
                str(port),
                "--admin-port",
                str(free_port()),
                "--admin-token",
                TOKEN,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=kraken_env(),
        )
        try:
            deadline = time.monotonic() + 15
            while "listening" not in warn_log.read_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    text = warn_log.read_text()
    o.check(
        "kraken run --admin-token warns that it is on the command line, without the token",
        "command line" in text and TOKEN not in text,
        next((line for line in text.splitlines() if "WARN" in line), "no warning")[:200],
    )
    o.check("the token is in no log line", TOKEN not in server.log(), "")
    o.sent = (
        "kraken start --admin-token; /proc reads; kraken config; GET /config; 3 GETs; "
        "a bad token in TOML; kraken run --admin-token"
    )
    o.answered = f"cmdline clean, environ 0400, config '(set)', {statuses}"


# idle timeout and the terminal -----------------------------------------------------------


@scenario(
    "idle-timeout",
    "with --client-idle-timeout 5: 20 clients polling every 4.5 s must stay (issue 11: "
    "closed after 4.17 s of silence); 20 silent ones must be closed, never before 5 s",
    options=("--client-idle-timeout", "5"),
)
async def idle_timeout(ctx: Ctx) -> None:
    o = ctx.out
    pollers = [await connect(ctx.port) for _ in range(20)]
    silent = [(await connect(ctx.port), time.monotonic()) for _ in range(20)]
    dropped = 0
    for _ in range(4):  # 18 s: four silences of 4.5 s
        await asyncio.sleep(4.5)
        for s in pollers:
            try:
                _, last = await poll(s, 5)
                dropped += last != END
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                dropped += 1
    closes = []
    for s, t in silent:
        out, end = await read_all(s[0], 1)
        closes.append((time.monotonic() - t, out, end))
    for s in pollers + [s for s, _ in silent]:
        close(s[1])
    o.check("pollers every 4.5 s never closed", dropped == 0, f"{dropped} of 80 polls failed")
    o.check(
        "silent clients closed, without a word",
        all(end == "eof" and out == b"" for _, out, end in closes),
        repr(Counter((out, end) for _, out, end in closes).most_common(2)),
    )
    o.sent = "20 clients polling every 4.5 s for 18 s, 20 silent clients"
    o.answered = f"pollers kept ({dropped} closed); silent ones closed silently"

    # when the close comes: 20 more silent clients, each read until its close
    async def silence() -> float:
        reader, writer = await connect(ctx.port)
        started = time.monotonic()
        await read_all(reader, 15)
        close(writer)
        return time.monotonic() - started

    delays = sorted(await asyncio.gather(*(silence() for _ in range(20))))
    o.check(
        "closed after 5 s of silence, never early, at most 2 s late",
        delays[0] >= 5.0 and delays[-1] <= 7.0,
        f"closed {delays[0]:.2f}-{delays[-1]:.2f} s after connecting",
    )
    o.answered += f", {delays[0]:.2f}-{delays[-1]:.2f} s after their last byte"


@scenario(
    "dump-topics",
    "topics holding a bidi override (U+202E), a C1 control (CSI, U+009B), a zero-width "
    "space and an e-acute: kraken dump_topics must print the first three escaped",
)
async def dump_topics(ctx: Ctx) -> None:
    o = ctx.out
    evil = [
        "safe\u202etxt.exe".encode(),
        "csi\u009b31m".encode(),
        "zero\u200bwidth".encode(),
        "caf\u00e9".encode(),
    ]
    stream = await connect(ctx.port)
    replies = await request(stream, subscribe(evil))
    out = subprocess.run(
        [*kraken_argv(), "dump_topics", "--admin-port", str(ctx.server.admin_port)],
        capture_output=True,
        env=kraken_env(),
        timeout=30,
    )
    close(stream[1])
    text = out.stdout
    raw = [c for c in ("\u202e", "\u009b", "\u200b") if c.encode() in text]
    o.check("subscribed", replies == [STORED], repr(replies))
    o.check(
        "no raw control, bidi or zero-width character printed",
        out.returncode == 0 and not raw and b"\\u202e" in text and b"caf\xc3\xa9" in text,
        text.decode(errors="replace").replace("\n", " | ")[:200],
    )
    o.sent = "a subscribe to 4 topics with U+202E, U+009B, U+200B, e-acute; kraken dump_topics"
    o.answered = "escaped: " + ", ".join(
        line.split()[0] for line in text.decode(errors="replace").splitlines()[1:] if line.strip()
    )


# SIGTERM under load --------------------------------------------------------------------


@scenario(
    "sigterm",
    "SIGTERM under load (100 pollers, 4 publishers, 20 non-pollers, 20 stalled), with "
    "--history-file: drain, SERVER_ERROR shutting down to everyone, no gap, exit 0, file mode 600",
)
async def sigterm(ctx: Ctx) -> None:
    o = ctx.out
    o.server_exits = True
    o.control_closed_by = "SERVER_ERROR shutting down"
    port = ctx.port
    topics = [b"dr%d" % k for k in range(8)]
    stop_publishing = asyncio.Event()
    acked: dict[bytes, list[int]] = {t: [] for t in topics}
    publisher_ends: list[str] = []

    async def publisher(p: int) -> None:
        stream = await connect(port)
        mine = [t for k, t in enumerate(topics) if k % 4 == p]
        seqs = dict.fromkeys(mine, 0)
        while not stop_publishing.is_set():
            batch = []
            for t in mine:
                seqs[t] += 1
                batch.append(([t], b"%s %d" % (t, seqs[t])))
            try:
                replies = await request(stream, publish(batch), 1, 30)
            except (OSError, TimeoutError) as error:
                publisher_ends.append(repr(error))
                return
            if replies != [STORED]:
                publisher_ends.append(replies[0].decode(errors="replace").strip() or "EOF")
                return
            for t, payload in batch:
                acked[t[0]].append(int(payload.split()[1]))
            await asyncio.sleep(0.01)
        close(stream[1])

    pollers = [await Poller(port, [topics[i % len(topics)]], 0.1).start() for i in range(100)]
    idle = [await connect(port) for _ in range(20)]
    for s in idle:
        await request(s, subscribe([topics[0]]))
    stalled_ = [await connect(port) for _ in range(20)]
    for s in stalled_:
        s[1].write(b"set publish 0 0 100\r\nMESSAGE dr0 5\r\n")
    publishing = [asyncio.create_task(publisher(p)) for p in range(4)]
    await asyncio.sleep(4)
    at_term = {t: len(v) for t, v in acked.items()}
    rss_at_term = ctx.server.rss()
    ctx.server.signal(signal.SIGTERM)
    term = time.monotonic()
    refused_after = None
    for _ in range(40):
        await asyncio.sleep(0.05)
        try:
            s = await connect(port, timeout=1)
            close(s[1])
        except OSError:
            refused_after = time.monotonic() - term
            break
    idle_ends = await asyncio.gather(*(read_all(s[0], 20) for s in idle))
    stall_ends = await asyncio.gather(*(read_all(s[0], 20) for s in stalled_))
    try:
        code = await asyncio.get_running_loop().run_in_executor(None, ctx.server.wait, 30)
    except TimeoutError:
        code = None
    exited = time.monotonic() - term
    stop_publishing.set()
    await asyncio.gather(*publishing)
    for p in pollers:
        await p.stop(0)
    for s in idle + stalled_:
        close(s[1])
    line = b"SERVER_ERROR shutting down"
    poller_ends = Counter(p.end for p in pollers)
    gaps = 0
    missing_before_term = 0
    for i, p in enumerate(pollers):
        t = topics[i % len(topics)]
        seqs = [int(x.split()[1]) for x in p.payloads]
        gaps += seqs != list(range(1, len(seqs) + 1))
        missing_before_term += len(seqs) < at_term[t]
    o.check(
        "new connections refused at once",
        refused_after is not None and refused_after < 1,
        f"after {refused_after}",
    )
    o.check(
        "every poller got SERVER_ERROR shutting down",
        poller_ends == Counter({line + CRLF: len(pollers)}),
        repr(dict(poller_ends)),
    )
    o.check(
        "pollers: every message in order, none twice, none skipped",
        gaps == 0,
        f"{gaps} pollers with a gap or duplicate",
    )
    o.check(
        "pollers: everything acknowledged before SIGTERM received",
        missing_before_term == 0,
        f"{missing_before_term} short",
    )
    o.check(
        "non-pollers got the line",
        all(out == line + b"\r\n" for out, _ in idle_ends),
        repr(Counter(out for out, _ in idle_ends).most_common(2)),
    )
    o.check(
        "stalled clients got the line",
        all(out == line + b"\r\n" for out, _ in stall_ends),
        repr(Counter(out for out, _ in stall_ends).most_common(2)),
    )
    o.check(
        "publishers were told too",
        all(e == line.decode() for e in publisher_ends) and len(publisher_ends) == 4,
        repr(publisher_ends),
    )
    o.check(
        "exit code 0 within the drain (5 s) + 2 s",
        code == 0 and exited <= 7,
        f"code {code} after {exited:.1f} s",
    )
    hist = ctx.workdir / "history"
    mode = stat.S_IMODE(hist.stat().st_mode) if hist.exists() else None
    o.check(
        "history file written, mode 600",
        mode == 0o600,
        f"mode {mode:o}" if mode is not None else "missing",
    )
    o.figures.update(
        rss_at_sigterm_mb=round(rss_at_term / MB),
        exit_seconds=round(exited, 2),
        history_bytes=hist.stat().st_size if hist.exists() else 0,
    )
    o.sent = "SIGTERM with 100 pollers, 4 publishers, 20 non-pollers, 20 stalled connected"
    told = (
        poller_ends[line + CRLF]
        + sum(out == line + CRLF for out, _ in idle_ends + stall_ends)
        + publisher_ends.count(line.decode())
    )
    refused_ms = f"{refused_after * 1000:.0f} ms" if refused_after is not None else "never"
    o.answered = (
        f"new connections refused after {refused_ms}; {told}/144 clients got SERVER_ERROR "
        f"shutting down; exit {code} after {exited:.1f} s"
    )


# -- the run ---------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    outcome: Outcome
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    fds_before: int = 0
    fds_peak: int = 0
    fds_after: int = 0
    control: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.outcome.checks)

    def control_text(self) -> str:
        c = self.control
        if "acked" not in c:
            return c.get("error", "?")
        lost = c["lost"] + c["duplicates"] + c["out_of_order"]
        due = c["acked"] - c.get("acked_after_last_poll", 0)
        text = f"{c['received_once']}/{due} once, max {c['max_delay_ms']} ms"
        if (c["max_delay_ms"] or 0) >= 1000:
            text += " (STALLED)"
        return text if not lost else f"DISTURBED: {text}, lost {c['lost']}, dup {c['duplicates']}"


def generic_checks(result: Result, server: Server, log_from: int) -> None:
    o = result.outcome
    if not o.server_exits:
        o.check("the server still runs", server.alive(), "")
        m = server.metrics()
        internal = m.get('kraken_disconnects_total{reason="internal_error"}', 0)
        o.check("no internal_error disconnect", internal == 0, f"{internal:.0f}")
    log = server.log(log_from)
    errors = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    o.check("no ERROR or traceback in the log", not errors, errors[0][:200] if errors else "")
    c = result.control
    if "acked" not in c:
        o.check("control pair reported", False, c.get("error", ""))
        return
    o.check(
        "control pair: every acknowledged message exactly once, in order",
        c["lost"] == 0 and c["duplicates"] == 0 and c["out_of_order"] == 0 and c["acked"] > 0,
        f"{c['received_once']}/{c['acked'] - c.get('acked_after_last_poll', 0)} once "
        f"({c.get('acked_after_last_poll', 0)} acknowledged after its close), "
        f"lost {c['lost']}, dup {c['duplicates']}, "
        f"out of order {c['out_of_order']}, max delay {c['max_delay_ms']} ms "
        f"(p99 {c['p99_delay_ms']} ms), slowest STORED {c['max_ack_ms']} ms",
    )
    # the delay is reported (the control column), not judged here: on a shared 2-core
    # machine some of it is the attack's own CPU; scenarios judge the stalls they aim at
    allowed = o.control_closed_by
    ends = c.get("ends", {})
    o.check(
        "control pair not closed by the server"
        if not allowed
        else f"control pair ended by {allowed}",
        all(e == allowed for e in ends.values()) if allowed else not ends,
        repr(ends),
    )


async def run_scenario(sc: Scenario, rng: random.Random, scale: float, workdir: Path) -> Result:
    options = list(sc.options)
    if sc.name == "sigterm":
        options += ["--history-file", str(workdir / "history")]
    if sc.token and sc.launcher == "start":
        options += ["--admin-token", sc.token]
    server = Server(workdir, options, nofile=sc.nofile, launcher=sc.launcher, token=sc.token)
    ctx = Ctx(server, rng, scale, workdir)
    result = Result(sc.name, ctx.out)
    control = None
    try:
        control = Control(server.port)
        await asyncio.sleep(1.0)
        result.rss_before, result.fds_before = server.rss(), server.fds()
        log_from = server.log_size()
        sampler = Sampler(server.pid).start()
        server.reset_hwm()
        started = time.monotonic()
        try:
            await asyncio.wait_for(sc.run(ctx), SCENARIO_TIMEOUT)
        except TimeoutError:
            ctx.out.check(f"attack finished within {SCENARIO_TIMEOUT:.0f} s", False, "timed out")
        except Exception as error:  # a harness failure is reported, not hidden
            ctx.out.check("the attack ran", False, f"{type(error).__name__}: {error}"[:300])
        result.seconds = time.monotonic() - started
        result.rss_peak = max(sampler.peak_rss, server.hwm())
        if server.alive():
            await asyncio.sleep(sc.settle)
        sampler.stop()
        result.rss_peak = max(result.rss_peak, sampler.peak_rss)
        result.fds_peak = sampler.peak_fds
        result.rss_after, result.fds_after = server.rss(), server.fds()
        result.control = control.stop()
        control = None
        generic_checks(result, server, log_from)
    finally:
        if control is not None:
            control.stop()
        server.stop()
    return result


def table(results: list[Result]) -> str:
    rows = [
        "| scenario | sent | server answered | RSS MB before / peak / after "
        "| fds before / peak / after | control pair | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        after = mb(r.rss_after) if r.rss_after else "exited"
        fds_after = str(r.fds_after) if r.rss_after else "-"
        failed = [name for name, ok, _ in r.outcome.checks if not ok]
        verdict = "pass" if not failed else "FAIL: " + "; ".join(failed)
        rows.append(
            f"| {r.name} | {r.outcome.sent} | {r.outcome.answered} | "
            f"{mb(r.rss_before)} / {mb(r.rss_peak)} / {after} | "
            f"{r.fds_before} / {r.fds_peak} / {fds_after} | {r.control_text()} | {verdict} |"
        )
    return "\n".join(rows)


def details(r: Result) -> str:
    lines = [f"{r.name} ({r.seconds:.0f} s)"]
    for name, ok, detail in r.outcome.checks:
        lines.append(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
    if r.outcome.figures:
        lines.append(f"  figures: {json.dumps(r.outcome.figures, default=str)}")
    return "\n".join(lines)


def machine() -> str:
    cpus = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return f"{cpus} cores, load {load:.2f} at start, Python {sys.version.split()[0]}"


def tree() -> str:
    """The commit of the tree whose server runs, and whether its src differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "src (git not available)"
    return f"src of commit {head or '?'}" + (" with uncommitted changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hostile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random inputs")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the counts (0.1: a quick run)"
    )
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--control", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.control:
        asyncio.run(control_main(args.control))
        return 0
    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.name:15} {sc.summary}")
        return 0
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - {sc.name for sc in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))} (see --list)")
    chosen = [sc for sc in SCENARIOS if not names or sc.name in names]
    print(
        f"kraken hostile-client run: {len(chosen)} scenario(s), seed {args.seed}, "
        f"scale {args.scale}; {tree()}; {machine()}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="kraken-hostile-") as tmp:
        for sc in chosen:
            workdir = Path(tmp) / sc.name
            workdir.mkdir()
            rng = random.Random(f"{args.seed}:{sc.name}")
            result = asyncio.run(run_scenario(sc, rng, args.scale, workdir))
            results.append(result)
            print(details(result), flush=True)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "sent": r.outcome.sent,
                        "answered": r.outcome.answered,
                        "rss_before": r.rss_before,
                        "rss_peak": r.rss_peak,
                        "rss_after": r.rss_after,
                        "fds": [r.fds_before, r.fds_peak, r.fds_after],
                        "control": r.control,
                        "checks": r.outcome.checks,
                        "figures": r.outcome.figures,
                        "seconds": r.seconds,
                    }
                    for r in results
                ],
                indent=1,
                default=str,
            )
        )
    failed = [r.name for r in results if not r.passed]
    print(
        f"\n{len(results) - len(failed)}/{len(results)} scenarios passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
