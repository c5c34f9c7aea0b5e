"""A new user's first hour: the CLI's answers to the usual mistakes, run as a user would.

Every test runs ``kraken`` in a subprocess against real servers on loopback ports and
asserts what the user reads.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.proxy import Proxy
from kraken_testing import DEADLINE, ServerProcess, clean_env, free_port, kraken, wait_until

# -- help and typing mistakes ---------------------------------------------------------


def test_each_command_lists_only_its_own_options():
    run = kraken("run", "--help").stdout
    assert "--max-tcp-clients" in run and "--batch-polls-above" in run
    for command in ("pub", "sub"):
        text = kraken(command, "--help").stdout
        assert "--tcp-server-port" in text and "--server" in text
        assert "--max-tcp-clients" not in text and "--admin-port" not in text
    status = kraken("status", "--help").stdout
    assert "--admin-port" in status and "--max-queued-bytes" not in status


def test_a_mistyped_command_gets_one_line_naming_the_nearest():
    result = kraken("statsu")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kraken: error: unknown command 'statsu'; did you mean status? (kraken --help lists them)"
    ]
    assert "did you mean" not in kraken("frobnicate").stderr
    assert kraken("frobnicate").returncode == 2


def test_version_is_answered_by_every_command():
    for args in (["--version"], ["run", "--version"], ["sub", "--version"]):
        result = kraken(*args)
        assert result.returncode == 0 and result.stdout.startswith("kraken "), args


def test_an_unknown_option_name_suggests_the_nearest():
    result = kraken("config", "--local", "-kraken", "max_tcp_client", "5")
    assert result.returncode == 2
    assert "unknown option 'max_tcp_client'" in result.stderr
    assert "did you mean max_tcp_clients?" in result.stderr


# -- config files ---------------------------------------------------------------------


def test_an_erlang_file_given_to_config_suggests_dash_config(tmp_path: Path):
    erlang = tmp_path / "kraken.config"
    erlang.write_text("[{kraken, [{tcp_server_port, 12400}]}].\n")
    result = kraken("config", "--local", "--config", str(erlang))
    assert result.returncode == 2
    assert f"use -config {erlang}" in result.stderr


def test_a_toml_file_given_to_dash_config_suggests_config(tmp_path: Path):
    toml = tmp_path / "kraken.toml"
    toml.write_text("tcp_server_port = 12400\n")
    result = kraken("config", "--local", "-config", str(toml))
    assert result.returncode == 2
    assert f"for a TOML file use --config {toml}" in result.stderr
    # the same file without its .toml name, read as Erlang
    plain = tmp_path / "settings.config"
    plain.write_text("tcp_server_port = 12400\n")
    result = kraken("config", "--local", "-config", str(tmp_path / "settings"))
    assert result.returncode == 2
    assert f"it looks like TOML: use --config {plain}" in result.stderr


@pytest.mark.parametrize(
    ("term", "shown"),
    [
        ("[{kraken, [{max_tcp_clients, abc}]}].", "expected an integer, got abc"),
        (
            "[{kraken, [{max_tcp_clients, 1, 2}]}].",
            "expected {Key, Value}, got {max_tcp_clients, 1, 2}",
        ),
        ("[{kraken, [{tcp_server_port, {1, 'Two'}}]}].", "expected an integer, got {1, 'Two'}"),
        ("[{kraken, [{'log level', info}]}].", "unknown option 'log level'"),
    ],
)
def test_erlang_config_errors_show_erlang_text(tmp_path: Path, term: str, shown: str):
    (tmp_path / "bad.config").write_text(term + "\n")
    result = kraken("config", "--local", "-config", str(tmp_path / "bad"))
    assert result.returncode == 2
    assert shown in result.stderr
    assert "Atom(" not in result.stderr


def test_warn_and_warning_are_both_accepted_everywhere(tmp_path: Path):
    for form in (["--log-level", "warning"], ["-kraken", "log_level", "warning"]):
        result = kraken("config", "--local", "--json", *form)
        assert result.returncode == 0, result.stderr
        assert '"log_level": {"value": "warn"' in result.stdout
    admin = free_port()
    server = ServerProcess("--admin-port", str(admin))
    try:
        answer = kraken("change_log_level", "warning", "--admin-port", str(admin))
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == "log level is now warn"
    finally:
        server.stop()


# -- which server a control command reaches -------------------------------------------


def test_config_shows_the_running_servers_configuration_and_says_so():
    admin = free_port()
    server = ServerProcess("--admin-port", str(admin), "--max-tcp-clients", "77")
    try:
        result = kraken("config", "--admin-port", str(admin))
        assert result.returncode == 0, result.stderr
        first, *rows = result.stdout.splitlines()
        assert first.startswith("the running server's configuration (pid ")
        assert f"listening on 127.0.0.1:{server.port}" in first
        row = next(r for r in rows if r.startswith("max_tcp_clients"))
        assert row.split()[1:] == ["77", "command", "line"]
        local = kraken("config", "--local", "--admin-port", str(admin)).stdout
        assert local.startswith("the configuration `kraken run` would use here:")
        assert next(r for r in local.splitlines() if r.startswith("max_tcp_clients")).split()[
            1
        ] == ("10000")
    finally:
        server.stop()
    nobody = kraken("config", "--admin-port", str(admin)).stdout
    assert nobody.startswith(
        f"the configuration `kraken run` would use here (no server answers at 127.0.0.1:{admin})"
    )


def test_config_never_shows_the_admin_token():
    admin = free_port()
    server = ServerProcess("--admin-port", str(admin), "--admin-token", "s3cret")
    try:
        for args in (["--admin-token", "s3cret"], ["--local", "--admin-token", "s3cret"]):
            result = kraken("config", "--json", "--admin-port", str(admin), *args)
            assert result.returncode == 0, result.stderr
            assert "s3cret" not in result.stdout
            assert '"admin_token": {"value": "(set)"' in result.stdout
    finally:
        server.stop()


def test_stop_refuses_a_server_on_other_ports_unless_forced():
    admin = free_port()
    server = ServerProcess("--admin-port", str(admin))
    try:
        other = str(free_port())
        result = kraken("stop", "--admin-port", str(admin), "--tcp-server-port", other)
        assert result.returncode == 1
        assert f"listens on 127.0.0.1:{server.port}, not on port {other}" in result.stderr
        assert "not stopped (--force stops it anyway)" in result.stderr
        assert server.process.poll() is None and server.wire().is_open()
        status = kraken("status", "--admin-port", str(admin), "--tcp-server-port", other)
        assert status.returncode == 0 and "note:" in status.stderr
        forced = kraken("stop", "--admin-port", str(admin), "--tcp-server-port", other, "--force")
        assert forced.returncode == 0, forced.stderr
        assert f"was listening on 127.0.0.1:{server.port}" in forced.stdout
        assert server.process.wait(DEADLINE) == 0
    finally:
        server.stop()


def test_not_running_names_the_admin_address_and_how_to_choose_another():
    admin = free_port()
    result = kraken("status", "--admin-port", str(admin))
    assert result.returncode == 1
    text = result.stderr.strip()
    assert f"admin API on 127.0.0.1:{admin} (connection refused)" in text
    assert "--admin-port" in text
    assert "urlopen" not in text and "Errno" not in text
    assert len(text.splitlines()) == 1


def test_two_servers_need_no_admin_port_each_takes_the_next_one():
    first, second = _port_pair(), _port_pair()
    servers = [_run_on_default_admin(port) for port in (first, second)]
    try:
        for port, process in zip((first, second), servers, strict=True):
            status = kraken("status", "--json", "--tcp-server-port", str(port))
            assert status.returncode == 0, status.stderr
            assert f'"pid": {process.pid}' in status.stdout
            config = kraken("config", "--json", "--tcp-server-port", str(port)).stdout
            assert f'"admin_port": {{"value": {port + 1}, "source": "default: ' in config
    finally:
        for process in servers:
            process.send_signal(signal.SIGTERM)
            process.wait(DEADLINE)


def _port_pair() -> int:
    """A free port whose next port is free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no free pair of ports found")


def _run_on_default_admin(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "kraken", "run", "--tcp-server-port", str(port)],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: kraken("status", "--tcp-server-port", str(port)).returncode == 0,
        f"the server on {port} to answer on its admin port {port + 1}",
    )
    return process


@pytest.mark.parametrize("which", ["tcp", "admin"])
def test_a_bind_error_says_which_port_failed(which: str):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port, admin = (taken, free_port()) if which == "tcp" else (free_port(), taken)
        result = kraken("run", "--tcp-server-port", str(port), "--admin-port", str(admin))
    assert result.returncode == 1
    if which == "tcp":
        wanted = f"cannot listen for clients on 127.0.0.1:{port} (tcp-server-port)"
    else:
        wanted = f"cannot listen for the admin API on 127.0.0.1:{admin} (admin-port)"
    assert wanted in result.stderr
    assert "choose another with --" in result.stderr


# -- the daemon's log -----------------------------------------------------------------


def test_start_logs_to_a_default_file_and_says_where(tmp_path: Path):
    port, admin = free_port(), free_port()
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    options = ["--tcp-server-port", str(port), "--admin-port", str(admin)]
    started = kraken("start", *options, env=env)
    assert started.returncode == 0, started.stderr
    log_file = tmp_path / "state" / "kraken" / f"kraken-{port}.log"
    assert f"log: {log_file}" in started.stdout
    try:
        wait_until(lambda: "listening on" in log_file.read_text(), "the start in the log")
    finally:
        stopped = kraken("stop", *options, env=env)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: "kraken stopped" in log_file.read_text(), "the stop in the log")


@pytest.mark.parametrize("option", ["--log-file", "--pid-file"])
@pytest.mark.parametrize("command", ["run", "start"])
def test_an_unwritable_log_or_pid_file_is_one_line_and_exit_2(
    tmp_path: Path, option: str, command: str
):
    path = tmp_path / "missing-directory" / "kraken.out"
    result = kraken(
        command,
        "--tcp-server-port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
        option,
        str(path),
        env={"XDG_STATE_HOME": str(tmp_path / "state")},
    )
    assert "Traceback" not in result.stderr
    what = "log file" if option == "--log-file" else "pid file"
    assert f"cannot write the {what} {path}: No such file or directory" in result.stderr
    assert result.returncode == 2  # bad config, from run and from start alike


def _start_sub(*args: str) -> subprocess.Popen[str]:
    """`kraken sub ARGS...` running, its stdout and stderr read by the test."""
    return subprocess.Popen(
        [sys.executable, "-m", "kraken", "sub", *args],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- pub and sub ----------------------------------------------------------------------


@pytest.mark.parametrize("topics", [[""], ["two words"], ["ok", ""]])
def test_pub_refuses_a_bad_topic_clearly(topics: list[str]):
    server = ServerProcess()
    try:
        watcher = server.wire()
        watcher.subscribe("ok", "two", "words")
        result = kraken("pub", *topics, "-m", "x", "--tcp-server-port", str(server.port))
        assert result.returncode == 2
        assert result.stderr.startswith("kraken: error: bad topic ")
        assert watcher.messages() == []  # nothing was published
    finally:
        server.stop()


def test_sub_tells_on_stderr_where_it_is_subscribed_and_each_cut_and_resume():
    port = free_port()
    server = ServerProcess(port=port)
    sub = _start_sub("news", "--tcp-server-port", str(port))
    try:
        assert sub.stderr.readline().strip() == f"kraken sub: connected to 127.0.0.1:{port}"
        assert sub.stderr.readline().strip() == "kraken sub: subscribed to news"
        assert kraken("pub", "news", "-m", "one", "--tcp-server-port", str(port)).returncode == 0
        assert sub.stdout.readline() == "news\tone\n"
        server.stop()
        lost = sub.stderr.readline().strip()
        assert lost.startswith(f"kraken sub: lost the connection to 127.0.0.1:{port} (")
        assert lost.endswith("); retrying")
        server = ServerProcess(port=port)
        line = sub.stderr.readline().strip()
        while line.startswith("kraken sub: no answer for"):  # the server took its time
            line = sub.stderr.readline().strip()
        assert line == f"kraken sub: reconnected to 127.0.0.1:{port}"
        # a new server cannot replay what the old one had: the loss is told, not hidden
        assert sub.stderr.readline().strip() == (
            f"kraken sub: messages on 1 topic from 127.0.0.1:{port} were lost: "
            "reload what you cache"
        )
        assert kraken("pub", "news", "-m", "two", "--tcp-server-port", str(port)).returncode == 0
        assert sub.stdout.readline() == "news\ttwo\n"
    finally:
        sub.send_signal(signal.SIGINT)
        sub.wait(DEADLINE)
        server.stop()
    assert sub.returncode == 0


def test_sub_against_nothing_fails_after_the_documented_three_seconds():
    began = time.monotonic()
    result = kraken("sub", "news", "--tcp-server-port", str(free_port()))
    took = time.monotonic() - began
    assert result.returncode == 1
    assert "kraken: ConnectionLost: " in result.stderr and "Connection refused" in result.stderr
    assert took < 9.5  # the client's default wait is 10 s; sub's is 3 s (docs/client.md)


def test_sub_says_resumed_with_nothing_lost_when_the_connection_alone_was_cut():
    server = ServerProcess()
    proxy = Proxy(server.port)
    sub = _start_sub("news", "--server", proxy.address)
    try:
        assert sub.stderr.readline().startswith("kraken sub: connected")
        assert sub.stderr.readline().startswith("kraken sub: subscribed")
        proxy.cut()
        assert "lost the connection" in sub.stderr.readline()
        line = sub.stderr.readline().strip()
        assert line.startswith(f"kraken sub: reconnected to {proxy.address}; resumed 1 topic(s)")
        assert line.endswith(", nothing lost")
        assert (
            kraken("pub", "news", "-m", "after", "--tcp-server-port", str(server.port)).returncode
            == 0
        )
        assert sub.stdout.readline() == "news\tafter\n"
    finally:
        sub.send_signal(signal.SIGINT)
        sub.wait(DEADLINE)
        proxy.close()
        server.stop()
    assert sub.returncode == 0
    # it ends saying where a later `sub --retro` would resume without a gap
    ended = sub.stderr.read().strip().splitlines()
    assert re.fullmatch(
        r"kraken sub: stopped; `--retro \d{10}\.\d{6}` resumes from here", ended[-1]
    )


def test_connect_sends_typed_lines_with_crlf_and_prints_the_replies():
    server = ServerProcess()
    try:
        watcher = server.wire()
        watcher.subscribe("topicA")
        typed = "version\nset publish 0 0 27\nMESSAGE topicA 9\nhi there!\nget messages\n"
        result = subprocess.run(
            [sys.executable, "-m", "kraken", "connect", f"127.0.0.1:{server.port}"],
            input=typed,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=DEADLINE,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["VERSION 0.1.0", "STORED", "END"]
        assert watcher.messages() == [(b"topicA", b"hi there!")]
    finally:
        server.stop()
    refused = kraken("connect", f"127.0.0.1:{server.port}")
    assert refused.returncode == 1
    assert (
        refused.stderr.strip()
        == f"kraken: cannot connect to 127.0.0.1:{server.port}: Connection refused"
    )


def test_the_debug_log_shows_requests_as_they_look_on_the_wire():
    server = ServerProcess("--log-level", "debug")
    try:
        client = server.wire()
        client.subscribe("topicA", "topicB")
        client.publish("topicC", b"hi there!")
        client.messages()
        wait_until(lambda: "get messages\n" in server.output(), "the poll in the log")
    finally:
        server.stop()
    log = server.output()
    assert re.search(r"DEBUG kraken\.server: client \d+: set subscribe topicA topicB\n", log)
    assert re.search(r"client \d+: set publish: 1 message \(topicC 9 bytes\)\n", log)
    assert "Subscribe(" not in log and "topics=(b'" not in log


def test_a_kraken_port_given_as_the_admin_port_is_named_not_a_traceback():
    server = ServerProcess()
    try:
        result = kraken("status", "--admin-port", str(server.port))
    finally:
        server.stop()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"kraken: error: 127.0.0.1:{server.port} answered, but not as a Kraken admin API "
        "(another server's Kraken port?): give the server's --admin-port"
    )


def test_start_fails_at_once_when_its_default_admin_port_is_taken(tmp_path: Path):
    with socket.socket() as holder:
        port = _port_pair()  # free, and so is the next one, which the holder now takes
        holder.bind(("127.0.0.1", port + 1))
        holder.listen()
        result = kraken("start", "--tcp-server-port", str(port), "--log-file", str(tmp_path / "l"))
    assert result.returncode == 1
    assert f"cannot listen for the admin API on 127.0.0.1:{port + 1} (admin-port)" in result.stderr
    assert "did not answer within" not in result.stderr
    with socket.socket() as probe:  # and no server was left behind on the Kraken port
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_sub_retro_past_the_buffer_says_so_and_goes_on():
    server = ServerProcess()
    sub = _start_sub("news", "--retro", "1000000000.000000", "--tcp-server-port", str(server.port))
    try:
        assert sub.stderr.readline().startswith("kraken sub: connected")
        assert sub.stderr.readline().strip() == (
            "kraken sub: subscribed to news, but messages since 1000000000.000000 are no longer "
            "all on the server: reload what you cache"
        )
        assert (
            kraken("pub", "news", "-m", "later", "--tcp-server-port", str(server.port)).returncode
            == 0
        )
        assert sub.stdout.readline() == "news\tlater\n"
    finally:
        sub.send_signal(signal.SIGINT)
        sub.wait(DEADLINE)
        server.stop()
    assert sub.returncode == 0


def test_connect_says_what_an_unfinished_request_lacks_at_the_end_of_input():
    server = ServerProcess()
    try:
        # 29 bytes follow the set line (each CRLF the lines were sent with counts), not 30
        typed = "set publish 0 0 30\nMESSAGE topicA 9\nhi there!\n"
        result = subprocess.run(
            [sys.executable, "-m", "kraken", "connect", f"127.0.0.1:{server.port}"],
            input=typed,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=DEADLINE,
        )
    finally:
        server.stop()
    assert result.returncode == 0
    assert (
        "kraken: input ended with a request unfinished: the server waits for 1 more byte "
        "of a 30-byte set publish data block"
    ) in result.stderr


def test_client_commands_describe_the_server_address_as_the_servers():
    text = " ".join(kraken("pub", "--help").stdout.split())
    assert "--listen-ip STR the server's address" in text
    assert "address to listen on" not in text
