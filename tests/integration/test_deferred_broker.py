"""A broker that answers later, behind the real TCP transport.

The server runs in this process, over a broker whose retro_subscribe answers
only when the test settles it: the reply is held open, the connection stops
reading meanwhile, the requests after it are answered after it, in order, and
every other connection is served all along.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from kraken.brokers import LocalBroker
from kraken.config import Config
from kraken.server import KrakenServer
from kraken.server.hub import now_us
from kraken_testing import DEADLINE, Deferring, Wire


class InLoop:
    """A KrakenServer over a deferring broker, in an event loop on a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = Config(tcp_server_port=0, admin_port=0)
        self.broker = Deferring(LocalBroker.from_config(config, now_us()), ["retro_subscribe"])
        self.server = KrakenServer(config, broker=self.broker)  # type: ignore[arg-type]
        self.call(self.server.start())

    def call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(DEADLINE)

    def in_loop(self, function):  # type: ignore[no-untyped-def]
        async def run():  # type: ignore[no-untyped-def]
            return function()

        return self.call(run())

    def close(self) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


@pytest.fixture
def running() -> Iterator[InLoop]:
    running = InLoop()
    yield running
    running.close()


def test_a_held_reply_pauses_that_connection_and_keeps_its_replies_in_order(
    running: InLoop,
) -> None:
    waiting, bystander, publisher = (Wire(running.server.port) for _ in range(3))
    bystander.subscribe("news")
    horizon = publisher.horizon()
    waiting.send(b"version\r\n")
    waiting.set("retro_subscribe", horizon + b"\r\nnews")
    waiting.send(b"version\r\n")
    waiting.set("publish", b"MESSAGE news 4\r\nheld")
    assert waiting.line().startswith(b"VERSION ")  # what came before the held reply

    assert not waiting.closed(timeout=0.3)  # nothing more, and still open
    assert waiting.buffer == b""
    (connection,) = [c for c in running.server.connections if c.session.id == 1]  # type: ignore[union-attr]
    assert running.in_loop(lambda: connection.transport.is_reading()) is False  # type: ignore[attr-defined]
    bystander.send(b"version\r\n")
    assert bystander.line().startswith(b"VERSION ")  # the others are served meanwhile
    publisher.publish("news", b"meanwhile")
    assert bystander.messages() == [(b"news", b"meanwhile")]

    running.loop.call_soon_threadsafe(running.broker.settle)
    assert waiting.line() == b"STORED\r\n"
    assert waiting.line().startswith(b"VERSION ")
    assert waiting.line() == b"STORED\r\n"  # the publish held behind it, done after it
    assert bystander.messages() == [(b"news", b"held")]
    assert waiting.messages() == [(b"news", b"meanwhile")]
    assert running.in_loop(lambda: connection.transport.is_reading()) is True  # type: ignore[attr-defined]
