"""The sans-I/O session: requests in, broker calls, replies out, with no socket.

Each test drives ``Session`` directly over a real ``LocalBroker``; where a
broker answer must come later, ``Deferring`` wraps it and settles chosen answers
when the test says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from kraken.brokers import LocalBroker
from kraken.errors import Forbidden
from kraken.routing import ClientQueue, Router
from kraken.sessions import (
    ClientIdentity,
    CloseReason,
    Delivered,
    EventDialect,
    Failed,
    Identity,
    MemcachedDialect,
    Session,
    SessionContext,
)
from kraken.types import Entry, Topics
from kraken.wire import RequestParser
from kraken.wire.replies import NotFound, Stored, VersionReply
from kraken_testing import Deferring

START = 1_764_300_000_000_000  # Unix microseconds


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        self.now += 1
        return self.now


def local_broker(max_messages: int = 100, max_bytes: int = 1 << 20) -> LocalBroker:
    return LocalBroker(Router(START, num_shards=2, messages_per_shard=8), max_messages, max_bytes)


class Denying:
    """An authorizer that refuses the topics it is given, and records what it was asked."""

    def __init__(self, *topics: bytes) -> None:
        self.denied = set(topics)
        self.asked: list[tuple[str, Identity, object]] = []

    def check_subscribe(self, identity: Identity, topics: Topics) -> Forbidden | None:
        self.asked.append(("subscribe", identity, topics))
        for topic in topics:
            if topic in self.denied:
                return Forbidden(f"may not subscribe to {topic.decode()}")
        return None

    def check_publish(self, identity: Identity, entries: Sequence[Entry]) -> Forbidden | None:
        self.asked.append(("publish", identity, entries))
        for topics, _ in entries:
            for topic in topics:
                if topic in self.denied:
                    return Forbidden(f"may not publish to {topic.decode()}")
        return None


class Client:
    """A session with the memcached parser in front: what the TCP pump does, minus I/O."""

    def __init__(self, broker: Any, clock: Clock, dialect: Any = None, **options: Any) -> None:
        self.woken = 0
        self.pushed = 0
        on_push = options.pop("on_push", None)
        context = SessionContext(
            broker, dialect or MemcachedDialect("test"), clock=clock, **options
        )
        self.session: Session[Any] = Session(
            context, ClientIdentity("test", "127.0.0.1:1"), on_wake=self._wake, on_push=on_push
        )
        self.parser = RequestParser()

    def _wake(self) -> None:
        self.woken += 1

    def send(self, data: bytes) -> list[Any]:
        self.session.receive(self.parser.feed(data))
        return self.session.data_to_send()


def set_(command: str, block: bytes, noreply: bool = False) -> bytes:
    tail = b" noreply" if noreply else b""
    return b"set %s 0 0 %d%s\r\n%s\r\n" % (command.encode(), len(block), tail, block)


def publish(topics: str, payload: bytes) -> bytes:
    return set_("publish", b"MESSAGE %s %d\r\n%s" % (topics.encode(), len(payload), payload))


POLL = b"get messages\r\n"


# -- replies -------------------------------------------------------------------------


def test_a_pipeline_gets_its_replies_in_order_as_memcached_bytes() -> None:
    broker, clock = local_broker(), Clock()
    alice, bob = Client(broker, clock), Client(broker, clock)
    assert alice.send(set_("subscribe", b"news")) == [b"STORED\r\n"]
    replies = bob.send(publish("news", b"hi") + b"version\r\n" + publish("news", b"again"))
    assert replies == [b"STORED\r\n", b"VERSION test\r\n", b"STORED\r\n"]
    assert alice.send(POLL) == [
        b"VALUE messages 0 41\r\nMESSAGE news 2\r\nhi\r\nMESSAGE news 5\r\nagain\r\nEND\r\n"
    ]
    assert alice.send(POLL) == [b"END\r\n"]


def test_the_event_dialect_gives_reply_values() -> None:
    broker, clock = local_broker(), Clock()
    dialect = EventDialect("test")
    alice, bob = Client(broker, clock, dialect), Client(broker, clock, dialect)
    assert alice.send(set_("subscribe", b"a b")) == [Stored()]
    bob.send(publish("a c", b"1"))
    assert alice.send(POLL) == [Delivered((((b"a",), b"1"),))]
    (answer,) = alice.send(b"get messages horizon\r\n")
    assert isinstance(answer, Delivered) and answer.messages == ()
    assert answer.horizon is not None and answer.horizon > START
    old = set_("retro_subscribe", b"1000000000\r\nb")
    assert alice.send(old + b"version\r\nbogus\r\n") == [
        NotFound(),
        VersionReply("test"),
        Failed("unknown_command", b"ERROR"),
    ]


def test_a_lone_poll_answers_as_get_messages_does() -> None:
    broker, clock = local_broker(), Clock()
    alice, bob = Client(broker, clock), Client(broker, clock)
    alice.send(set_("subscribe", b"x"))
    bob.send(publish("x", b"1"))
    expected = alice.send(POLL)
    bob.send(publish("x", b"1"))
    assert alice.session.reading
    assert [alice.session.poll(clock.now)] == expected
    assert alice.session.data_to_send() == []
    assert alice.session.last_poll == clock.now


def test_error_replies_are_counted_by_kind_not_by_text() -> None:
    errors: Counter[str] = Counter()
    client = Client(local_broker(), Clock(), errors=errors)
    for i in range(50):
        client.send(set_(f"verb{i}", b"") + b"nope%d\r\n" % i)
    client.send(set_("subscribe", b"bad\x01"))
    assert errors == {"unknown_set_command": 50, "unknown_command": 50, "bad_topic": 1}


def test_a_run_of_publishes_is_one_broker_call_with_a_reply_for_each() -> None:
    clock = Clock()
    broker = Deferring(local_broker(), ["publish"])
    alice, bob = Client(broker, clock), Client(broker, clock)
    alice.send(set_("subscribe", b"a b"))
    run = (
        publish("a", b"1")
        + set_("publish", b"MESSAGE b 1\r\n2", noreply=True)
        + publish("a b", b"3")
        + b"version\r\n"
        + publish("b", b"4")
    )
    assert bob.send(run) == []
    assert len(broker.waiting) == 1  # the three publishes before version, at once
    broker.settle()  # then version, and the last publish: a call of its own
    assert bob.session.data_to_send() == [b"STORED\r\n", b"STORED\r\n", b"VERSION test\r\n"]
    assert len(broker.waiting) == 1
    broker.settle()
    assert bob.session.data_to_send() == [b"STORED\r\n"]
    (answer,) = alice.send(POLL)
    assert answer.split(b"\r\n")[1::2] == [
        b"MESSAGE a 1",
        b"MESSAGE b 1",
        b"MESSAGE a b 1",
        b"MESSAGE b 1",
        b"END",
    ]
    assert answer.split(b"\r\n")[2:-2:2] == [b"1", b"2", b"3", b"4"]


def test_a_bad_publish_inside_a_run_gets_its_error_in_place_and_loses_nothing() -> None:
    broker, clock = local_broker(), Clock()
    alice, bob = Client(broker, clock), Client(broker, clock)
    alice.send(set_("subscribe", b"a"))
    run = publish("a", b"1") + set_("publish", b"MESSAGE a 9\r\nshort") + publish("a", b"2")
    assert bob.send(run) == [
        b"STORED\r\n",
        b"CLIENT_ERROR bad publish block\r\n",
        b"STORED\r\n",
    ]
    (answer,) = alice.send(POLL)
    assert answer.split(b"\r\n")[2:-2:2] == [b"1", b"2"]


# -- holding a reply open ---------------------------------------------------------------


def test_a_pending_answer_holds_later_requests_until_it_settles() -> None:
    clock = Clock()
    inner = local_broker()
    broker = Deferring(inner, ["retro_subscribe"])
    alice, bob = Client(broker, clock), Client(broker, clock)
    bob.send(set_("subscribe", b"later"))
    retro = set_("retro_subscribe", b"%d\r\nnews" % (START // 1_000_000 + 1))
    replies = alice.send(b"version\r\n" + retro + publish("later", b"held") + b"version\r\n")
    assert replies == [b"VERSION test\r\n"]  # what came before the pending answer
    assert not alice.session.reading  # the transport stops reading meanwhile
    assert alice.send(b"version\r\n") == []  # more requests wait behind it
    assert bob.send(POLL) == [b"END\r\n"]  # the publish after it has not happened yet
    assert alice.woken == 0

    broker.settle()
    assert alice.woken == 1  # the transport is told to send
    assert alice.session.reading
    assert alice.session.data_to_send() == [
        b"STORED\r\n",
        b"STORED\r\n",
        b"VERSION test\r\n",
        b"VERSION test\r\n",
    ]
    assert bob.send(POLL) == [b"VALUE messages 0 21\r\nMESSAGE later 4\r\nheld\r\nEND\r\n"]


def test_a_pending_answer_that_fails_gets_server_error_and_the_session_goes_on() -> None:
    broker = Deferring(local_broker(), ["subscribe"])
    client = Client(broker, Clock())
    assert client.send(set_("subscribe", b"a") + b"version\r\n") == []
    broker.fail("upstream unreachable")
    assert client.session.data_to_send() == [
        b"SERVER_ERROR upstream unreachable\r\n",
        b"VERSION test\r\n",
    ]
    assert client.session.close_reason is None
    assert client.session.context.errors == {"server_error": 1}


def test_a_deferred_poll_keeps_its_place_in_line() -> None:
    broker = Deferring(local_broker(), ["poll"])
    clock = Clock()
    alice, bob = Client(broker, clock), Client(broker, clock)
    alice.send(set_("subscribe", b"a"))
    bob.send(publish("a", b"x"))
    assert alice.send(b"get messages horizon\r\nversion\r\n") == []
    broker.settle()
    first, second = alice.session.data_to_send()
    assert first.startswith(b"VALUE messages 0 14\r\nMESSAGE a 1\r\nx\r\nVALUE horizon 0 ")
    assert second == b"VERSION test\r\n"


# -- authorization --------------------------------------------------------------------


def test_the_authorizer_is_asked_before_every_subscribe_and_publish() -> None:
    broker, clock = local_broker(), Clock()
    authorizer = Denying(b"secret")
    mallory = Client(broker, clock, authorizer=authorizer)
    alice = Client(broker, clock)
    alice.send(set_("subscribe", b"secret open"))
    assert mallory.send(set_("subscribe", b"open secret")) == [
        b"CLIENT_ERROR may not subscribe to secret\r\n"
    ]
    retro = set_("retro_subscribe", b"%d\r\nsecret" % (START // 1_000_000))
    assert mallory.send(retro) == [b"CLIENT_ERROR may not subscribe to secret\r\n"]
    block = b"MESSAGE open 1\r\n1\r\nMESSAGE secret 1\r\n2"
    assert mallory.send(set_("publish", block)) == [b"CLIENT_ERROR may not publish to secret\r\n"]
    assert alice.send(POLL) == [b"END\r\n"]  # all or nothing: not even the open entry
    assert mallory.session.queue.subscriptions == {}  # nothing of the refused subscribes
    assert mallory.send(set_("subscribe", b"open")) == [b"STORED\r\n"]
    assert [kind for kind, _, _ in authorizer.asked] == [
        "subscribe",
        "subscribe",
        "publish",
        "subscribe",
    ]
    assert all(identity.via == "test" for _, identity, _ in authorizer.asked)
    assert mallory.session.context.errors == {"forbidden": 3}


# -- per-client limits ----------------------------------------------------------------


def topics(prefix: str, n: int) -> bytes:
    return b" ".join(b"%s%d" % (prefix.encode(), i) for i in range(n))


def test_a_subscribe_past_max_subscriptions_is_refused_whole() -> None:
    errors: Counter[str] = Counter()
    broker, clock = local_broker(), Clock()
    client = Client(broker, clock, errors=errors, max_subscriptions=10)
    assert client.send(set_("subscribe", topics("t", 4))) == [b"STORED\r\n"]
    assert client.send(set_("subscribe", topics("u", 7))) == [
        b"CLIENT_ERROR too many subscriptions: 4 held + 7 new exceeds "
        b"max_subscriptions_per_client 10\r\n"
    ]
    assert len(client.session.queue.subscriptions) == 4  # none of the 7
    assert broker.stats().subscriptions == 4
    retro = set_("retro_subscribe", b"%d\r\n%s" % (START // 1_000_000, topics("v", 7)))
    assert client.send(retro)[0].startswith(b"CLIENT_ERROR too many subscriptions: 4 held + 7")
    assert client.send(set_("subscribe", topics("u", 7), noreply=True)) == []
    assert errors == {"too_many_subscriptions": 3}
    # up to the limit exactly; topics held already, or named twice, count once
    assert client.send(set_("subscribe", topics("t", 4) + b" u0 u1 u2 u3 u4 u5 u5 u5")) == [
        b"STORED\r\n"
    ]
    assert len(client.session.queue.subscriptions) == 10
    assert client.send(set_("subscribe", b"t0 u5")) == [b"STORED\r\n"]
    assert client.send(set_("subscribe", b"t0 one-more"))[0].startswith(
        b"CLIENT_ERROR too many subscriptions: 10 held + 1 new"
    )
    # an unsubscribe makes room
    assert client.send(set_("unsubscribe", b"t0") + set_("subscribe", b"one-more")) == [
        b"STORED\r\n",
        b"STORED\r\n",
    ]


def test_a_refused_subscribe_leaves_a_pending_register_horizon_for_the_next() -> None:
    broker, clock = local_broker(), Clock()
    alice = Client(broker, clock, max_subscriptions=2)
    bob = Client(broker, clock)
    alice.send(set_("register", b""))
    bob.send(publish("a", b"since the register"))
    assert alice.send(set_("subscribe", b"a b c"))[0].startswith(b"CLIENT_ERROR too many")
    assert alice.session.queue.horizon is not None
    assert alice.send(set_("subscribe", b"a b") + POLL) == [
        b"STORED\r\n",
        b"VALUE messages 0 32\r\nMESSAGE a 18\r\nsince the register\r\nEND\r\n",
    ]


def test_a_publish_naming_too_many_topics_is_refused_whole_in_its_place_in_a_run() -> None:
    errors: Counter[str] = Counter()
    broker, clock = local_broker(), Clock()
    alice = Client(broker, clock)
    bob = Client(broker, clock, errors=errors, max_topics_per_message=3)
    alice.send(set_("subscribe", b"a b c d"))
    wide = set_("publish", b"MESSAGE a 1\r\n2\r\nMESSAGE a b c d 1\r\n3")  # 2nd names 4
    run = publish("a b c", b"1") + wide + publish("b", b"4") + wide + wide + publish("c", b"5")
    too_many = (
        b"CLIENT_ERROR too many topics: 4 in one message exceeds max_topics_per_message 3\r\n"
    )
    assert bob.send(run) == [
        b"STORED\r\n",
        too_many,
        b"STORED\r\n",
        too_many,
        too_many,
        b"STORED\r\n",
    ]
    (answer,) = alice.send(POLL)
    assert answer.split(b"\r\n")[2:-2:2] == [b"1", b"4", b"5"]  # not even the good entry
    assert bob.send(set_("publish", b"MESSAGE a b c d 1\r\n3", noreply=True)) == []
    assert alice.send(POLL) == [b"END\r\n"]
    assert errors == {"too_many_topics": 4}


def test_the_topic_limit_holds_with_an_authorizer_too() -> None:
    broker, clock = local_broker(), Clock()
    authorizer = Denying()
    alice = Client(broker, clock)
    bob = Client(broker, clock, authorizer=authorizer, max_topics_per_message=2)
    alice.send(set_("subscribe", b"a"))
    replies = bob.send(publish("a b c", b"1") + publish("a b", b"2"))
    assert replies[0].startswith(b"CLIENT_ERROR too many topics: 3 in one message")
    assert replies[1] == b"STORED\r\n"
    assert [kind for kind, _, _ in authorizer.asked] == ["publish"]  # asked of the good one
    assert alice.send(POLL) == [b"VALUE messages 0 14\r\nMESSAGE a 1\r\n2\r\nEND\r\n"]


# -- push and closes ---------------------------------------------------------------------


def test_push_ready_fires_when_the_queue_becomes_non_empty() -> None:
    broker, clock = local_broker(), Clock()
    pushes: list[int] = []
    pusher = Client(broker, clock, on_push=lambda: pushes.append(1))
    publisher = Client(broker, clock)
    pusher.send(set_("subscribe", b"a b c"))
    publisher.send(publish("a", b"1") + publish("a b", b"2") + publish("a b c d", b"3"))
    assert len(pushes) == 1  # once, on the first delivery
    assert len(pusher.session.take_messages()) == 3
    publisher.send(publish("c", b"4"))
    assert len(pushes) == 2  # again once drained
    pusher.session.take_messages()
    publisher.send(publish("e", b"5"))  # before the pusher takes topic e
    retro = set_("retro_subscribe", b"%d\r\ne" % (START // 1_000_000))
    pusher.send(retro)
    assert len(pushes) == 3  # retroactive deliveries too


def test_a_slow_consumer_is_closed_from_another_clients_publish() -> None:
    broker, clock = local_broker(max_messages=2), Clock()
    slow, publisher = Client(broker, clock), Client(broker, clock)
    slow.send(set_("subscribe", b"a"))
    publisher.send(publish("a", b"1") + publish("a", b"2"))
    assert slow.woken == 0
    publisher.send(publish("a", b"3"))
    assert slow.woken == 1
    assert slow.session.close_reason is CloseReason.SLOW_CONSUMER
    assert slow.session.data_to_send() == [b"SERVER_ERROR slow consumer\r\n"]
    assert slow.send(b"version\r\n") == []  # a closed session answers nothing more


def test_a_retro_subscribe_that_overflows_its_own_queue_gets_no_reply_but_the_close() -> None:
    broker, clock = local_broker(max_messages=2), Clock()
    client, publisher = Client(broker, clock), Client(broker, clock)
    publisher.send(publish("a", b"1") + publish("a", b"2") + publish("a", b"3"))
    retro = set_("retro_subscribe", b"%d\r\na" % (START // 1_000_000))
    assert client.send(b"version\r\n" + retro + b"version\r\n") == [
        b"VERSION test\r\n",
        b"SERVER_ERROR slow consumer\r\n",
    ]
    assert client.session.close_reason is CloseReason.SLOW_CONSUMER
    assert client.woken == 0  # inside receive: the transport sends after it


@pytest.mark.parametrize(
    ("data", "replies", "reason"),
    [
        (b"version\r\nquit\r\nversion\r\n", [b"VERSION test\r\n"], CloseReason.CLIENT_QUIT),
        (
            b"version\r\nset subscribe 0 0 x\r\nversion\r\n",
            [b"VERSION test\r\n", b"CLIENT_ERROR bad data length\r\n"],
            CloseReason.FRAMING_ERROR,
        ),
    ],
)
def test_a_request_that_closes_stops_the_pipeline(
    data: bytes, replies: list[bytes], reason: CloseReason
) -> None:
    client = Client(local_broker(), Clock())
    assert client.send(data) == replies
    assert client.session.close_reason is reason


def test_a_failing_broker_call_closes_that_session_with_internal_error() -> None:
    broker, clock = local_broker(), Clock()
    client, other = Client(broker, clock), Client(broker, clock)

    def boom(queue: ClientQueue, topics: Topics, now: int) -> bool:
        raise RuntimeError("injected fault")

    broker.subscribe = boom  # type: ignore[method-assign]
    assert client.send(b"version\r\n" + set_("subscribe", b"a") + b"version\r\n") == [
        b"VERSION test\r\n",
        b"SERVER_ERROR internal error\r\n",
    ]
    assert client.session.close_reason is CloseReason.INTERNAL_ERROR
    assert other.send(b"version\r\n") == [b"VERSION test\r\n"]


def test_a_disconnected_session_leaves_the_broker_and_keeps_its_first_reason() -> None:
    broker, clock = local_broker(), Clock()
    client = Client(broker, clock)
    client.send(set_("subscribe", b"a b"))
    assert broker.stats().topics == 2
    client.send(b"quit\r\n")
    assert client.session.disconnected(CloseReason.CONNECTION_RESET) is CloseReason.CLIENT_QUIT
    assert broker.stats().topics == 0
    assert broker.stats().clients == 0


# -- push mode (set push) ----------------------------------------------------------------


def test_set_push_makes_the_queue_wake_the_transport_and_push_takes_it_with_the_horizon() -> None:
    broker, clock = local_broker(), Clock()
    pusher, publisher = Client(broker, clock), Client(broker, clock)
    pusher.send(set_("subscribe", b"a b"))
    publisher.send(publish("a", b"1"))  # before push mode: waits for a poll, or the push
    assert pusher.session.push_due is False and pusher.woken == 0
    assert pusher.send(set_("push", b"")) == [b"STORED\r\n"]
    assert pusher.session.pushing and pusher.session.push_due  # what was queued before
    pusher.session.push(clock())
    (frame,) = pusher.session.data_to_send()
    head, horizon = frame.split(b"\r\nVALUE horizon 0 17\r\n")
    assert head == b"VALUE push 0 14\r\nMESSAGE a 1\r\n1"
    assert horizon.endswith(b"\r\nEND\r\n")
    assert not pusher.session.push_due and not pusher.session.queue.entries
    # the next publishes wake the transport once, and one push carries them all
    publisher.send(publish("a", b"2") + publish("b a", b"3") + publish("c", b"4"))
    assert pusher.woken == 1 and pusher.session.push_due
    pusher.session.push(clock())
    (frame,) = pusher.session.data_to_send()
    assert frame.startswith(b"VALUE push 0 32\r\nMESSAGE a 1\r\n2\r\nMESSAGE b a 1\r\n3\r\n")
    pusher.session.push(clock())  # nothing queued: nothing sent
    assert pusher.session.data_to_send() == []


def test_a_pushes_horizon_resumes_exactly_where_it_left_off() -> None:
    broker, clock = local_broker(), Clock()
    pusher, publisher = Client(broker, clock), Client(broker, clock)
    pusher.send(set_("subscribe", b"a") + set_("push", b"", noreply=True))
    publisher.send(publish("a", b"1"))
    pusher.session.push(clock())
    (frame,) = pusher.session.data_to_send()
    horizon = frame.split(b"VALUE horizon 0 17\r\n")[1][:17]
    publisher.send(publish("a", b"2") + publish("a", b"3"))
    resumed = Client(broker, clock)  # the connection was lost: a new one, from the horizon
    assert resumed.send(set_("retro_subscribe", horizon + b"\r\na")) == [b"STORED\r\n"]
    assert resumed.send(POLL) == [
        b"VALUE messages 0 30\r\nMESSAGE a 1\r\n2\r\nMESSAGE a 1\r\n3\r\nEND\r\n"
    ]


def test_a_push_that_waits_for_the_broker_is_the_only_one_asked_until_it_is_answered() -> None:
    inner, clock = local_broker(), Clock()
    broker = Deferring(inner, ["poll"])
    pusher, publisher = Client(broker, clock), Client(broker, clock)
    pusher.send(set_("subscribe", b"a") + set_("push", b""))
    publisher.send(publish("a", b"1"))
    pusher.session.push(clock())  # asked: the answer comes later
    assert pusher.session.data_to_send() == []
    pusher.session.push_due = True  # as if woken again meanwhile
    pusher.session.push(clock())  # not asked twice: pushes leave in order
    assert len(broker.waiting) == 1 and pusher.session.push_due
    publisher.send(publish("a", b"2"))
    woken = pusher.woken
    broker.settle()  # the poll is carried out now: it takes both
    assert pusher.woken == woken + 1
    (frame,) = pusher.session.data_to_send()
    assert b"MESSAGE a 1\r\n1\r\nMESSAGE a 1\r\n2\r\nVALUE horizon" in frame
    pusher.session.push(clock())  # the one still due finds nothing
    assert broker.waiting == [] and pusher.session.data_to_send() == []


def test_the_event_dialect_pushes_deliveries_with_their_horizon() -> None:
    broker, clock = local_broker(), Clock()
    dialect = EventDialect("test")
    pusher, publisher = Client(broker, clock, dialect), Client(broker, clock, dialect)
    assert pusher.send(set_("subscribe", b"a") + set_("push", b"")) == [Stored(), Stored()]
    publisher.send(publish("a", b"1"))
    pusher.session.push(clock())
    (pushed,) = pusher.session.data_to_send()
    assert isinstance(pushed, Delivered) and pushed.messages == (((b"a",), b"1"),)
    assert pushed.horizon is not None and pushed.horizon > START


def test_push_with_stamps_gives_each_message_its_stamp_in_publish_order() -> None:
    broker, clock = local_broker(), Clock()
    pusher, publisher = Client(broker, clock), Client(broker, clock)
    pusher.send(set_("subscribe", b"a b") + set_("push", b"stamps"))
    publisher.send(publish("a", b"1") + publish("b c", b"2"))
    pusher.session.push(clock())
    (frame,) = pusher.session.data_to_send()
    _, after_entries = frame.split(b"\r\nVALUE stamps 0 35\r\n")
    listed, rest = after_entries.split(b"\r\nVALUE horizon 0 17\r\n")
    first, second = (int(s.replace(b".", b"")) for s in listed.split(b" "))
    horizon = int(rest[:17].replace(b".", b""))
    assert START < first < second <= horizon
    # a later set push sets the options anew
    pusher.send(set_("push", b""))
    publisher.send(publish("a", b"3"))
    pusher.session.push(clock())
    (frame,) = pusher.session.data_to_send()
    assert b"VALUE stamps" not in frame


def test_a_run_of_publishes_that_fails_gets_one_error_per_publish_and_none_for_noreply() -> None:
    # review of the proxy: a run of 3 publishes whose broker call failed got one
    # SERVER_ERROR for the 3, so a pipelining client paired the next reply wrongly
    inner, clock = local_broker(), Clock()
    broker = Deferring(inner, ["publish"])
    client = Client(broker, clock)
    run = publish("a", b"1") + publish("a", b"2") + set_("publish", b"MESSAGE a 1\r\n3", True)
    assert client.send(run + publish("a", b"4") + b"version\r\n") == []  # held
    broker.fail("upstream unreachable")
    error = b"SERVER_ERROR upstream unreachable\r\n"
    assert client.session.data_to_send() == [error, error, error, b"VERSION test\r\n"]
    assert client.session.context.errors["server_error"] == 3
    # a lone noreply publish that fails: nothing, as for any error that keeps the connection
    client.send(set_("publish", b"MESSAGE a 1\r\n5", True) + b"version\r\n")
    broker.fail("upstream unreachable")
    assert client.session.data_to_send() == [b"VERSION test\r\n"]
