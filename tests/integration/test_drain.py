"""The graceful drain (lame duck) of a stopping server, with real processes over TCP.

SIGTERM, `kraken stop` and `POST /shutdown` stop accepting at once, keep serving
the connected clients, and close each with `SERVER_ERROR shutting down` once it
has polled what was queued for it, or when the drain period ends; then the
server stops. Ctrl-C and a second SIGTERM stop at once, still with the line.
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import subprocess
import sys
import time

import pytest

from integration.test_deferred_broker import InLoop
from kraken.client import Client, StateLost
from kraken.server.listener import Shutdown
from kraken_testing import (
    DEADLINE,
    ServerProcess,
    Wire,
    clean_env,
    free_port,
    kraken,
    wait_until,
)

SHUTTING_DOWN = b"SERVER_ERROR shutting down\r\n"


def refuses(port: int) -> bool:
    """True when nothing accepts connections on ``port`` any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def with_queued(server: ServerProcess, topic: str, *payloads: bytes) -> tuple[Wire, Wire]:
    """A subscriber to ``topic`` with ``payloads`` queued for it, and their publisher."""
    subscriber, publisher = server.wire(), server.wire()
    subscriber.subscribe(topic)
    for payload in payloads:
        publisher.publish(topic, payload)
    return subscriber, publisher


def test_sigterm_stops_accepting_lets_pollers_collect_then_closes_with_a_line():
    server = ServerProcess("--shutdown-drain-seconds", "3")
    try:
        poller, _ = with_queued(server, "news", b"one", b"two")
        sleeper, _ = with_queued(server, "sport", b"never polled")
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses(server.port), "the port to refuse new connections")
        assert not sleeper.closed(timeout=0.1)  # still served: the drain goes on
        # the poller gets what was queued on its next poll, then the line and EOF
        assert poller.messages() == [(b"news", b"one"), (b"news", b"two")]
        assert poller.closed()
        assert poller.buffer == SHUTTING_DOWN
        # a client that never polls keeps its queue until the drain is over
        assert sleeper.closed()
        assert time.monotonic() - began >= 3.0 - 0.1  # not before (0.1: clock slack)
        assert sleeper.buffer == SHUTTING_DOWN
        assert server.process.wait(3 + DEADLINE) == 0
    finally:
        server.stop()
    log = server.output()
    assert "draining: no longer accepting; " in log
    assert " client(s) get SERVER_ERROR shutting down within 3 s" in log
    assert "drain over after" in log and "closing the 1 client(s) left" in log


def test_idle_connections_each_get_the_line_and_the_drain_ends_when_all_are_gone():
    server = ServerProcess("--shutdown-drain-seconds", "60")
    try:
        wires = [server.wire() for _ in range(20)]
        for wire in wires:  # each accepted (one still in the backlog would be refused)
            wire.send(b"version\r\n")
            assert wire.line().startswith(b"VERSION ")
        wires[0].subscribe("news")  # subscribed, nothing queued: nothing waits for it
        server.process.send_signal(signal.SIGTERM)
        for wire in wires:
            assert wire.closed()
            assert wire.buffer == SHUTTING_DOWN
        assert server.process.wait(DEADLINE) == 0  # long before the 60 s
    finally:
        server.stop()
    assert "drained: every client closed in" in server.output()


def test_a_connection_still_served_during_the_drain_may_publish_and_subscribe():
    server = ServerProcess("--shutdown-drain-seconds", "60")
    try:
        busy, _ = with_queued(server, "held", b"keeps it open")  # its queue holds it
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses(server.port), "the port to refuse new connections")
        busy.subscribe("more")
        busy.publish("news", b"during the drain")  # kept in the retro buffer
        assert busy.messages() == [(b"held", b"keeps it open")]
        assert busy.closed()  # its queue polled empty: its turn came, it closes
        assert busy.buffer == SHUTTING_DOWN
        assert server.process.wait(DEADLINE) == 0
    finally:
        server.stop()


def test_a_second_sigterm_during_a_drain_stops_at_once():
    server = ServerProcess("--shutdown-drain-seconds", "60")
    try:
        sleeper, _ = with_queued(server, "news", b"never polled")
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refuses(server.port), "the port to refuse new connections")
        assert not sleeper.closed(timeout=0.1)
        server.process.send_signal(signal.SIGTERM)
        assert sleeper.closed()  # within DEADLINE, long before the 60 s drain
        assert sleeper.buffer == SHUTTING_DOWN
        assert server.process.wait(DEADLINE) == 0
    finally:
        server.stop()
    assert "second request to stop: stopping at once" in server.output()


def test_ctrl_c_stops_at_once_with_the_line():
    server = ServerProcess("--shutdown-drain-seconds", "60")
    try:
        sleeper, _ = with_queued(server, "news", b"never polled")
        server.process.send_signal(signal.SIGINT)
        assert sleeper.closed()
        assert sleeper.buffer == SHUTTING_DOWN
        assert server.process.wait(DEADLINE) == 0
    finally:
        server.stop()


def test_kraken_stop_drain_drains_through_the_admin_api():
    admin = free_port()
    server = ServerProcess("--admin-port", str(admin), "--shutdown-drain-seconds", "60")
    where = ("--admin-port", str(admin), "--tcp-server-port", str(server.port))
    try:
        poller, _ = with_queued(server, "news", b"one")
        sleeper, _ = with_queued(server, "sport", b"never polled")
        began = time.monotonic()
        stop = subprocess.Popen(
            [sys.executable, "-m", "kraken", "stop", "--drain", "2", *where],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(lambda: refuses(server.port), "the port to refuse new connections")
        assert poller.messages() == [(b"news", b"one")]
        assert poller.closed()
        assert poller.buffer == SHUTTING_DOWN
        assert sleeper.closed()
        assert time.monotonic() - began >= 2.0 - 0.1  # the drain given, not the server's 60 s
        assert sleeper.buffer == SHUTTING_DOWN
        out, err = stop.communicate(timeout=2 + DEADLINE)
        assert stop.returncode == 0, err
        assert out.startswith("kraken stopped (pid ")
        assert server.process.wait(DEADLINE) == 0
    finally:
        server.stop()
    assert "shutdown requested through the admin API by 127.0.0.1 (drain 2 s)" in server.output()


@pytest.mark.parametrize("drain", ["-1", "soon", "inf"])
def test_kraken_stop_refuses_a_drain_that_is_no_number_of_seconds(drain: str):
    result = kraken("stop", "--drain", drain, "--admin-port", str(free_port()))
    assert result.returncode == 2
    assert "argument --drain: expected a number of seconds, 0 or more" in result.stderr


def test_a_python_client_reconnects_by_itself_across_a_drain_and_a_restart():
    events: list[str] = []
    first = ServerProcess("--shutdown-drain-seconds", "2")
    port = first.port
    second = None
    try:
        with Client(f"127.0.0.1:{port}", on_link_event=events.append) as client:
            client.subscribe("news")
            first.wire().publish("news", b"before the stop")
            first.process.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses(port), "the port to refuse new connections")
            received = client.receive_messages()  # the server is draining: still served
            assert [m.payload for m in received] == [b"before the stop"]
            assert first.process.wait(2 + DEADLINE) == 0
            second = ServerProcess(port=port)
            # without a history file the new server cannot replay: the loss is told
            with pytest.raises(StateLost):
                client.receive_messages()
            second.wire().publish("news", b"after the restart")
            got: list[bytes] = []
            wait_until(
                lambda: got.extend(m.payload for m in client.receive_messages()) or bool(got),
                "the message published after the restart",
            )
            assert got == [b"after the restart"]
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert events[0] == f"connected to 127.0.0.1:{port}"
    assert events[1] == (
        f"lost the connection to 127.0.0.1:{port} (the server is shutting down); retrying"
    )
    assert events[2] == f"reconnected to 127.0.0.1:{port}"


def test_with_a_history_file_the_resume_across_a_drain_is_lossless(tmp_path):
    history = ("--history-file", str(tmp_path / "history"))
    lost: list[StateLost] = []
    first = ServerProcess("--shutdown-drain-seconds", "60", *history)
    port = first.port
    second = None
    try:
        with Client(f"127.0.0.1:{port}", on_state_lost=lost.append) as client:
            client.subscribe("news")
            # a connection with a message queued that it does not poll stays served
            late, _ = with_queued(first, "held", b"keeps it open")
            late.publish("news", b"before the stop")
            first.process.send_signal(signal.SIGTERM)
            wait_until(lambda: refuses(port), "the port to refuse new connections")
            received = client.receive_messages()
            assert [m.payload for m in received] == [b"before the stop"]
            # the client's turn has come: it is closed; a publish after that is kept
            wait_until(lambda: client_was_closed(client), "the client to be closed")
            late.publish("news", b"during the drain")
            first.process.send_signal(signal.SIGTERM)  # the second: stop now
            assert first.process.wait(DEADLINE) == 0
            second = ServerProcess(*history, port=port)
            got: list[bytes] = []
            wait_until(
                lambda: got.extend(m.payload for m in client.receive_messages()) or bool(got),
                "the message published during the drain",
            )
            assert got == [b"during the drain"]
            assert lost == []
    finally:
        first.stop()
        if second is not None:
            second.stop()


def client_was_closed(client: Client) -> bool:
    """True once the server has closed the client's one connection (it said why)."""
    link = next(iter(client._links.values()))
    if link.closed is not None:
        return True
    sock: socket.socket = link.connection
    sock.setblocking(False)
    try:
        data = sock.recv(1 << 16, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)
    return data.startswith(SHUTTING_DOWN) or not data


def test_kraken_sub_says_the_server_is_shutting_down():
    server = ServerProcess("--shutdown-drain-seconds", "2")
    sub = subprocess.Popen(
        [sys.executable, "-m", "kraken", "sub", "news", "--tcp-server-port", str(server.port)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert sub.stderr is not None
    try:
        assert sub.stderr.readline().startswith("kraken sub: connected")
        assert sub.stderr.readline().startswith("kraken sub: subscribed")
        server.process.send_signal(signal.SIGTERM)
        assert sub.stderr.readline().strip() == (
            f"kraken sub: lost the connection to 127.0.0.1:{server.port} "
            "(the server is shutting down); retrying"
        )
    finally:
        sub.send_signal(signal.SIGINT)
        sub.wait(DEADLINE)
        server.stop()


def test_a_reply_held_when_the_turn_comes_goes_out_before_the_line():
    running = InLoop()
    try:
        waiting = Wire(running.server.port)
        horizon = waiting.horizon()
        waiting.set("retro_subscribe", horizon + b"\r\nnews")  # the broker holds it
        wait_until(lambda: bool(running.broker.waiting), "the retro_subscribe to be held")
        shutdown = running.in_loop(lambda: Shutdown(60.0))
        running.in_loop(shutdown.request)
        drain = asyncio.run_coroutine_threadsafe(running.server.drain(shutdown), running.loop)
        assert not waiting.closed(timeout=0.3)  # its turn came, but a reply is owed
        running.in_loop(running.broker.settle)
        assert waiting.closed()
        assert waiting.buffer == b"STORED\r\n" + SHUTTING_DOWN
        drain.result(DEADLINE)  # every client closed: the drain is over, long before 60 s
    finally:
        running.close()


def test_a_later_request_may_shorten_a_drain_never_lengthen_it():
    async def requests() -> None:
        shutdown = Shutdown(5.0)
        assert shutdown.left() == math.inf and not shutdown.requested.is_set()
        assert 4 < shutdown.request() <= 5.0  # the default
        assert shutdown.requested.is_set()
        assert 4 < shutdown.request(60.0) <= 5.0  # not lengthened
        assert shutdown.request(1.0) <= 1.0
        shutdown.terminate()  # a second SIGTERM: at once
        assert shutdown.left() == 0

    asyncio.run(requests())


def test_the_first_sigterm_drains_for_the_default():
    async def first() -> None:
        shutdown = Shutdown(5.0)
        shutdown.terminate()
        assert 4 < shutdown.left() <= 5.0

    asyncio.run(first())


def test_a_slow_reader_gets_its_whole_answer_then_the_line_before_the_drain_ends():
    # hostile run 2: an answer still in the socket's buffer (35.8 MB unsent) did not
    # count as waiting: "drained: every client closed in 0.0 s", and the stop cut the
    # reader off 5 s later, mid-payload and without the line
    server = ServerProcess("--shutdown-drain-seconds", "30")
    try:
        reader, publisher = server.wire(), server.wire()
        reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        reader.subscribe("big")
        payload = b"p" * (1 << 20)
        for _ in range(12):
            publisher.publish("big", payload)
        reader.send(b"get messages\r\n")
        time.sleep(0.3)  # the answer is written: most of it waits in the server's buffer
        server.process.send_signal(signal.SIGTERM)
        received = bytearray()
        started = time.monotonic()
        while chunk := reader.sock.recv(65536):  # about 2 MB a second: 6 s for 12 MB
            received += chunk
            time.sleep(0.03)
        took = time.monotonic() - started
        assert took > 5, "read faster than the stop's 5 s: this test would not tell"
        entry = b"MESSAGE big %d\r\n%b" % (len(payload), payload)
        block = b"\r\n".join([entry] * 12)
        assert received == b"VALUE messages 0 %d\r\n%b\r\nEND\r\n%b" % (
            len(block),
            block,
            SHUTTING_DOWN,
        )
        assert server.process.wait(DEADLINE) == 0
    finally:
        server.stop()
    assert "drained: every client closed in" in server.output()


def test_a_second_sigterm_stops_without_waiting_for_a_client_that_reads_nothing():
    server = ServerProcess("--shutdown-drain-seconds", "30")
    try:
        stuck, publisher = server.wire(), server.wire()
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.subscribe("big")
        for _ in range(8):
            publisher.publish("big", b"p" * (1 << 20))
        stuck.send(b"get messages\r\n")  # 8 MB answered, never read
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # draining: the stuck client holds it (30 s)
        assert server.process.poll() is None
        server.process.send_signal(signal.SIGTERM)
        # at once: before, the stop still waited 5 s for the stuck client's answer
        assert server.process.wait(3) == 0
    finally:
        server.stop()
    assert "second request to stop: stopping at once" in server.output()
