"""The servers under test: ``kraken run`` and ``redis-server`` as child processes.

Each runs on 127.0.0.1 on a free port, is known by its PID, and is measured
from outside through /proc: CPU-seconds (utime + stime of the whole process)
and resident memory. Nothing here speaks a protocol beyond "the port answers".
A Kraken server runs from a source tree, this checkout's ``src`` unless told
another (an A/B run: the same venv's Python, that tree first on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"  # the Kraken this checkout runs
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 15.0  # seconds a server may take to accept connections
STOP_TIMEOUT = 10.0  # seconds a server may take to exit after SIGTERM


class ServerError(Exception):
    """A server did not start, or died during a run."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A server child process on ``port``, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], port: int, src: Path = SRC) -> None:
        self.name = name
        self.port = port
        self.argv = argv
        # a file, not a pipe: a pipe nobody reads would block the server once full
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env=kraken_env(src)
        )
        self.pid = self.process.pid
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(f"{name} did not start:\n{self.output()}") from None
                time.sleep(0.02)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all its threads), in seconds."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                stat = f.read()
        except FileNotFoundError:
            raise ServerError(f"{self.name} died:\n{self.output()}") from None
        fields = stat[stat.rindex(b")") + 2 :].split()  # fields from 3 (state) on
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        # pread: a seek would move the offset the server shares, and its next line
        # would overwrite the start of the log
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


def kraken_env(src: Path) -> dict[str, str]:
    """The environment in which ``python -m kraken`` imports the package under ``src``."""
    path = [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def kraken_source(src: Path) -> Path:
    """The ``src`` directory of a Kraken tree (``src`` itself, or a checkout holding it),
    checked by importing ``kraken`` in a child exactly as a server would: an A/B run that
    quietly ran the same code twice would report noise as a difference."""
    src = src.resolve()
    if not (src / "kraken" / "__init__.py").exists() and (src / "src" / "kraken").is_dir():
        src = src / "src"
    if not (src / "kraken" / "__init__.py").exists():
        raise ServerError(f"{src}: no kraken package here (expected {src}/kraken/__init__.py)")
    found = subprocess.run(
        [sys.executable, "-c", "import kraken; print(kraken.__file__)"],
        env=kraken_env(src),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )
    if found.returncode != 0:
        raise ServerError(f"{src}: import kraken failed:\n{found.stderr[-2000:]}")
    package = Path(found.stdout.strip()).resolve().parent
    if package != src / "kraken":
        raise ServerError(f"{src}: import kraken found {package} instead")
    return src


def describe_source(src: Path) -> str:
    """``src`` and the commit of its checkout (``+`` when its files differ from it)."""
    git = ["git", "-C", str(src)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return f"{src} (not a git checkout)"
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return f"{src} (git not available)"
    changed = " with uncommitted changes" if dirty.stdout.strip() else ""
    return f"{src} (commit {head.stdout.strip()}{changed})"


def start_kraken(*options: str, src: Path = SRC, name: str = "kraken") -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "kraken",
        "run",
        "--tcp-server-port",
        str(port),
        "--admin-port",
        "0",
        *options,
    ]
    return ServerProcess(name, argv, port, src)


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def start_redis(max_clients: int = 10_500) -> ServerProcess:
    binary = redis_binary()
    if binary is None:
        raise ServerError(
            "redis-server not found: apt-get install redis-server, or --servers kraken"
        )
    port = free_port()
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--maxclients",
        str(max_clients),
        "--loglevel",
        "warning",
    ]
    return ServerProcess("redis", argv, port)


def redis_version() -> str:
    binary = redis_binary()
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for field in out.split():
        if field.startswith("v="):
            return field[2:]
    return out.strip()
