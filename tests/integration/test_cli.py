"""The operator commands end to end, in subprocesses, as an operator types them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kraken_testing import DEADLINE, Wire, clean_env, free_port, kraken


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive; it is reaped by init since `start` detached it
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def started(tmp_path: Path):
    """A server started with `kraken start`; killed by its PID if a test leaves it."""
    port, admin = free_port(), free_port()
    pid_file = tmp_path / "kraken.pid"
    log_file = tmp_path / "kraken.log"
    options = [
        "--tcp-server-port",
        str(port),
        "--admin-port",
        str(admin),
        "--pid-file",
        str(pid_file),
        "--log-file",
        str(log_file),
    ]
    result = kraken("start", *options)
    assert result.returncode == 0, result.stderr
    assert f"listening on 127.0.0.1:{port}" in result.stdout
    pid = int(pid_file.read_text())
    yield {
        "port": port,
        "admin": admin,
        "pid": pid,
        "pid_file": pid_file,
        "log_file": log_file,
        "options": options,
    }
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_start_status_dumps_log_level_and_stop(started):
    admin = ["--admin-port", str(started["admin"])]
    assert alive(started["pid"])

    status = kraken("status", *admin)
    assert status.returncode == 0
    assert "is running" in status.stdout and f"pid {started['pid']}" in status.stdout

    a, b = Wire(started["port"]), Wire(started["port"])
    a.subscribe("shared", "only-a")
    b.subscribe("shared")
    b.publish("shared", b"x")

    queues = json.loads(kraken("dump_queues", "--json", *admin).stdout)
    by_subscriptions = {q["subscriptions"]: q for q in queues}
    assert set(by_subscriptions) == {1, 2}
    assert by_subscriptions[2]["queued"] == 1
    table = kraken("dump_queues", *admin).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "PEER", "QUEUED"]
    assert len(table.splitlines()) == 3

    a_id = by_subscriptions[2]["id"]
    topics = kraken("dump_queue_topics", str(a_id), *admin)
    assert topics.stdout.split() == ["only-a", "shared"]
    missing = kraken("dump_queue_topics", "999999", *admin)
    assert missing.returncode != 0 and "999999" in missing.stderr

    dump = kraken("dump_topics", *admin).stdout.splitlines()
    assert dump[1].split() == ["shared", "2"] and dump[2].split() == ["only-a", "1"]

    level = kraken("change_log_level", "debug", *admin)
    assert level.returncode == 0 and "debug" in level.stdout
    assert json.loads(kraken("status", "--json", *admin).stdout)["log_level"] == "debug"
    assert a.is_open()
    assert "DEBUG kraken.server: client" in started["log_file"].read_text()

    stop = kraken("stop", *admin)
    assert stop.returncode == 0
    deadline = time.monotonic() + DEADLINE
    while alive(started["pid"]):
        assert time.monotonic() < deadline, "server still running after stop"
        time.sleep(0.05)
    assert not started["pid_file"].exists()
    assert a.closed()
    log = started["log_file"].read_text()
    assert "listening on" in log and "shutting down" in log

    down = kraken("status", *admin)
    assert down.returncode == 1 and "not running" in down.stderr
    again = kraken("stop", *admin)
    assert again.returncode == 1 and "not running" in again.stderr


def test_start_refuses_a_second_server_on_the_same_admin_port(started):
    result = kraken("start", *started["options"])
    assert result.returncode == 1 and "already running" in result.stdout


def test_commands_find_the_server_through_the_environment(started):
    status = kraken("status", env={"KRAKEN_ADMIN_PORT": str(started["admin"])})
    assert status.returncode == 0


def test_start_on_a_busy_port_fails_and_says_why(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        admin = free_port()
        result = kraken("start", "--tcp-server-port", str(port), "--admin-port", str(admin))
        assert result.returncode == 1
        assert "failed to start" in result.stderr
        assert "address already in use" in result.stderr.lower()
        assert kraken("status", "--admin-port", str(admin)).returncode == 1


def test_run_with_the_originals_option_syntax(tmp_path):
    port, admin = free_port(), free_port()
    config = tmp_path / "kraken.config"
    config.write_text(f"[{{kraken, [{{admin_port, {admin}}}, {{num_router_shards, 8}}]}}].")
    environ = clean_env()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kraken",
            "run",
            "-config",
            str(tmp_path / "kraken"),
            "-kraken",
            "tcp_server_port",
            str(port),
        ],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while kraken("status", "--admin-port", str(admin)).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert Wire(port).is_open()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(DEADLINE) == 0


def test_a_busy_default_admin_port_leaves_the_server_serving_without_admin():
    with socket.socket() as holder:
        port = _port_with_its_next_one_held(holder)
        with running_server_on_default_admin(port) as log:
            assert Wire(port).is_open()
            deadline = time.monotonic() + DEADLINE
            while f"admin API not started on 127.0.0.1:{port + 1}" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)


def _port_with_its_next_one_held(holder: socket.socket) -> int:
    """A free port whose next port ``holder`` now listens on."""
    for _ in range(50):
        port = free_port()
        try:
            holder.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        holder.listen()
        return port
    raise AssertionError("no free pair of ports found")


def test_a_busy_admin_port_chosen_by_the_operator_stops_the_start():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        admin = busy.getsockname()[1]
        result = kraken("run", "--tcp-server-port", str(free_port()), "--admin-port", str(admin))
        assert result.returncode == 1
        assert "address already in use" in result.stderr.lower()


@contextlib.contextmanager
def running_server_on_default_admin(port: int) -> Iterator[Path]:
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        environ = clean_env()
        server = subprocess.Popen(
            [sys.executable, "-m", "kraken", "run", "--tcp-server-port", str(port)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while "listening on" not in Path(log.name).read_text():
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            yield Path(log.name)
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(DEADLINE) == 0
