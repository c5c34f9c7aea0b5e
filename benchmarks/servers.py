"""The servers under test: ``kraken run`` and ``redis-server`` as child processes.

Each runs on 127.0.0.1 on a free port, is known by its PID, and is measured
from outside through /proc: CPU-seconds (utime + stime of the whole process)
and resident memory. Nothing here speaks a protocol beyond "the port answers".
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

    def __init__(self, name: str, argv: list[str], port: int) -> None:
        self.name = name
        self.port = port
        self.argv = argv
        # a file, not a pipe: a pipe nobody reads would block the server once full
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        path = [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)
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
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def start_kraken(*options: str) -> ServerProcess:
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
    return ServerProcess("kraken", argv, port)


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
