"""The Python clients against real servers: every call, and no silent loss."""

from __future__ import annotations

import asyncio
import time

import pytest

from kraken.client import (
    AsyncClient,
    BadTopic,
    Client,
    ClientError,
    ConnectionLost,
    ErrorReply,
    Message,
    RegistrationTooOld,
    StateLost,
)
from kraken_testing import DEADLINE, ServerProcess, running_server


@pytest.fixture(scope="module")
def server():
    with running_server() as process:
        yield process


@pytest.fixture
def address(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"


def payloads(messages: list[Message]) -> list[bytes]:
    return [m.payload for m in messages]


def test_subscribe_publish_receive(address):
    with Client(address) as sub, Client(address) as pub:
        sub.subscribe(["c1", "c2"])
        pub.publish(["c2", "other", "c1"], "text is UTF-8: é")
        pub.publish("c1", b"\x00\r\n\xff binary")
        assert sub.receive_messages() == [
            Message((b"c2", b"c1"), "text is UTF-8: é".encode()),
            Message((b"c1",), b"\x00\r\n\xff binary"),
        ]
        assert sub.receive_messages() == []
        assert pub.receive_messages() == []  # its own messages never come back


def test_publish_many_sends_one_request_and_keeps_order(address):
    with Client(address) as sub, Client(address) as pub:
        sub.subscribe("pm")
        pub.publish_many([("pm", str(i)) for i in range(100)])
        assert payloads(sub.receive_messages()) == [str(i).encode() for i in range(100)]


def test_unsubscribe(address):
    with Client(address) as sub, Client(address) as pub:
        sub.subscribe(["u1", "u2"])
        sub.unsubscribe("u1")
        pub.publish("u1", "gone")
        pub.publish("u2", "kept")
        assert payloads(sub.receive_messages()) == [b"kept"]


def test_register_makes_the_next_subscribe_retroactive(address):
    with Client(address) as sub, Client(address) as pub:
        sub.register()
        pub.publish("reg", "after register")
        sub.subscribe("reg")
        assert payloads(sub.receive_messages()) == [b"after register"]


def test_retro_subscribe_and_horizon(address):
    with Client(address) as first, Client(address) as pub:
        first.receive_messages()
        horizon = first.horizon()
        pub.publish("rs", "since horizon")
        with Client(address) as late:
            late.retro_subscribe(horizon, "rs")
            assert payloads(late.receive_messages()) == [b"since horizon"]
        with Client(address) as late:
            late.retro_subscribe(float(horizon) - 0.000001, ["rs"])
            assert payloads(late.receive_messages()) == [b"since horizon"]


def test_retro_subscribe_from_before_the_server_started_is_registration_too_old(address):
    with Client(address) as client, Client(address) as pub:
        with pytest.raises(RegistrationTooOld):
            client.retro_subscribe(1_000_000_000, "old")
        pub.publish("old", "live")  # the subscription took effect anyway
        assert payloads(client.receive_messages()) == [b"live"]


def test_error_replies_are_typed(address):
    with Client(address) as client:
        with pytest.raises(ErrorReply, match="CLIENT_ERROR"):
            client.retro_subscribe(99_999_999_999, "far-ahead")  # a horizon in the year 5138
        assert client.version()


@pytest.mark.parametrize(
    ("topics", "error", "reason"),
    [
        ([], ClientError, "no topics given"),
        ("", BadTopic, "empty"),
        ([""], BadTopic, "empty"),
        (["ok", "two words"], BadTopic, "space or a control byte"),  # the wire would split it
        ("bad\ttopic", BadTopic, "space or a control byte"),
        ("x" * 251, BadTopic, "251 bytes, more than 250"),
    ],
)
def test_bad_topics_are_refused_before_anything_is_sent(address, topics, error, reason):
    with Client(address) as client, Client(address) as watcher:
        watcher.subscribe(["ok", "two", "words"])
        for call in (
            lambda: client.publish(topics, "x"),
            lambda: client.publish_many([("ok", "fine"), (topics, "x")]),
            lambda: client.subscribe(topics),
            lambda: client.unsubscribe(topics),
        ):
            with pytest.raises(error, match=reason):
                call()
        client.publish(["ok"], "after")
        # nothing of the refused calls reached the server, even the good entry of the batch
        assert [m.payload for m in watcher.receive_messages()] == [b"after"]


def test_listen_yields_messages_as_they_arrive(address):
    with Client(address) as sub, Client(address) as pub:
        sub.subscribe("listen")
        pub.publish_many([("listen", "1"), ("listen", "2")])
        listener = sub.listen(poll_interval=0.01)
        assert [next(listener).payload, next(listener).payload] == [b"1", b"2"]


class EmptyPollSignal(AsyncClient):
    """An AsyncClient that tells when one of its polls came back empty."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.polled_empty = asyncio.Event()

    async def receive_messages(self) -> list[Message]:
        messages = await super().receive_messages()
        if not messages:
            self.polled_empty.set()
        return messages


def test_async_client_has_the_same_calls(address):
    async def scenario(sub: EmptyPollSignal) -> list[bytes]:
        async with sub, AsyncClient(address) as pub:
            await sub.subscribe(["a1", "a2"])
            await pub.publish("a1", "one")
            await pub.publish_many([("a2", b"two"), (["a1", "a2"], "three")])
            got = payloads(await sub.receive_messages())
            await sub.unsubscribe("a1")
            await pub.publish("a1", "dropped")
            await sub.register()
            await pub.publish("a3", "retro")
            await sub.subscribe("a3")
            horizon = await sub.horizon()
            assert float(horizon) <= time.time() + 1
            got += payloads(await sub.receive_messages())
            assert not sub.polled_empty.is_set()
            async for message in sub.listen(poll_interval=0.01):
                got.append(message.payload)
                break
            return got

    async def publish_once_listen_waits(sub: EmptyPollSignal) -> None:
        # listen() polled and found nothing: the message below arrives while it waits
        await asyncio.wait_for(sub.polled_empty.wait(), DEADLINE)
        async with AsyncClient(address) as pub:
            await pub.publish("a2", "listened")

    async def both() -> list[bytes]:
        sub = EmptyPollSignal(address)
        got, _ = await asyncio.gather(scenario(sub), publish_once_listen_waits(sub))
        return got

    assert asyncio.run(both()) == [b"one", b"two", b"three", b"retro", b"listened"]


def test_unreachable_server_raises_connection_lost_after_a_bounded_wait():
    with running_server() as gone:
        address = f"127.0.0.1:{gone.port}"
    client = Client(address, reconnect_timeout=0.5, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionLost):
        client.receive_messages()
    assert time.monotonic() - started < 5


def test_state_lost_raises_from_receive_when_no_callback_is_set():
    with running_server() as first:
        client = Client(f"127.0.0.1:{first.port}", reconnect_timeout=10)
        client.subscribe("restart")
        client.receive_messages()
        port = first.port
    with running_server(port=port):
        with pytest.raises(StateLost) as lost:
            client.receive_messages()
        assert lost.value.topics == frozenset({b"restart"})
        assert client.receive_messages() == []  # the next call goes on
    client.close()


def test_a_rejected_subscribe_is_not_replayed_after_a_reconnect(address):
    with Client(address) as sub, Client(address) as pub:
        sub.subscribe("fine")
        with pytest.raises(BadTopic, match="bad topic"):
            sub.subscribe(["also-fine", "bad\x01"])
        sub.close()  # the next call reconnects and resumes the subscriptions it has
        pub.publish("fine", "kept")
        assert payloads(sub.receive_messages()) == [b"kept"]


def test_state_lost_counts_its_topics_in_plain_english():
    assert str(StateLost("s:1", frozenset({b"a"}))) == "messages on 1 topic from s:1 were lost"
    assert (
        str(StateLost("s:1", frozenset({b"a", b"b"}))) == "messages on 2 topics from s:1 were lost"
    )
