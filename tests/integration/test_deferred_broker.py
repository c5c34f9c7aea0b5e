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
from typing import Any

import pytest

from kraken.brokers import LocalBroker
from kraken.config import Config
from kraken.errors import Forbidden
from kraken.server import KrakenServer
from kraken.server.hub import now_us
from kraken.server.tcp import BATCH
from kraken_testing import DEADLINE, Deferring, Wire


class InLoop:
    """A KrakenServer over a deferring broker, in an event loop on a thread."""

    def __init__(self, authorizer: Any = None, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = Config(tcp_server_port=0, admin_port=0, **options)
        self.broker = Deferring(LocalBroker.from_config(config, now_us()), ["retro_subscribe"])
        self.server = KrakenServer(config, broker=self.broker, authorizer=authorizer)  # type: ignore[arg-type]
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


def test_a_request_begun_behind_a_held_reply_is_not_timed_out_while_held() -> None:
    """request_timeout counts only while the connection is read: a request whose rest
    the server does not read (a reply is held) is not the client's delay."""
    running = InLoop(request_timeout=0.3)
    try:
        waiting = Wire(running.server.port)
        horizon = waiting.horizon()
        block = horizon + b"\r\nnews"
        # in one read: the request to be held, then the start of the next one
        retro = b"set retro_subscribe 0 0 %d\r\n%b\r\n" % (len(block), block)
        waiting.send(retro + b"set subscribe 0 0 6\r\nto")
        assert not waiting.closed(timeout=1.0)  # over three timeouts, held all along
        running.loop.call_soon_threadsafe(running.broker.settle)
        assert waiting.line() == b"STORED\r\n"
        waiting.send(b"picA\r\n")
        assert waiting.line() == b"STORED\r\n"  # the subscribe was still open
        waiting.send(b"set subscribe 0 0 6\r\nto")  # read, it counts: timed out
        assert waiting.line() == (
            b"CLIENT_ERROR incomplete request: waited 0.3 s for "
            b"4 more bytes of a 6-byte set subscribe data block\r\n"
        )
        assert waiting.closed()
    finally:
        running.close()


def test_a_reply_held_in_a_pipelined_run_longer_than_a_batch_keeps_every_reply_in_order(
    running: InLoop,
) -> None:
    """A read carries out BATCH requests a turn, the rest kept in the parser: a reply
    held in the third batch stops the run there, and it goes on once the reply is in."""
    client = Wire(running.server.port)
    horizon = client.horizon()
    before, after = 2 * BATCH + 100, 3 * BATCH
    retro = b"set retro_subscribe 0 0 %d\r\n%b\r\nnews\r\n" % (len(horizon) + 6, horizon)
    client.send(b"version\r\n" * before + retro + b"get horizon\r\n" * after)
    versions = [client.line() for _ in range(before)]
    assert all(v.startswith(b"VERSION ") for v in versions)
    assert not client.closed(timeout=0.3)  # then nothing, and still open: held
    assert client.buffer == b""
    running.loop.call_soon_threadsafe(running.broker.settle)
    assert client.line() == b"STORED\r\n"
    for _ in range(after):
        assert client.line().startswith(b"VALUE horizon 0 ")
        client.line()
        assert client.line() == b"END\r\n"
    client.send(b"version\r\n")  # and reading goes on
    assert client.line().startswith(b"VERSION ")


class Recording:
    """An authorizer that refuses the topic "secret" and records whom it was asked about."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, object]] = []

    def check_subscribe(self, identity: Any, topics: tuple[bytes, ...]) -> Forbidden | None:
        self.asked.append((identity.via, identity.peer, identity.claims))
        return Forbidden("may not subscribe to secret") if b"secret" in topics else None

    def check_publish(self, identity: Any, entries: Any) -> Forbidden | None:
        self.asked.append((identity.via, identity.peer, identity.claims))
        if any(b"secret" in topics for topics, _ in entries):
            return Forbidden("may not publish to secret")
        return None


def test_the_authorizer_sees_each_tcp_client_and_checks_each_publish_of_a_run() -> None:
    authorizer = Recording()
    running = InLoop(authorizer)
    try:
        client, reader = Wire(running.server.port), Wire(running.server.port)
        host, port = client.sock.getsockname()[:2]
        reader.subscribe("open")
        client.set("subscribe", b"secret")
        assert client.line() == b"CLIENT_ERROR may not subscribe to secret\r\n"
        # a run of publishes: with an authorizer, each is checked and answered alone
        blocks = [b"MESSAGE open 1\r\n1", b"MESSAGE secret 1\r\n2", b"MESSAGE open 1\r\n3"]
        client.send(b"".join(b"set publish 0 0 %d\r\n%b\r\n" % (len(b), b) for b in blocks))
        assert [client.line() for _ in range(3)] == [
            b"STORED\r\n",
            b"CLIENT_ERROR may not publish to secret\r\n",
            b"STORED\r\n",
        ]
        assert reader.messages() == [(b"open", b"1"), (b"open", b"3")]
        assert ("tcp", f"{host}:{port}", None) in authorizer.asked
        assert len([a for a in authorizer.asked if a[1] == f"{host}:{port}"]) == 4
    finally:
        running.close()
