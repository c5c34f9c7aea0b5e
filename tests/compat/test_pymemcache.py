"""pymemcache, a stock Python memcached client, talks to Kraken unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheUnknownError

from kraken_testing import ServerProcess, parse_block, running_server


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server() as process:
        yield process


@pytest.fixture
def clients(server: ServerProcess) -> Iterator[tuple[Client, Client]]:
    pair = (
        Client(("127.0.0.1", server.port), default_noreply=False, timeout=10),
        Client(("127.0.0.1", server.port), default_noreply=False, timeout=10),
    )
    yield pair
    for client in pair:
        client.close()


def test_pymemcache_subscribes_publishes_and_polls(clients):
    subscriber, publisher = clients
    assert subscriber.set("subscribe", b"pm1 pm2") is True
    block = b"MESSAGE pm1 5\r\nhello\r\nMESSAGE pm2 pm1 4\r\na\r\nb"
    assert publisher.set("publish", block) is True
    value = subscriber.get("messages")
    assert value == b"MESSAGE pm1 5\r\nhello\r\nMESSAGE pm2 pm1 4\r\na\r\nb"
    assert parse_block(value) == [(b"pm1", b"hello"), (b"pm2 pm1", b"a\r\nb")]
    assert subscriber.get("messages") is None
    assert publisher.get("messages") is None


def test_pymemcache_register_and_retroactive_subscribe(clients):
    subscriber, publisher = clients
    assert subscriber.set("register", b"") is True
    publisher.set("publish", b"MESSAGE pmr 6\r\nbefore")
    assert subscriber.set("subscribe", b"pmr") is True
    assert subscriber.get("messages") == b"MESSAGE pmr 6\r\nbefore"


def test_pymemcache_get_many_reads_messages_and_horizon_together(clients):
    subscriber, publisher = clients
    subscriber.set("subscribe", b"pmh")
    publisher.set("publish", b"MESSAGE pmh 1\r\nx")
    values = subscriber.get_many(["messages", "horizon"])
    assert values["messages"] == b"MESSAGE pmh 1\r\nx"
    horizon = values["horizon"]
    publisher.set("publish", b"MESSAGE pmh 1\r\ny")
    late = Client(("127.0.0.1", subscriber.server[1]), default_noreply=False, timeout=10)
    try:
        assert late.set("retro_subscribe", horizon + b"\r\npmh") is True
        assert late.get("messages") == b"MESSAGE pmh 1\r\ny"
    finally:
        late.close()


def test_pymemcache_unsubscribe_and_noreply_set(clients):
    subscriber, publisher = clients
    subscriber.set("subscribe", b"pmu")
    assert subscriber.set("unsubscribe", b"pmu") is True
    publisher.set("publish", b"MESSAGE pmu 1\r\nx", noreply=True)
    assert subscriber.get("messages") is None
    assert publisher.version().decode().count(".") >= 1


def test_pymemcache_surfaces_not_found_of_a_stale_horizon(clients):
    # pymemcache has no meaning for NOT_FOUND on a set: it raises (and drops its socket)
    subscriber, _ = clients
    with pytest.raises(MemcacheUnknownError, match="NOT_FOUND"):
        subscriber.set("retro_subscribe", b"1000000000\r\npmnf")
