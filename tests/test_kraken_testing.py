"""The test helpers themselves: an assertion that cannot fail proves nothing.

``Wire.closed()`` backs every "the server closes the connection" rule of the
integration tests, so it must say False for a connection that stays open.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from kraken_testing import ServerProcess, Wire, running_server, wait_until


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server() as process:
        yield process


def test_closed_is_false_for_a_connection_the_server_keeps_open(server: ServerProcess) -> None:
    wire = server.wire()
    started = time.monotonic()
    assert not wire.closed(timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert wire.is_open()  # waiting left the connection usable


def test_closed_is_false_after_a_reply_and_keeps_its_bytes(server: ServerProcess) -> None:
    wire = server.wire()
    wire.send(b"version\r\n")
    assert not wire.closed(timeout=0.3)
    assert wire.line().startswith(b"VERSION ")


def test_closed_is_true_when_the_server_closes_after_quit(server: ServerProcess) -> None:
    wire = server.wire()
    wire.send(b"version\r\nquit\r\n")
    assert wire.closed()
    assert wire.line().startswith(b"VERSION ")
    assert wire.buffer == b""


def test_closed_is_true_when_the_server_process_stops() -> None:
    with running_server() as server:
        wire = server.wire()
        assert wire.is_open()
        server.stop()
        assert wire.closed()


def test_closed_is_true_on_a_connection_reset() -> None:
    # a server that resets connections on purpose is not for the asking: a plain listener
    # closing with SO_LINGER 0 sends RST instead of FIN
    with socket.create_server(("127.0.0.1", 0)) as listener:
        wire = Wire(listener.getsockname()[1])
        peer, _ = listener.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        assert wire.closed()
        wire.close()


def test_wait_until_returns_once_the_condition_holds_and_fails_past_its_timeout() -> None:
    calls: list[None] = []

    def third_call() -> bool:
        calls.append(None)
        return len(calls) == 3

    wait_until(third_call, "a third call")
    assert len(calls) == 3
    with pytest.raises(AssertionError, match=r"timed out after 0\.1 s waiting for never"):
        wait_until(lambda: False, "never", timeout=0.1)
