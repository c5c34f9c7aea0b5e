"""A request that never completes, over real TCP: a data block shorter than its
declared length used to be a silent hang that looked like a dead server.

``request_timeout`` closes a connection silent in the middle of a request, with an
error naming what was missing; it counts only while the server reads that
connection. The debug log says, read by read, what a request still waits for.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request

from kraken_testing import DEADLINE, Wire, free_port, running_server, wait_until

PUBLISH_27 = b"set publish 0 0 27\r\nMESSAGE topicA 9\r\nhi ther"  # 2 bytes short
LACKS_2 = "2 more bytes of a 27-byte set publish data block"


def test_a_block_shorter_than_its_length_gets_an_error_after_request_timeout():
    with running_server("--request-timeout", "0.5") as server:
        stalled, between_requests = server.wire(), server.wire()
        between_requests.subscribe("quiet")  # idle, but no request begun: kept
        stalled.send(PUBLISH_27)
        sent = time.monotonic()
        assert stalled.line() == (
            b"CLIENT_ERROR incomplete request: waited 0.5 s for " + LACKS_2.encode() + b"\r\n"
        )
        assert time.monotonic() - sent >= 0.5  # not before its time
        assert stalled.closed()
        assert between_requests.is_open()

        def logged() -> bool:
            return "disconnected: request timeout" in server.output()

        wait_until(logged, "the disconnect to be logged")
        log = server.output()
        assert re.search(
            rf"INFO kraken.server: client \d+ from 127.0.0.1:\d+: request timeout: nothing for "
            rf"0.5 s while waiting for {LACKS_2}\n",
            log,
        ), log
        # the message was never published
        between_requests.subscribe("topicA")
        server.wire().publish("topicA", b"later")
        assert between_requests.messages() == [(b"topicA", b"later")]


def test_a_request_line_without_its_end_times_out_too():
    with running_server("--request-timeout", "0.5") as server:
        wire = server.wire()
        wire.send(b"get messages")
        assert wire.line() == (
            b"CLIENT_ERROR incomplete request: waited 0.5 s for "
            b"the end of a request line (12 bytes so far)\r\n"
        )
        assert wire.closed()


def test_a_request_trickling_in_slower_than_the_timeout_in_total_is_not_timed_out():
    with running_server("--request-timeout", "0.5") as server:
        wire = server.wire()
        request = b"set subscribe 0 0 6\r\ntopicA\r\n"
        for i in range(0, len(request), 3):  # about 1 s in all, 0.1 s between pieces
            wire.send(request[i : i + 3])
            assert not wire.closed(timeout=0.1)
        wire.expect(b"STORED\r\n")
        assert wire.is_open()


def test_a_client_that_does_not_drain_its_replies_is_not_timed_out_meanwhile():
    """The server stops reading a client whose replies back up; a request it began
    before is not timed out while the server itself is not reading."""
    with running_server("--request-timeout", "0.5") as server:
        # a Wire on a socket with a small receive buffer, so that replies back up soon
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", server.port))
        reader = Wire.__new__(Wire)
        reader.sock, reader.buffer = sock, b""
        reader.subscribe("big")
        publisher = server.wire()
        payload = b"p" * (4 << 20)
        for _ in range(5):
            publisher.publish("big", payload)
        # one read: a poll whose 20 MB answer backs up, and the start of a subscribe
        reader.send(b"get messages\r\nset subscribe 0 0 6\r\nto")
        time.sleep(1.2)  # over two timeouts, not reading a byte
        header = reader.line()
        assert header.startswith(b"VALUE messages 0 ")
        # read the 20 MB at once (Wire.read concatenates): once its socket drains, the
        # server reads again, and the time counts while this reads what is left
        size = int(header.split()[3])
        rest = bytearray(reader.buffer)
        while len(rest) < size + 7:
            data = sock.recv(1 << 20)
            assert data, "closed while the answer was read"
            rest += data
        reader.buffer = bytes(rest[size:])
        reader.expect(b"\r\nEND\r\n")
        reader.send(b"picA\r\n")
        reader.expect(b"STORED\r\n")  # still open: the wait did not count
        reader.send(b"set subscribe 0 0 6\r\nto")  # and reading, it counts again
        assert reader.line().startswith(b"CLIENT_ERROR incomplete request: waited 0.5 s for 4 more")
        assert reader.closed()


def test_debug_log_says_what_each_read_left_incomplete():
    with running_server("--log-level", "debug") as server:
        wire = server.wire()
        wire.send(b"set publish 0 0 27\r\n")

        def logged(text: str) -> bool:
            pattern = rf"DEBUG kraken.server: client \d+: waiting for {text}\n"
            return re.search(pattern, server.output()) is not None

        wait_until(lambda: logged("27 more bytes of a 27-byte set publish data block"), "27")
        wire.send(PUBLISH_27[len(b"set publish 0 0 27\r\n") :])
        wait_until(lambda: logged(LACKS_2), "the log to say what is missing")
        wire.send(b"e!")
        wait_until(lambda: logged(r"the \\r\\n after a 27-byte set publish data block"), "CRLF")
        wire.send(b"\r\n")
        wire.expect(b"STORED\r\n")
        wire.send(b"version\r\n").line()  # logged after the completing read, if it were
        waits = re.findall(r"waiting for (.*)\n", server.output())
        assert waits[-1] == "the \\r\\n after a 27-byte set publish data block"  # no more
    with running_server() as server:  # at info level, no such line
        wire = server.wire()
        wire.send(b"version\r\nset publish 0 0 27\r\n")
        assert wire.line().startswith(b"VERSION ")  # the server has read the set line
        assert "waiting for" not in server.output()


def test_idle_timeout_logs_what_an_incomplete_request_lacked():
    with running_server("--client-idle-timeout", "0.5") as server:
        wire = server.wire()
        wire.send(PUBLISH_27)
        assert wire.closed()
        assert wire.buffer == b""  # an idle close is silent

        lacked = rf"client \d+ from 127.0.0.1:\d+: idle timeout while waiting for {LACKS_2}\n"

        def logged() -> bool:
            return re.search(rf"INFO kraken.server: {lacked}", server.output()) is not None

        wait_until(logged, "the idle close to be logged with what the request lacked")
        # the disconnect itself, an ordinary one, is logged at debug level only
        assert "disconnected" not in server.output()


def test_request_timeouts_are_counted_in_the_metrics():
    admin = free_port()
    with running_server("--request-timeout", "0.5", "--admin-port", str(admin)) as server:
        wire = server.wire()
        wire.send(b"set subscribe 0 0 6\r\ntop")
        assert wire.line().startswith(b"CLIENT_ERROR incomplete request: ")

        def counted() -> bool:
            return 'kraken_disconnects_total{reason="request_timeout"} 1.0' in metrics(admin)

        wait_until(counted, "the metric to count the request timeout")


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text
