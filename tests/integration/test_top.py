"""`kraken top`: its rows from hand-made samples, and the command against a real server,
in subprocesses, as an operator runs it (stdout piped, or on a pseudo-terminal)."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import IO, Any

from rich.console import Console

from kraken.top import Frame, Row, plain, render, rows
from kraken_testing import DEADLINE, ServerProcess, clean_env, free_port, running_server, wait_until


def status(**fields: Any) -> dict[str, Any]:
    """A GET /status answer, as the server gives it, with ``fields`` changed."""
    answer: dict[str, Any] = {
        "version": "1.2.3",
        "pid": 4242,
        "uptime_seconds": 100.0,
        "listen": "127.0.0.1:12355",
        "clients": 3,
        "topics": 2,
        "subscriptions": 4,
        "queued_messages": 7,
        "log_level": "info",
        "connections_accepted": 10,
        "published": 1000,
        "deliveries": 3000,
        "bytes_received": 50_000,
        "bytes_sent": 80_000,
        "slow_consumers": 1,
        "max_tcp_clients": 10,
        "queued_bytes": 700,
        "largest_queue_messages": 5,
        "largest_queue_bytes": 500,
        "max_queued_messages": 10,
        "max_queued_bytes": 1000,
    }
    answer.update(fields)
    return answer


def by_key(view: list[Row]) -> dict[str, Row]:
    return {row.key: row for row in view}


# -- the rows, from hand-made samples ---------------------------------------------


def test_rows_give_the_latest_values_and_the_counters_rates_over_the_interval():
    before = status()
    after = status(
        uptime_seconds=102.0,
        clients=4,
        connections_accepted=14,
        published=1200,
        deliveries=3600,
        bytes_received=60_000,
        bytes_sent=80_000,
        slow_consumers=2,
        largest_queue_messages=9,
    )
    view = by_key(rows(before, after, 2.0))

    assert view["connections"].value == 4 and view["connections"].limit == 10
    assert view["connections"].per_second is None  # a gauge has no rate
    assert view["connections_accepted"].per_second == 2.0
    assert view["published"].value == 1200 and view["published"].per_second == 100.0
    assert view["deliveries"].per_second == 300.0
    assert view["bytes_received"].per_second == 5000.0
    assert view["bytes_sent"].per_second == 0.0
    assert view["slow_consumers"].value == 2 and view["slow_consumers"].per_second == 0.5
    assert view["largest_queue_messages"].value == 9
    assert view["largest_queue_messages"].limit == 10
    assert view["largest_queue_bytes"].limit == 1000
    assert (view["topics"].value, view["subscriptions"].value) == (2, 4)
    assert (view["queued_messages"].value, view["queued_bytes"].value) == (7, 700)
    assert (view["version"].value, view["pid"].value, view["log_level"].value) == (
        "1.2.3",
        4242,
        "info",
    )
    assert view["uptime_seconds"].value == 102.0
    assert view["listen"].value == "127.0.0.1:12355"
    assert [row.group for row in rows(before, after, 2.0)] == sorted(
        [row.group for row in rows(before, after, 2.0)],
        key=["server", "clients", "traffic", "queues"].index,
    )


def test_rates_are_unknown_without_an_interval_or_across_a_restart():
    before = status()
    later = status(uptime_seconds=101.0, published=1100)
    assert by_key(rows(before, later, 1.0))["published"].per_second == 100.0
    assert all(row.per_second is None for row in rows(before, before, 0.0))

    restarted = status(pid=5151, uptime_seconds=1.0, published=3)
    assert all(row.per_second is None for row in rows(before, restarted, 1.0))
    same_pid_again = status(uptime_seconds=1.0, published=3)  # a pid reused after a restart
    assert all(row.per_second is None for row in rows(before, same_pid_again, 1.0))


def test_what_the_server_does_not_say_is_unknown():
    old = {"version": "0.1.0", "pid": 1, "uptime_seconds": 5.0, "clients": 2, "topics": 1}
    view = by_key(rows(old, {**old, "uptime_seconds": 6.0}, 1.0))
    assert view["connections"].value == 2 and view["connections"].limit is None
    assert view["published"].value is None and view["published"].per_second is None
    assert view["slow_consumers"].value is None


def test_plain_lines_and_the_table_show_the_rows():
    frame = Frame(rows(status(), status(uptime_seconds=102.0, published=1200), 2.0))
    lines = plain(frame).splitlines()
    assert lines[0].startswith("time ")
    values = dict(line.split(" ", 1) for line in lines[1:])
    assert values["connections"] == "3" and values["connections_limit"] == "10"
    assert values["published"] == "1200" and values["published_per_second"] == "100.00"
    assert values["version"] == "1.2.3" and values["uptime_seconds"] == "102.0"
    assert "topics_per_second" not in values

    console = Console(record=True, width=100, color_system=None)
    console.print(render(frame, "caption here"))
    text = console.export_text()
    assert "kraken 1.2.3 · pid 4242 · 127.0.0.1:12355 · up 00:01:42 · log level info" in text
    assert "caption here" in text
    assert re.search(r"publishes\s+1,200\s+100\.0/s", text), text
    assert re.search(r"connections\s+3 of 10 \(30%\)", text), text
    assert re.search(r"heaviest client queue\s+500 B of 1,000 B \(50%\)", text), text
    assert re.search(r"bytes in\s+48\.8 KiB\s+0 B/s", text), text

    down = Frame(frame.rows, problem="not answering since 12:00:00, retrying")
    assert plain(down).splitlines()[1:] == ["not answering since 12:00:00, retrying"]
    console = Console(record=True, width=100, color_system=None)
    console.print(render(down))
    assert "not answering since 12:00:00, retrying" in console.export_text()


# -- the command, against a real server -------------------------------------------


def admin_port(server: ServerProcess) -> int:
    """The admin port a server started with ``--admin-port 0`` logged."""
    pattern = re.compile(r"admin API listening on [\d.]+:(\d+)")
    wait_until(lambda: pattern.search(server.output()) is not None, "the admin API to listen")
    match = pattern.search(server.output())
    assert match is not None
    return int(match.group(1))


def top_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kraken", "top", *args]


class Reader:
    """Everything a stream gives, read by a thread, so that waits can have deadlines."""

    def __init__(self, stream: IO[bytes] | int) -> None:
        self.data = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes] | int) -> None:
        while True:
            try:
                chunk = os.read(stream, 65536) if isinstance(stream, int) else stream.read1()
            except OSError:  # EIO: the pseudo-terminal's other side is closed
                chunk = b""
            if not chunk:
                return
            with self._lock:
                self.data += chunk

    def text(self) -> str:
        with self._lock:
            return self.data.decode(errors="replace")

    def finish(self) -> str:
        self._thread.join(DEADLINE)
        return self.text()


def interrupt(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_once_shows_the_counts_and_the_rates_of_real_traffic():
    with running_server("--max-queued-messages", "5", "--max-tcp-clients", "50") as server:
        admin = admin_port(server)
        a, b, c, d = server.wire(), server.wire(), server.wire(), server.wire()
        a.subscribe("news", "sports")
        b.subscribe("news")
        c.subscribe("held")
        d.subscribe("flood")
        for n in range(6):  # d never polls: past 5 queued, it is closed as a slow consumer
            c.publish("flood", b"%d" % n)
        assert d.closed(), "d was not closed as a slow consumer"
        b.publish("held", b"one")
        b.publish("held", b"two")  # c never polls: its queue holds 2

        top = subprocess.Popen(
            top_command("--once", "--interval", "0.3", "--admin-port", str(admin)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        try:
            deadline = time.monotonic() + DEADLINE
            published = 0
            while top.poll() is None:  # traffic all through top's two samples
                assert time.monotonic() < deadline, "top --once did not finish"
                c.publish("news", b"hello")
                published += 1
                assert len(a.messages()) == 1 and len(b.messages()) == 1
            out, err = top.communicate(timeout=DEADLINE)
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()
        assert top.returncode == 0, err
        values = dict(line.split(" ", 1) for line in out.decode().splitlines())

    assert values["connections"] == "3" and values["connections_limit"] == "50"
    assert values["connections_accepted"] == "5"  # and the start-up check of ServerProcess
    assert values["topics"] == "3"  # news, sports, held; flood went with d
    assert values["subscriptions"] == "4"
    assert values["slow_consumers"] == "1"
    assert values["largest_queue_messages"] == "2"
    assert values["largest_queue_messages_limit"] == "5"
    assert 8 <= int(values["published"]) <= 8 + published
    for counter in ("published", "deliveries", "bytes_received", "bytes_sent"):
        assert float(values[f"{counter}_per_second"]) > 0, (counter, values)
    assert float(values["slow_consumers_per_second"]) == 0
    assert values["log_level"] == "info" and values["listen"] == f"127.0.0.1:{server.port}"
    assert int(values["pid"]) == server.process.pid


def test_top_exits_1_when_no_server_answers():
    result = subprocess.run(
        top_command("--once", "--interval", "0.1", "--admin-port", str(free_port())),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("kraken is not running"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    live = subprocess.run(
        top_command("--interval", "0.1", "--admin-port", str(free_port())),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert live.returncode == 1 and live.stdout == ""
    assert live.stderr.startswith("kraken is not running"), live.stderr


def test_live_view_refreshes_says_when_the_server_is_gone_and_stops_on_ctrl_c():
    with running_server() as server:
        admin = admin_port(server)
        top = subprocess.Popen(
            top_command("--interval", "0.2", "--admin-port", str(admin)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
        )
        try:
            assert top.stdout is not None and top.stderr is not None
            out, err = Reader(top.stdout), Reader(top.stderr)

            def blocks() -> list[str]:
                return [b for b in out.text().split("\n\n") if b.strip()]

            wait_until(lambda: len(blocks()) >= 3, "three refreshes")
            assert all(b.startswith("time ") for b in blocks())
            assert "connections 0" in blocks()[1]
            assert "published_per_second 0.00" in blocks()[1]

            server.stop()
            wait_until(lambda: "not answering since" in out.text(), "top to notice the stop")
            gone = out.text().count("not answering since")
            wait_until(lambda: out.text().count("not answering since") > gone, "another try")
            assert top.poll() is None, "top stopped when the server did"
            assert re.search(r"not answering since \d\d:\d\d:\d\d, retrying", out.text())

            assert interrupt(top) == 0
            assert err.finish() == ""
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()


def test_live_view_on_a_terminal_redraws_until_ctrl_c():
    with running_server() as server:
        admin = admin_port(server)
        wire = server.wire()
        wire.subscribe("news")
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
        top = subprocess.Popen(
            top_command("--interval", "0.2", "--admin-port", str(admin)),
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=clean_env(TERM="xterm-256color"),
        )
        os.close(slave)
        try:
            assert top.stderr is not None
            out, err = Reader(master), Reader(top.stderr)
            wait_until(lambda: out.text().count("per second") >= 3, "three redraws")
            screen = out.text()
            assert "\x1b[" in screen  # drawn in place, by rich
            assert re.search(r"connections\s+1 of 10,000", screen), screen
            assert f"pid {server.process.pid} · 127.0.0.1:{server.port}" in screen
            assert "Ctrl-C quits" in screen
            assert interrupt(top) == 0
            assert err.finish() == ""
        finally:
            if top.poll() is None:
                top.kill()
                top.wait()
            os.close(master)
