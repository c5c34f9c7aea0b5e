"""The idle timeout is never early (issue 11, defect 6).

With ``--client-idle-timeout 5`` a client polling every 4.5 s was closed after
4.17 s of silence. The sweep stamps each read with a coarse clock (``hub.tick``,
the loop time of the last sweep); it allowed one sweep interval for the stamp's
error, but a sweep that runs late (the event loop busy with something long) makes
the error larger than that interval: a read handled just after such a stall still
carries the tick of the sweep before it.

The tests run real servers over loopback TCP. The stall is injected into a server
in this process (no request of a well-configured server blocks the loop that
long); the clients never wait on a timer of the server, only on its replies.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kraken.config import Config
from kraken.server import KrakenServer
from kraken_testing import DEADLINE, Wire, running_server

TIMEOUT = 1.0  # seconds: the sweep runs every 0.25 s


def test_a_client_that_talks_every_nine_tenths_of_the_timeout_is_never_closed() -> None:
    with running_server("--client-idle-timeout", str(TIMEOUT)) as server:
        talker, silent = server.wire(), server.wire()
        talker.subscribe("t")
        silent.subscribe("s")
        silent_since = time.monotonic()
        silent_closed_after = None
        until = time.monotonic() + 6 * TIMEOUT
        while time.monotonic() < until:
            sent = time.monotonic()
            assert talker.messages() == [], "the talker was closed"
            # silent for 0.9 x the timeout, watching the silent one meanwhile
            while (left := sent + 0.9 * TIMEOUT - time.monotonic()) > 0:
                if silent_closed_after is None and silent.closed(timeout=min(left, 0.05)):
                    silent_closed_after = time.monotonic() - silent_since
                elif silent_closed_after is not None:
                    assert not talker.closed(timeout=left), "the talker was closed"
        assert talker.is_open()
        assert silent_closed_after is not None, "the silent client was never closed"
        assert silent_closed_after >= TIMEOUT  # not before its time


class StallingServer:
    """A KrakenServer in a background thread's event loop, whose broker blocks that
    loop for ``seconds`` on a publish to the topic ``stall``."""

    def __init__(self, seconds: float, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = KrakenServer(Config(tcp_server_port=0, admin_port=0, **options))
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(DEADLINE)
        self.stalling = threading.Event()
        publish = self.server.broker.publish

        def stalling_publish(queue, entries, clock):  # type: ignore[no-untyped-def]
            if any(topics == (b"stall",) for topics, _ in entries):
                self.stalling.set()
                time.sleep(seconds)  # the loop does nothing else meanwhile
            return publish(queue, entries, clock)

        self.server.broker.publish = stalling_publish  # type: ignore[method-assign]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


@pytest.fixture
def stalling() -> Iterator[StallingServer]:
    server = StallingServer(0.8 * TIMEOUT, client_idle_timeout=TIMEOUT)
    try:
        yield server
    finally:
        server.close()


def test_a_client_heard_at_the_end_of_a_stall_of_the_event_loop_is_not_closed_early(
    stalling: StallingServer,
) -> None:
    port = stalling.server.port
    client, staller = Wire(port), Wire(port)
    client.subscribe("c")
    staller.set("publish", b"MESSAGE stall 1\r\nx")
    assert stalling.stalling.wait(DEADLINE)
    time.sleep(0.6 * TIMEOUT)  # late in the stall: the server reads this after it
    client.send(b"version\r\n")
    sent = time.monotonic()
    assert client.line().startswith(b"VERSION ")  # answered once the stall is over
    assert staller.line() == b"STORED\r\n"
    # then silent: the close must not come before TIMEOUT after the client's last byte
    closed = client.closed(timeout=TIMEOUT - (time.monotonic() - sent) - 0.02)
    assert not closed, f"closed {time.monotonic() - sent:.2f} s after the client's last byte"
    assert client.closed()  # and it does come
    assert time.monotonic() - sent >= TIMEOUT
