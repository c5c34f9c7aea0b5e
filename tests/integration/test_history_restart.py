"""History across a planned restart (``--history-file``), with real servers over TCP.

A graceful stop (SIGTERM) writes the retro buffers and the horizon clock; the next
start on the same port reads them back: a client resumes from a horizon of the
earlier run with exactly what it missed. A crash (SIGKILL) still answers NOT_FOUND,
even with an older history file in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from kraken.client import Client, StateLost
from kraken_testing import ServerProcess, Wire, free_port, kraken, running_server


def history(tmp_path) -> tuple[str, ...]:
    return ("--history-file", str(tmp_path / "history"))


def horizon_of(seconds: float) -> bytes:
    micros = round(seconds * 1_000_000)
    return b"%d.%06d" % divmod(micros, 1_000_000)


def retro(wire: Wire, horizon: bytes, *topics: str) -> bytes:
    wire.set("retro_subscribe", horizon + b"\r\n" + " ".join(topics).encode())
    return wire.line()


def crash(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


def test_a_client_resumes_across_a_graceful_restart_with_exactly_what_it_missed(tmp_path):
    with running_server(*history(tmp_path)) as first:
        port = first.port
        a, b = first.wire(), first.wire()
        a.subscribe("news", "sport")
        b.publish("news", b"seen before the horizon")
        assert a.messages() == [(b"news", b"seen before the horizon")]
        horizon = a.horizon()
        b.publish("news", b"one")
        b.publish("weather sport", b"two\r\nlines")
        b.publish("weather", b"not asked for")
        a.publish("news", b"a's own")  # publisher exclusion is per connection
        b.publish("sport news", b"three")
    assert (tmp_path / "history").exists()
    assert "history written to" in first.output()
    with running_server(*history(tmp_path), port=port) as second:
        c = second.wire()
        assert retro(c, horizon, "news", "sport") == b"STORED\r\n"
        assert c.messages() == [
            (b"news", b"one"),
            (b"sport", b"two\r\nlines"),
            (b"news", b"a's own"),  # a new connection gets its own messages back
            (b"sport news", b"three"),
        ]
        assert retro(c, horizon, "weather") == b"STORED\r\n"
        # "two" reached c through sport since the horizon: not twice
        assert c.messages() == [(b"weather", b"not asked for")]
        # and the server goes on: live messages, and retro from a horizon of this run
        live = second.wire()
        live.publish("news", b"after")
        assert c.messages() == [(b"news", b"after")]
        assert "history restored from" in second.output()
        assert not (tmp_path / "history").exists()  # read once


def test_the_client_library_resumes_across_a_graceful_restart_without_state_lost(tmp_path):
    lost: list[StateLost] = []
    with running_server(*history(tmp_path)) as first:
        port = first.port
        address = f"127.0.0.1:{port}"
        listener = Client(address, on_state_lost=lost.append)
        listener.subscribe(["r1", "r2"])
        with Client(address) as publisher:
            publisher.publish("r1", "before")
            assert [m.payload for m in listener.receive_messages()] == [b"before"]
            publisher.publish("r1", "queued, not polled")
            publisher.publish(["r2", "x"], "also missed")
    try:
        with running_server(*history(tmp_path), port=port):
            messages = listener.receive_messages()
            assert [(m.topics, m.payload) for m in messages] == [
                ((b"r1",), b"queued, not polled"),
                ((b"r2",), b"also missed"),
            ]
            assert lost == []
            with Client(address) as publisher:
                publisher.publish("r2", "after")
            assert [m.payload for m in listener.receive_messages()] == [b"after"]
            assert lost == []
    finally:
        listener.close()


def test_horizons_go_on_above_the_last_one_and_the_downtime_answers_not_found(tmp_path):
    with running_server(*history(tmp_path)) as first:
        port = first.port
        a = first.wire()
        a.publish("t", b"x")
        before = a.horizon()
    downtime = horizon_of(time.time())  # no server handed this one out
    assert downtime > before
    with running_server(*history(tmp_path), port=port) as second:
        b = second.wire()
        after = b.horizon()
        assert after > downtime > before  # same length until 2286: bytes compare as numbers
        b.publish("t", b"y")
        assert b.horizon() > after
        c = second.wire()
        assert retro(c, before, "t") == b"STORED\r\n"
        assert c.messages() == [(b"t", b"y")]
        assert retro(second.wire(), downtime, "t") == b"NOT_FOUND\r\n"


def test_after_a_crash_an_old_horizon_is_not_found_even_with_an_older_file_back(tmp_path):
    path = tmp_path / "history"
    with running_server(*history(tmp_path)) as first:
        port = first.port
        first.wire().publish("t", b"first run")
        first_horizon = first.wire().horizon()
    shutil.copy(path, tmp_path / "older")  # the file of that graceful stop
    lost: list[StateLost] = []
    second = ServerProcess(*history(tmp_path), port=port)
    try:
        listener = Client(f"127.0.0.1:{port}", on_state_lost=lost.append)
        listener.subscribe("t")
        assert listener.receive_messages() == []
        a = second.wire()
        a.subscribe("t")
        second_horizon = a.horizon()
        second.wire().publish("t", b"lost in the crash")
        crash(second)
    finally:
        second.stop()
    shutil.copy(tmp_path / "older", path)  # a stale file: it lacks what the crash lost
    try:
        with running_server(*history(tmp_path), port=port) as third:
            for horizon in (second_horizon, first_horizon):
                assert retro(third.wire(), horizon, "t") == b"NOT_FOUND\r\n"
            assert "did not stop gracefully" in third.output()
            assert listener.receive_messages() == []
            assert [e.topics for e in lost] == [frozenset({b"t"})]  # told, not silent
    finally:
        listener.close()


def test_a_corrupt_history_file_is_logged_and_the_server_starts_fresh(tmp_path):
    path = tmp_path / "history"
    with running_server(*history(tmp_path)) as first:
        port = first.port
        first.wire().publish("t", b"x")
        horizon = first.wire().horizon()
    data = bytearray(path.read_bytes())
    payload = len(data) - 13  # then its shard count and shard (u32 each), the checksum
    assert data[payload] == ord("x")
    data[payload] = ord("y")  # a changed payload: the file still parses
    path.write_bytes(bytes(data))
    with running_server(*history(tmp_path), port=port) as second:
        assert retro(second.wire(), horizon, "t") == b"NOT_FOUND\r\n"
        assert "not used: its checksum does not match" in second.output()
        assert (tmp_path / "history.rejected").exists()
        second.wire().publish("t", b"the server works")
    path.write_bytes(b"not a history file at all")
    with running_server(*history(tmp_path), port=port) as third:
        assert retro(third.wire(), horizon, "t") == b"NOT_FOUND\r\n"
        assert "not used: it is not a Kraken history file" in third.output()


def test_another_shard_count_is_logged_and_the_server_starts_fresh(tmp_path):
    with running_server(*history(tmp_path), "--num-router-shards", "8") as first:
        port = first.port
        first.wire().publish("t", b"x")
        horizon = first.wire().horizon()
    with running_server(*history(tmp_path), "--num-router-shards", "4", port=port) as second:
        assert retro(second.wire(), horizon, "t") == b"NOT_FOUND\r\n"
        assert "written with num_router_shards 8, and this server has 4" in second.output()


def test_without_a_history_file_a_graceful_restart_answers_not_found_as_before():
    with running_server() as first:
        port = first.port
        horizon = first.wire().horizon()
    with running_server(port=port) as second:
        assert retro(second.wire(), horizon, "t") == b"NOT_FOUND\r\n"


def test_a_history_file_in_a_missing_directory_stops_the_start(tmp_path):
    try:
        server = ServerProcess("--history-file", str(tmp_path / "missing" / "history"))
    except RuntimeError as error:
        assert "cannot use history_file" in str(error)
    else:
        server.stop()
        raise AssertionError("the server started")


def test_kraken_stop_then_kraken_start_is_a_planned_restart(tmp_path):
    """`kraken stop` returns once the admin API is gone, perhaps before the server has
    written its history; the `kraken start` right after waits for it."""
    port, admin = free_port(), free_port()
    pid_file = tmp_path / "kraken.pid"
    options = ["--tcp-server-port", str(port), "--admin-port", str(admin)]
    options += ["--pid-file", str(pid_file), "--log-file", str(tmp_path / "log")]
    options += history(tmp_path)
    pids = []
    try:
        assert kraken("start", *options).returncode == 0
        pids.append(int(pid_file.read_text()))
        a = Wire(port)
        horizon = a.horizon()
        a.publish("t", b"before the restart")
        assert kraken("stop", "--admin-port", str(admin)).returncode == 0
        started = kraken("start", *options)
        assert started.returncode == 0, started.stderr
        pids.append(int(pid_file.read_text()))
        b = Wire(port)
        assert retro(b, horizon, "t") == b"STORED\r\n"
        assert b.messages() == [(b"t", b"before the restart")]
        assert kraken("stop", "--admin-port", str(admin)).returncode == 0
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
