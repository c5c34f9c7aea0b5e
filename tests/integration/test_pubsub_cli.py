"""`kraken pub` and `kraken sub`, the shell commands, against a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from kraken_testing import DEADLINE, ROOT, running_server


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kraken", *args]


ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def start_sub(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command("sub", "--server", f"127.0.0.1:{port}", "--poll-interval", "0.02", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_subscribed(server, topic: bytes) -> None:
    """Until the server (at debug level) has logged the subscriber's subscribe."""
    deadline = time.monotonic() + DEADLINE
    while f": set subscribe {topic.decode()}" not in server.output():
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.02)


def pub(port: int, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command("pub", "--server", f"127.0.0.1:{port}", *args),
        input=stdin,
        capture_output=True,
        env=ENV,
        timeout=30,
    )


def test_sub_prints_each_message_as_it_arrives_until_interrupted():
    with running_server("--log-level", "debug") as server:
        sub = start_sub(server.port, "news", "sports")
        try:
            wait_subscribed(server, b"news")
            assert pub(server.port, "news", "-m", "hello world").returncode == 0
            assert pub(server.port, "sports", "news", stdin=b"line1\nline2\tx").returncode == 0
            assert sub.stdout is not None
            assert sub.stdout.readline() == "news\thello world\n"
            assert sub.stdout.readline() == "sports news\tline1\\nline2\\tx\n"
        finally:
            sub.send_signal(signal.SIGINT)
            assert sub.wait(DEADLINE) == 0


def test_sub_json_with_retro_prints_what_was_published_since_the_horizon():
    with running_server() as server:
        horizon = server.wire().horizon().decode()
        assert pub(server.port, "old", "-m", "before sub").returncode == 0
        sub = start_sub(server.port, "old", "--json", "--retro", horizon)
        try:
            assert sub.stdout is not None
            assert json.loads(sub.stdout.readline()) == {"topics": ["old"], "payload": "before sub"}
        finally:
            sub.send_signal(signal.SIGINT)
            assert sub.wait(DEADLINE) == 0


def test_pub_to_an_unreachable_server_fails_clearly():
    with running_server() as gone:
        port = gone.port
    result = subprocess.run(
        command("pub", "--server", f"127.0.0.1:{port}", "t", "-m", "x"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert result.returncode == 1 and "ConnectionLost" in result.stderr


def test_sub_escapes_payloads_unambiguously_on_one_line():
    from kraken.cli import escape

    assert escape(b"text \xc3\xa9") == "text é"
    assert escape(b"a\\xff") == "a\\\\xff"  # a literal backslash is doubled...
    assert escape(b"a\xff") == "a\\xff"  # ...so a byte that is not UTF-8 reads differently
    assert escape(b"\x00\t\r\n\x7f") == "\\x00\\t\\r\\n\\x7f"
