"""Helpers shared by the tests: a real server in a subprocess, a raw wire client.

Tests talk to a real ``kraken run`` over loopback TCP; nothing here stands in
for the server. Waits are conditions with deadlines, never bare sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kraken.brokers import Pending
from kraken.errors import ServerError

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 10.0  # seconds any single wait may take before the test fails


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` if it is not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``kraken run`` on a free loopback port, stopped by its PID."""

    def __init__(self, *options: str, port: int | None = None) -> None:
        self.port = port or free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        # a file, not a pipe: a pipe nobody reads would block the server once full
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kraken",
                "run",
                "--tcp-server-port",
                str(self.port),
                "--admin-port",
                "0",
                *options,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                # the server's start (horizons before it are NOT_FOUND) is at or before this
                self.ready_at = time.time()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"server did not start:\n{self.output()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """A graceful stop without the drain (Ctrl-C's): clients get `SERVER_ERROR
        shutting down` at once, and the history is written (test_drain.py drains)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        """Everything the server logged so far. Read without moving the file's offset,
        which the server shares: a seek here would make its next line overwrite the
        start of the log."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def wire(self) -> Wire:
        return Wire(self.port)


@contextlib.contextmanager
def running_server(*options: str, port: int | None = None) -> Iterator[ServerProcess]:
    """A server for the ``with`` block; ``port`` restarts one where an earlier one ran."""
    server = ServerProcess(*options, port=port)
    try:
        yield server
    finally:
        server.stop()


class Wire:
    """A raw protocol connection: send bytes, expect bytes, with deadlines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.buffer = b""

    def send(self, data: bytes) -> Wire:
        self.sock.sendall(data)
        return self

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 20)
        self.buffer += data
        return bool(data)

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise ConnectionError(f"closed after {self.buffer!r}, wanted {n} bytes")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed after {self.buffer!r}, wanted a line")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def expect(self, data: bytes) -> None:
        got = self.read(len(data))
        assert got == data, f"expected {data!r}, got {got + self.buffer!r}"

    def request(self, data: bytes, reply: bytes) -> None:
        self.send(data).expect(reply)

    def closed(self, timeout: float = DEADLINE) -> bool:
        """True when the server closes the connection (EOF or reset) within ``timeout``
        seconds, False when it is still open then. Bytes read meanwhile stay in ``buffer``."""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                self.sock.settimeout(remaining)
                if not self._fill():
                    return True
            return False
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(DEADLINE)

    def is_open(self) -> bool:
        """True when the connection still answers a request."""
        try:
            self.send(b"version\r\n")
            return self.line().startswith(b"VERSION ")
        except OSError:
            return False

    # the requests of the protocol, as a test would type them
    def set(self, command: str, block: bytes, noreply: bool = False) -> Wire:
        tail = b" noreply" if noreply else b""
        return self.send(b"set %s 0 0 %d%s\r\n%s\r\n" % (command.encode(), len(block), tail, block))

    def subscribe(self, *topics: str) -> None:
        self.set("subscribe", " ".join(topics).encode()).expect(b"STORED\r\n")

    def unsubscribe(self, *topics: str) -> None:
        self.set("unsubscribe", " ".join(topics).encode()).expect(b"STORED\r\n")

    def register(self) -> None:
        self.set("register", b"").expect(b"STORED\r\n")

    def publish(self, topics: str, payload: bytes) -> None:
        entry = b"MESSAGE %s %d\r\n%s" % (topics.encode(), len(payload), payload)
        self.set("publish", entry).expect(b"STORED\r\n")

    def horizon(self) -> bytes:
        self.send(b"get horizon\r\n")
        header = self.line()
        assert header.startswith(b"VALUE horizon 0 "), header
        value = self.line()[:-2]
        self.expect(b"END\r\n")
        return value

    def messages(self) -> list[tuple[bytes, bytes]]:
        """Poll: the (topics, payload) pairs queued, in order."""
        self.send(b"get messages\r\n")
        header = self.line()
        if header == b"END\r\n":
            return []
        assert header.startswith(b"VALUE messages 0 "), header
        block = self.read(int(header.split()[3]))
        self.expect(b"\r\nEND\r\n")
        return parse_block(block)

    def close(self) -> None:
        self.sock.close()


def parse_block(block: bytes) -> list[tuple[bytes, bytes]]:
    """The entries of a messages block, read independently of the server's parser."""
    out = []
    pos = 0
    while pos < len(block):
        eol = block.index(b"\r\n", pos)
        head = block[pos:eol].split(b" ")
        assert head[0] == b"MESSAGE", block
        length = int(head[-1])
        payload = block[eol + 2 : eol + 2 + length]
        out.append((b" ".join(head[1:-1]), payload))
        pos = eol + 2 + length + 2
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without KRAKEN_* options, the source tree importable, plus ``extra``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    # `kraken start` logs under $XDG_STATE_HOME/kraken by default: not in the user's home
    environ["XDG_STATE_HOME"] = str(Path(tempfile.gettempdir()) / f"kraken-tests-{os.getuid()}")
    environ.update(extra, PYTHONPATH=str(ROOT / "src"))
    return environ


def kraken(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``kraken ARGS...`` to completion, as an operator would, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "kraken", *args],
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        timeout=60,
    )


class Deferring:
    """A broker whose chosen operations answer later, when ``settle`` is called."""

    def __init__(self, inner: Any, defer: Sequence[str]) -> None:
        self.inner = inner
        self.defer = set(defer)
        self.waiting: list[tuple[Pending[Any], Callable[[], Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in self.defer:
            return method

        def deferred(*args: Any) -> Pending[Any]:
            pending: Pending[Any] = Pending()
            self.waiting.append((pending, lambda: method(*args)))
            return pending

        return deferred

    def settle(self) -> None:
        """Carry out and answer every deferred call, in order."""
        waiting, self.waiting = self.waiting, []
        for pending, call in waiting:
            pending.resolve(call())

    def fail(self, reason: str) -> None:
        waiting, self.waiting = self.waiting, []
        for pending, _ in waiting:
            pending.fail(ServerError(reason))
