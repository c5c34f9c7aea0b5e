"""The admin API against hostile clients (issue 11, defects 3, 5, 8 and 9): web pages,
floods of idle connections, leaked tokens, malformed bodies, terminal escapes.

Servers are real: ``kraken run`` in a subprocess, or a KrakenServer with its
AdminServer in this process (``running``, from test_admin.py) where a test reads
the log or the server's state. Requests are raw HTTP (http.client or sockets),
with the headers a browser or an attacker would send.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.test_admin import Running, running
from kraken.config import Config, ConfigError, load
from kraken_testing import (
    DEADLINE,
    ServerProcess,
    Wire,
    clean_env,
    free_port,
    kraken,
    running_server,
    wait_until,
)

JSON = {"Content-Type": "application/json"}
OR_HEADER = "or an X-Kraken-Admin header"


@pytest.fixture
def served() -> Iterator[Running]:
    """A KrakenServer and its admin API in this process, on loopback."""
    with running() as r:
        yield r


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, body as JSON when it is JSON) of one raw HTTP request; a ``Host`` header
    in ``headers`` replaces the one http.client would send."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        if "json" in response.headers.get("Content-Type", ""):
            return response.status, json.loads(data)
        return response.status, data.decode(errors="replace")
    finally:
        connection.close()


def admin_port_of(server: ServerProcess) -> int:
    wait_until(lambda: "admin API listening on" in server.output(), "the admin API")
    line = next(x for x in server.output().splitlines() if "admin API listening on" in x)
    return int(line.rsplit(":", 1)[1])


# -- defect 3: a cross-site browser request shut the server down ------------------------

CROSS_SITE = {
    "Host": "attacker.example",
    "Origin": "http://attacker.example",
    "Content-Type": "text/plain",
}


def test_a_cross_site_shutdown_is_refused_and_the_server_keeps_serving() -> None:
    """The issue's reproduction: this request answered 202 and the server exited."""
    with running_server() as server:
        admin = admin_port_of(server)
        status, body = request(admin, "POST", "/shutdown", b"{}", CROSS_SITE)
        assert status == 403
        assert body["error"].startswith("host 'attacker.example' not allowed")
        time.sleep(0.3)  # a shutdown, had it been requested, would be under way
        assert server.process.poll() is None
        assert request(admin, "GET", "/health") == (200, {"status": "ok"})
        wire = server.wire()
        assert wire.is_open()
        wire.close()


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        # DNS rebinding: attacker.example resolves to 127.0.0.1; the page's requests are
        # same-origin to the browser, but name the attacker's host
        ({"Host": "attacker.example:{port}", **JSON}, 403, "host 'attacker.example:"),
        ({"Host": "127.0.0.1.attacker.example", **JSON}, 403, "host '127.0.0.1.attacker"),
        ({"Host": "::1", **JSON}, 403, "host '::1' not allowed"),  # not a valid Host
        # cross-site requests to the right host
        (
            {"Host": "127.0.0.1:{port}", "Origin": "http://attacker.example", **JSON},
            403,
            "cross-origin request refused: origin 'http://attacker.example'",
        ),
        (
            # another web server on this host (another port) is another origin
            {"Host": "localhost:{port}", "Origin": "http://localhost:8080", **JSON},
            403,
            "cross-origin request refused",
        ),
        ({"Origin": "null", **JSON}, 403, "cross-origin request refused: origin 'null'"),
        ({"Sec-Fetch-Site": "cross-site", **JSON}, 403, "cross-site request refused"),
        ({"Sec-Fetch-Site": "same-site", **JSON}, 403, "cross-site request refused"),
        # simple requests: what a page may send anywhere without a preflight
        (
            {"Content-Type": "text/plain"},
            415,
            "POST /shutdown needs Content-Type: application/json",
        ),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "needs Content-Type"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415, "needs Content-Type"),
        ({}, 415, "or an X-Kraken-Admin header"),
    ],
)
def test_requests_a_web_page_could_make_do_not_shut_down(
    headers: dict[str, str], status: int, error: str
) -> None:
    with running() as kraken:
        port = kraken.admin.port
        headers = {k: v.format(port=port) for k, v in headers.items()}
        answer = request(port, "POST", "/shutdown", b"{}", headers)
        assert answer[0] == status
        assert error.format(port=port) in answer[1]["error"], answer
        assert not kraken.shutdown_requested.is_set()


@pytest.mark.parametrize(
    "headers",
    [
        JSON,  # kraken stop: http.client, like urllib, sends Host: 127.0.0.1:<port>
        {"X-Kraken-Admin": "1"},  # curl -X POST -H 'X-Kraken-Admin: 1'
        {"Host": "localhost:{port}", **JSON},
        {"Host": "LOCALHOST.:{port}", **JSON},
        {"Host": "kraken.localhost", **JSON},
        {"Host": "[::1]:{port}", **JSON},
        {"Host": "10.1.2.3:{port}", **JSON},  # an address, through a NAT: no rebinding
        {"Host": "127.0.0.1:{port}", "Origin": "http://127.0.0.1:{port}", **JSON},
        {"Host": "localhost", "Origin": "https://localhost", **JSON},
        {"Sec-Fetch-Site": "same-origin", **JSON},
        {"Sec-Fetch-Site": "none", "Content-Type": "application/json; charset=utf-8"},
    ],
)
def test_the_admin_itself_and_same_origin_requests_may_shut_down(headers: dict[str, str]) -> None:
    with running() as kraken:
        port = kraken.admin.port
        headers = {k: v.format(port=port) for k, v in headers.items()}
        assert request(port, "POST", "/shutdown", b"{}", headers) == (
            202,
            {"status": "shutting down", "drain_seconds": 5.0},
        )
        assert kraken.shutdown_requested.wait(DEADLINE)


def test_a_rebinding_page_cannot_read_the_state_either(served: Running) -> None:
    port = served.admin.port
    for path in ("/status", "/topics", "/config", "/metrics"):
        status, body = request(port, "GET", path, headers={"Host": f"evil.example:{port}"})
        assert status == 403 and "not allowed" in body["error"], path
    assert request(port, "GET", "/status", headers={"Host": f"127.0.0.1:{port}"})[0] == 200


def test_a_text_plain_log_level_change_is_refused(served: Running) -> None:
    port = served.admin.port
    body = b'{"level": "debug"}'
    answer = request(port, "PUT", "/log_level", body, {"Content-Type": "text/plain"})
    assert answer == (
        415,
        {"error": "PUT /log_level needs Content-Type: application/json " + OR_HEADER},
    )
    assert served.get("/log_level") == {"level": "info"}
    assert request(port, "PUT", "/log_level", body, JSON) == (200, {"level": "debug"})


def test_unknown_paths_and_methods_stay_404_and_405(served: Running) -> None:
    port = served.admin.port
    assert request(port, "POST", "/nope", b"x", {"Content-Type": "text/plain"})[0] == 404
    assert request(port, "DELETE", "/health")[0] == 405


def test_admin_allowed_hosts_names_the_hosts_it_answers_to() -> None:
    with running(admin_allowed_hosts="kraken.internal, Metrics.Example.") as kraken:
        port = kraken.admin.port
        for host in ("kraken.internal", f"kraken.internal:{port}", "metrics.example"):
            assert request(port, "GET", "/health", headers={"Host": host})[0] == 200, host
        assert request(port, "GET", "/health", headers={"Host": "other.internal"})[0] == 403
    with running(admin_allowed_hosts="*") as kraken:
        port = kraken.admin.port
        assert request(port, "GET", "/health", headers={"Host": "any.example"})[0] == 200
        # '*' is for Host: a cross-site page is still refused
        headers = {"Host": "any.example", "Origin": "http://evil.example", **JSON}
        assert request(port, "POST", "/shutdown", b"{}", headers)[0] == 403


def test_the_cli_still_changes_the_level_and_stops_the_server() -> None:
    with running_server() as server:
        admin = ["--admin-port", str(admin_port_of(server))]
        level = kraken("change_log_level", "debug", *admin)
        assert level.returncode == 0, level.stderr
        stop = kraken("stop", *admin)
        assert stop.returncode == 0, stop.stderr
        server.process.wait(DEADLINE)


def test_an_admin_api_beyond_loopback_without_a_token_does_not_start() -> None:
    port, admin = free_port(), free_port()
    for command in ("run", "start"):
        result = kraken(
            command,
            "--tcp-server-port",
            str(port),
            "--admin-port",
            str(admin),
            "--admin-ip",
            "0.0.0.0",
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(
            "kraken: error: the admin API would listen on 0.0.0.0 (admin_ip), beyond this host, "
            "without a token"
        )
        assert "--admin-insecure" in result.stderr and "admin_token_file" in result.stderr
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_admin_insecure_starts_it_and_says_so_loudly() -> None:
    with running_server("--admin-ip", "0.0.0.0", "--admin-insecure") as server:
        admin = admin_port_of(server)
        log = server.output()
        assert f"WARNING kraken: INSECURE: the admin API on 0.0.0.0:{admin} has no token" in log
        assert "no authentication" not in log  # the Kraken port stays on loopback


def test_with_a_token_it_starts_beyond_loopback_without_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KRAKEN_ADMIN_TOKEN", "t0ken")
    with running_server("--admin-ip", "0.0.0.0") as server:
        admin_port_of(server)
        assert "INSECURE" not in server.output()


def test_a_kraken_port_beyond_loopback_is_warned_of() -> None:
    with running_server("--listen-ip", "0.0.0.0") as server:
        wait_until(lambda: "no authentication" in server.output(), "the warning")
        assert "WARNING kraken: the Kraken protocol listens on 0.0.0.0 (listen_ip)" in (
            server.output()
        )


# -- defect 5: idle admin connections took every file descriptor --------------------------


def idle(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def test_connections_past_admin_max_connections_get_503_and_are_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running(admin_max_connections=3) as kraken:
        port = kraken.admin.port
        held = [idle(port) for _ in range(3)]
        wait_until(lambda: kraken.admin.connections.open == 3, "3 admin connections")
        # refused at once, whether or not the request was sent: a 503, then the close
        extra = idle(port)
        data = b""
        while chunk := extra.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert data.endswith(
            b'{"error": "too many admin connections: admin_max_connections (3) are open"}'
        )
        status, body = request(port, "GET", "/health")
        assert status == 503 and "admin_max_connections (3)" in body["error"]
        assert any(
            "refused: admin_max_connections (3) are open" in r.message for r in caplog.records
        )
        held.pop().close()
        wait_until(lambda: kraken.admin.connections.open == 2, "a free admin connection")
        assert request(port, "GET", "/health") == (200, {"status": "ok"})
        metrics = kraken.metrics()
        assert metrics["kraken_admin_connections_refused_total"] == 2
        assert metrics["kraken_admin_connections"] == 3  # two held, and the scrape itself
        for sock in [*held, extra]:
            sock.close()


def test_idle_admin_connections_cannot_starve_the_kraken_port() -> None:
    """The issue's reproduction, scaled to a limit of 256 descriptors: 400 idle admin
    connections took them all, and protocol clients were reset without a word."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    port, admin = free_port(), free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"kraken-fds-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kraken",
            "run",
            "--tcp-server-port",
            str(port),
            "--admin-port",
            str(admin),
            "--max-tcp-clients",
            "100",
            "--log-file",
            str(log),
        ],
        env=clean_env(),
        preexec_fn=limit_files,
    )
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: log.exists() and "admin API listening" in log.read_text(), "start")
        for _ in range(400):
            try:
                sockets.append(idle(admin))
            except OSError:
                break
        wire = Wire(port)
        wire.subscribe("still-served")
        assert wire.is_open()
        wire.close()
        text = log.read_text()
        assert "refused: admin_max_connections (64) are open" in text
        assert "ERROR" not in text
    finally:
        for sock in sockets:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(DEADLINE)
        log.unlink(missing_ok=True)


def test_descriptors_near_the_limit_are_logged_and_the_limit_explained() -> None:
    """The soft limit cannot reach what max_tcp_clients needs: the start says why; when
    connections near it, a warning says so before clients are refused in silence."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    port, admin = free_port(), free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"kraken-fds-{port}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kraken",
            "run",
            "--tcp-server-port",
            str(port),
            "--admin-port",
            str(admin),
            "--max-tcp-clients",
            "1000",
            "--log-file",
            str(log),
        ],
        env=clean_env(),
        preexec_fn=limit_files,
    )
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: log.exists() and "admin API listening" in log.read_text(), "start")
        assert (
            "open files limit stays at 128 (the hard limit), below the 1128 that "
            "max_tcp_clients (1000) + "
            "admin_max_connections (64) + 64 need" in log.read_text()
        )
        for _ in range(125):
            with_reply = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            sockets.append(with_reply)

        def warned() -> bool:
            return "file descriptors open (soft RLIMIT_NOFILE)" in log.read_text()

        wait_until(warned, "the warning")
        assert "of 128 file descriptors open" in log.read_text()
    finally:
        for sock in sockets:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(DEADLINE)
        log.unlink(missing_ok=True)


def test_the_soft_limit_is_raised_to_what_the_limits_need() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"the hard limit ({hard}) leaves no room to raise")
    code = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from kraken.server.fds import raise_limit\n"
        "raise_limit(2000, 'the test')\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert result.stdout == "2000\n", result.stderr
    assert result.stderr == "INFO open files limit raised from 256 to 2000 for the test\n"


def test_asyncio_accept_failures_for_want_of_descriptors_are_explained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvloop resets such a client silently; asyncio logs a bare traceback each second."""
    from kraken.server.fds import FdWatch

    loop = asyncio.new_event_loop()
    try:
        watch = FdWatch()
        loop.run_until_complete(asyncio.sleep(0))  # a running loop for start()
        loop.call_soon(watch.start)
        loop.run_until_complete(asyncio.sleep(0.01))
        error = OSError(errno.EMFILE, "Too many open files")
        loop.call_exception_handler(
            {"message": "socket.accept() out of system resource", "exception": error}
        )
        watch.stop()
    finally:
        loop.close()
    (line,) = [r for r in caplog.records if "file descriptors open" in r.message]
    assert line.levelno == logging.WARNING
    assert "accepting a connection failed: Too many open files" in line.message
    assert "Raise it (ulimit -n, LimitNOFILE=)" in line.message
    assert watch.accept_failures == 1


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_slow_admin_connections_are_closed_after_admin_timeout() -> None:
    with running(admin_timeout=0.3) as kraken:
        port = kraken.admin.port
        silent = idle(port)
        partial = idle(port)
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never end
        kept = idle(port)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b'{"status": "ok"}' in kept.recv(4096)
        started = time.monotonic()
        for sock in (silent, partial, kept):  # kept: idle after its answer
            assert closed_within(sock, DEADLINE)
        assert time.monotonic() - started < 3
        # a body that never comes
        slow = idle(port)
        slow.sendall(
            b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"level"'
        )
        answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"request not read and answered within admin_timeout (0.3 s)" in answer
        assert kraken.get("/log_level") == {"level": "info"}
        # a body declared past 64 KiB: refused at once, not waited for
        huge = idle(port)
        huge.sendall(
            b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2147483648\r\n\r\n[[[["
        )
        answer = huge.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"request body of 2147483648 bytes exceeds 65536 bytes" in answer
        assert closed_within(huge, DEADLINE)
        for sock in (silent, partial, kept, slow, huge):
            sock.close()


def test_an_answer_left_unread_is_aborted_after_admin_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running(admin_timeout=0.5) as kraken:
        wire = kraken.wire()
        topics = [f"{i:05d}-" + "t" * 80 for i in range(5000)]
        wire.set("subscribe", " ".join(topics).encode()).expect(b"STORED\r\n")
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", kraken.admin.port))
        wait_until(lambda: kraken.admin.connections.open == 1, "the connection")
        # small kernel buffers on both sides, so that the answer (450 KB) stays in the
        # server's own buffer, as a large one would with any buffers
        assert kraken.admin._runner is not None and kraken.admin._runner.server is not None
        (handler,) = kraken.admin._runner.server.connections
        assert handler.transport is not None
        server_side = handler.transport.get_extra_info("socket")
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        reader.sendall(b"GET /topics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # never read
        wait_until(lambda: kraken.admin.connections.open == 0, "the abort")
        assert any(
            "took nothing of its answer for admin_timeout" in r.message for r in caplog.records
        )
        reader.close()


# -- defect 8: the admin token showed on command lines ------------------------------------


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("f1le-t0ken\n")
    path.chmod(0o600)
    return path


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "given",
    [
        ["--admin-token", "s3cret-on-the-line"],
        ["--admin-token=s3cret-on-the-line"],
        ["-kraken", "admin_token", '"s3cret-on-the-line"'],
    ],
)
def test_kraken_start_keeps_the_token_off_the_servers_command_line(
    given: list[str], tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    pid_file, log_file = tmp_path / "kraken.pid", tmp_path / "kraken.log"
    where = ["--tcp-server-port", str(port), "--admin-port", str(admin)]
    started = kraken(
        "start", *where, *given, "--pid-file", str(pid_file), "--log-file", str(log_file)
    )
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    try:
        assert "s3cret" not in cmdline(pid)
        assert "s3cret" not in started.stdout + started.stderr
        # the token is in force: needed, and enough
        assert kraken("status", *where).returncode == 2
        assert kraken("status", *where, "--admin-token", "s3cret-on-the-line").returncode == 0
        shown = kraken("config", *where, "--admin-token", "s3cret-on-the-line")
        assert "the running server's configuration" in shown.stdout
        assert "'(set)'" in shown.stdout and "s3cret" not in shown.stdout + shown.stderr
        stop = kraken("stop", *where, env={"KRAKEN_ADMIN_TOKEN": "s3cret-on-the-line"})
        assert stop.returncode == 0, stop.stderr
        assert "s3cret" not in log_file.read_text()
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_the_token_may_come_from_a_file(token_file: Path) -> None:
    with running_server("--admin-token-file", str(token_file)) as server:
        admin = admin_port_of(server)
        assert request(admin, "GET", "/health")[0] == 401
        auth = {"Authorization": "Bearer f1le-t0ken"}
        assert request(admin, "GET", "/health", headers=auth)[0] == 200
        _, config = request(admin, "GET", "/config", headers=auth)
        assert config["admin_token"] == {
            "value": "(set)",
            "source": f"file {token_file} (admin_token_file)",
        }
        assert config["admin_token_file"]["value"] == str(token_file)
        where = ["--admin-port", str(admin), "--admin-token-file", str(token_file)]
        assert kraken("status", *where).returncode == 0
        assert "f1le-t0ken" not in server.output() + json.dumps(config)
        assert "f1le-t0ken" not in cmdline(server.process.pid)


def test_the_token_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KRAKEN_ADMIN_TOKEN", "env-t0ken")
    with running_server() as server:
        admin = admin_port_of(server)
        assert request(admin, "GET", "/health")[0] == 401
        auth = {"Authorization": "Bearer env-t0ken"}
        assert request(admin, "GET", "/health", headers=auth)[0] == 200


def test_a_token_file_is_read_stripped_and_its_problems_are_one_line_errors(
    tmp_path: Path, token_file: Path
) -> None:
    loaded = load({"admin_token_file": str(token_file)})
    assert loaded.config.admin_token == "f1le-t0ken"
    assert "f1le-t0ken" not in repr(loaded.config)
    missing = tmp_path / "missing"
    result = kraken("run", "--admin-token-file", str(missing), "--admin-port", "1")
    assert result.returncode == 2
    assert result.stderr == (
        f"kraken: error: cannot read admin_token_file {missing} (command line): "
        "No such file or directory\n"
    )
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(ConfigError, match=r"admin_token_file .*empty .* is empty"):
        load({"admin_token_file": str(tmp_path / "empty")})
    (tmp_path / "two").write_text("two words\n")
    with pytest.raises(ConfigError, match="the token must be one word"):
        load({"admin_token_file": str(tmp_path / "two")})
    with pytest.raises(ConfigError, match="are both set: give one") as error:
        load({"admin_token_file": str(token_file)}, {"KRAKEN_ADMIN_TOKEN": "other-t0ken"})
    assert "other-t0ken" not in str(error.value)


def test_a_bad_token_value_is_not_shown_in_the_error(tmp_path: Path) -> None:
    result = kraken("run", "-kraken", "admin_token", "918273645", "--admin-port", "1")
    assert result.returncode == 2
    assert "918273645" not in result.stderr
    assert (
        "option admin_token (command line): expected a string, got a value of type int (not shown)"
        in result.stderr
    )
    toml = tmp_path / "kraken.toml"
    toml.write_text("admin_token = 918273645\n")
    with pytest.raises(ConfigError) as error:
        load({}, toml_file=str(toml))
    assert "918273645" not in str(error.value)


def test_the_token_is_in_no_repr_and_no_log() -> None:
    config = Config(admin_token="r3pr-t0ken")
    assert "r3pr-t0ken" not in repr(config) and "r3pr-t0ken" not in str(config)
    # `kraken run --admin-token` cannot hide its own command line: it says so, not the token
    with running_server("--admin-token", "l0g-t0ken", "--log-level", "debug") as server:
        admin = admin_port_of(server)
        auth = {"Authorization": "Bearer l0g-t0ken"}
        assert request(admin, "GET", "/config", headers=auth)[0] == 200
        assert request(admin, "GET", "/status", headers={"Authorization": "Bearer no"})[0] == 401
        server.stop()
        log = server.output()
    assert "admin_token was given on the command line, which any user" in log
    assert "l0g-t0ken" not in log


# -- defect 9: small ones ----------------------------------------------------------------


def test_deeply_nested_json_is_a_400_not_a_500(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    port = served.admin.port
    deep = b"[" * 30_000 + b"]" * 30_000  # past Python's recursion limit, within 64 KiB
    status, body = request(port, "PUT", "/log_level", deep, JSON)
    assert (status, body) == (
        400,
        {"error": 'body is JSON nested too deep to read: send {"level": "debug"}'},
    )
    status, body = request(port, "PUT", "/log_level", b"{level: debug}", JSON)
    assert status == 400
    assert body["error"].startswith("body is not JSON (Expecting property name")
    deeper = b"[" * 100_000 + b"]" * 100_000  # the issue's: larger than any admin request
    assert request(port, "PUT", "/log_level", deeper, JSON) == (
        413,
        {"error": "request body of 200000 bytes exceeds 65536 bytes"},
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_client_dropping_mid_body_is_a_debug_line_not_an_internal_error(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="kraken.admin")
    sock = idle(served.admin.port)
    sock.sendall(
        b"PUT /log_level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"level": '
    )
    time.sleep(0.1)  # the handler is waiting for the rest of the body
    sock.close()

    def logged() -> bool:
        return any("disconnected mid-request" in r.message for r in caplog.records)

    wait_until(logged, "the disconnect's log line")
    (line,) = [r for r in caplog.records if "disconnected mid-request" in r.message]
    assert line.levelno == logging.DEBUG and line.exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert served.get("/log_level") == {"level": "info"}


def test_a_malformed_request_is_not_logged_as_an_error(
    served: Running, caplog: pytest.LogCaptureFixture
) -> None:
    sock = idle(served.admin.port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /\x00 HTTP/1.1\r\n\r\n")
    assert closed_within(sock, DEADLINE)
    sock.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


EVIL = ["evil\u202etxt.exe", "csi\u009b31mred", "zero\u200bwidth", "line\u2028break"]


def test_dump_topics_escapes_control_and_bidi_characters_and_json_stays_exact() -> None:
    with running_server() as server:
        wire = server.wire()
        wire.subscribe(*EVIL)
        where = ["--admin-port", str(admin_port_of(server))]
        table = kraken("dump_topics", *where)
        assert table.returncode == 0, table.stderr
        for text in (
            "evil\\u202etxt.exe",
            "csi\\x9b31mred",
            "zero\\u200bwidth",
            "line\\u2028break",
        ):
            assert text in table.stdout
        assert table.stdout.isascii()
        exact = json.loads(kraken("dump_topics", "--json", *where).stdout)
        assert sorted(t["topic"] for t in exact) == sorted(EVIL)
        queues = json.loads(kraken("dump_queues", "--json", *where).stdout)
        listed = kraken("dump_queue_topics", str(queues[0]["id"]), *where).stdout
        assert listed.isascii() and "evil\\u202etxt.exe" in listed
        wire.close()


def test_a_request_head_that_never_ends_is_closed_once_past_64_kib(served: Running) -> None:
    # hostile run 2: header lines streamed without end were all kept by aiohttp until
    # the head ended (then 400 "Too many headers"): 64 such connections took 945 MiB
    port = served.admin.port
    sock = idle(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    line = b"X-A: " + b"a" * 8000 + b"\r\n"
    sock.sendall(line * 25)  # 200 KB of head, not ended
    answer = b""
    sock.settimeout(DEADLINE)
    while chunk := sock.recv(65536):  # the answer, then the end: closed
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
    assert answer.endswith(b'{"error": "request head larger than 64 KiB"}\r\n')
    sock.close()
    # and heads within the limit, bodies included, are served as before
    assert request(port, "GET", "/health") == (200, {"status": "ok"})
    big = b'{"level": "info", "pad": "' + b"p" * 60_000 + b'"}'
    assert request(port, "PUT", "/log_level", big, JSON) == (200, {"level": "info"})
