"""The ``Broker`` contract, as a Hypothesis state machine against a reference model.

Clients connect, subscribe, unsubscribe, register, subscribe retroactively,
publish, poll and leave, in any order, while time moves on. After every step the
broker must agree with a model that knows only the contract:

- every message reaches each subscriber exactly once, listing the topics it
  matched in the order the message named them, and never its publisher;
- a poll gives the queue's messages in publish order, with a horizon at or above
  every one of them and below every later message;
- a retroactive subscribe queues every message since its horizon that the client
  has not had, or answers NOT_FOUND; it never leaves a silent gap. A message
  still waiting in the queue, or one that reached it through a topic it has held
  since before the message, is "had";
- a queue that would pass its limit is a slow consumer, told once;
- the interest events and the statistics follow the subscriptions.

The model never reads a stamp to decide what a horizon covers: a horizon seen
after the n-th message covers exactly the first n (the contract of horizons), so
the model keeps positions in the publish order. Every broker of ``HARNESSES``
runs the same machine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from kraken.brokers.base import Answer
from kraken.routing import ClientQueue, Delivery, Message
from kraken.routing.queue import NO_ENTRIES

from .harness import HARNESSES, Harness

TOPICS = (b"a", b"b", b"c", b"d")
MAX_CLIENTS = 4

topic_lists = st.lists(st.sampled_from(TOPICS), min_size=1, max_size=3, unique=True).map(tuple)
client_numbers = st.integers(0, MAX_CLIENTS - 1)
# bytes added to a payload: mostly none; large ones fill a retro buffer bounded in bytes
PADDING = (0, 0, 0, 300, 2000)


@dataclass
class Published:
    topics: tuple[bytes, ...]
    payload: bytes
    publisher: int  # the id of its publisher's queue (a client number is used again)


@dataclass
class Client:
    queue: ClientQueue
    # topic -> position in the publish order from which every message on it has
    # reached this client (a topic held)
    since: dict[bytes, int] = field(default_factory=dict)
    # (position, matched topics) of each message waiting in its queue
    waiting: list[tuple[int, tuple[bytes, ...]]] = field(default_factory=list)
    registered: int | None = None  # the position of a pending register
    overflowed: int = 0  # times the broker called on_overflow


@dataclass(frozen=True)
class Horizon:
    value: int
    position: int  # how many messages had been published when it was seen


def described(delivery: Delivery) -> tuple[bytes, tuple[bytes, ...], int]:
    if isinstance(delivery, Message):
        return delivery.payload, delivery.topics, delivery.stamp
    message, matched = delivery
    return message.payload, matched, message.stamp


class BrokerContract(RuleBasedStateMachine):
    make_harness: Callable[[], Harness]  # set by each test below

    def __init__(self) -> None:
        super().__init__()
        self.harness: Harness = self.make_harness()
        self.broker = self.harness.broker
        self.clients: dict[int, Client] = {}
        self.history: list[Published] = []
        self.horizons: list[Horizon] = []
        self.interest: Counter[bytes] = Counter()  # topic -> the model's subscribers
        self.gained: list[bytes] = []  # as the broker told them, since the last check
        self.lost: list[bytes] = []
        self.model_gained: list[bytes] = []  # as the model expects them
        self.model_lost: list[bytes] = []
        self.stamps: dict[int, int] = {}  # position -> stamp, as polls show them
        self.broker.watch_interest(self)
        # the broker's start is a horizon: everything since is in its history
        self.horizons.append(Horizon(self.harness.started, 0))
        self.last_horizon = self.harness.started

    # -- the interest listener -------------------------------------------------

    def interest_gained(self, topics: tuple[bytes, ...]) -> None:
        self.gained.extend(topics)

    def interest_lost(self, topics: tuple[bytes, ...]) -> None:
        self.lost.extend(topics)

    # -- the model's bookkeeping -----------------------------------------------

    def hold(self, client: Client, topics: tuple[bytes, ...], since: int) -> None:
        for topic in topics:
            if topic not in client.since:
                client.since[topic] = since
                self.interest[topic] += 1
                if self.interest[topic] == 1:
                    self.model_gained.append(topic)
            elif since < client.since[topic]:
                client.since[topic] = since

    def release(self, client: Client, topics: tuple[bytes, ...]) -> None:
        for topic in topics:
            if client.since.pop(topic, None) is not None:
                self.interest[topic] -= 1
                if not self.interest[topic]:
                    del self.interest[topic]
                    self.model_lost.append(topic)

    def queue_up(self, client: Client, new: list[tuple[int, tuple[bytes, ...]]]) -> bool:
        """Queue ``new`` deliveries, in publish order; False when they would pass the
        queue's limit: then the client is a slow consumer and its queue is dropped."""
        if len(client.waiting) + len(new) > self.harness.max_messages:
            client.waiting.clear()
            return False
        client.waiting.extend(new)
        client.waiting.sort()
        return True

    def had(self, client: Client, position: int) -> bool:
        if any(p == position for p, _ in client.waiting):
            return True
        message = self.history[position]
        return any(client.since.get(t, position + 1) <= position for t in message.topics)

    def check_interest(self) -> None:
        assert sorted(self.gained) == sorted(self.model_gained), "first subscribers"
        assert sorted(self.lost) == sorted(self.model_lost), "last subscribers gone"
        for events in (self.gained, self.lost, self.model_gained, self.model_lost):
            events.clear()

    def seen(self, value: int) -> None:
        assert value >= self.last_horizon, "a horizon never decreases"
        self.last_horizon = value
        horizon = Horizon(value, len(self.history))
        assert max(self.stamps.values(), default=0) <= value, "a message before it, at or below"
        self.horizons.append(horizon)

    def stamped(self, position: int, stamp: int) -> None:
        """A message's stamp, as a poll shows it: above every horizon seen before
        the message, at or below every one seen after it."""
        for horizon in self.horizons:
            if horizon.position <= position:
                assert stamp > horizon.value, "a message after a horizon is stamped above it"
            else:
                assert stamp <= horizon.value, "a message before a horizon is at or below it"
        assert self.stamps.setdefault(position, stamp) == stamp

    def pick(self, n: int) -> tuple[int, Client]:
        """The n-th of the connected clients, counting round."""
        numbers = sorted(self.clients)
        number = numbers[n % len(numbers)]
        return number, self.clients[number]

    def drop(self, number: int) -> None:
        """A slow consumer: the broker told it once, and its session closes it."""
        client = self.clients.pop(number)
        assert client.overflowed == 1, f"client {number} is a slow consumer, told once"
        self.broker.disconnect(client.queue)
        self.release(client, tuple(client.since))

    def overflowing(self) -> None:
        for number, client in self.clients.items():
            assert not client.overflowed, f"client {number} is no slow consumer"

    # -- rules -----------------------------------------------------------------

    @initialize(first=topic_lists, second=topic_lists)
    def two_subscribers(self, first: tuple[bytes, ...], second: tuple[bytes, ...]) -> None:
        self.connect()
        self.connect()
        self.subscribe(0, first)
        self.subscribe(1, second)

    @precondition(lambda self: len(self.clients) < MAX_CLIENTS)
    @rule()
    def connect(self) -> None:
        number = min(set(range(MAX_CLIENTS)) - set(self.clients))
        client: Client

        def overflow() -> None:
            client.overflowed += 1

        client = Client(self.broker.connect(overflow))
        assert all(c.queue.id != client.queue.id for c in self.clients.values()), "unique ids"
        self.clients[number] = client

    @precondition(lambda self: self.clients)
    @rule(number=client_numbers)
    def disconnect(self, number: int) -> None:
        number, client = self.pick(number)
        del self.clients[number]
        self.broker.disconnect(client.queue)
        self.release(client, tuple(client.since))
        self.check_interest()

    @rule(microseconds=st.sampled_from([0, 0, 1, 1000, 2_000_000]))
    def advance(self, microseconds: int) -> None:
        self.harness.advance(microseconds)

    @precondition(lambda self: self.clients)
    @rule(number=client_numbers, topics=st.one_of(topic_lists, st.just(())))
    def subscribe(self, number: int, topics: tuple[bytes, ...]) -> None:
        number, client = self.pick(number)
        if client.registered is not None and topics:  # retroactive: the register's horizon
            position, client.registered = client.registered, None
            answer = self.broker.subscribe(client.queue, topics, self.harness.now())
            self.retro(number, topics, Horizon(-1, position), answer)
            return
        found = self.harness.answer(self.broker.subscribe(client.queue, topics, self.harness.now()))
        assert found is True
        self.hold(client, topics, len(self.history))
        self.check_interest()

    @precondition(lambda self: self.clients)
    @rule(number=client_numbers, topics=topic_lists)
    def unsubscribe(self, number: int, topics: tuple[bytes, ...]) -> None:
        number, client = self.pick(number)
        self.harness.answer(self.broker.unsubscribe(client.queue, topics))
        self.release(client, topics)
        self.check_interest()

    @precondition(lambda self: self.clients)
    @rule(number=client_numbers)
    def register(self, number: int) -> None:
        number, client = self.pick(number)
        self.harness.answer(self.broker.register(client.queue, self.harness.now()))
        client.registered = len(self.history)

    @rule()
    def horizon(self) -> None:
        self.seen(self.harness.answer(self.broker.horizon(self.harness.now())))

    @precondition(lambda self: self.clients)
    @rule(number=client_numbers, topics=topic_lists, data=st.data())
    def retro_subscribe(self, number: int, topics: tuple[bytes, ...], data: st.DataObject) -> None:
        number, client = self.pick(number)
        before_start = Horizon(self.harness.started - 1, 0)
        seen = st.sampled_from(self.horizons)
        horizon = data.draw(st.one_of(seen, seen, seen, st.just(before_start)), label="horizon")
        now = self.harness.now()
        answer = self.broker.retro_subscribe(client.queue, horizon.value, topics, now)
        self.retro(number, topics, horizon, answer)

    def retro(
        self, number: int, topics: tuple[bytes, ...], horizon: Horizon, answer: Answer[bool]
    ) -> None:
        """Check a retroactive subscribe's ``answer`` and its effect on the queue."""
        client = self.clients[number]
        harness = self.harness
        found = harness.answer(answer)
        harness.settle()
        end = len(self.history)
        before_history = 0 <= horizon.value < harness.started
        if not found:
            # NOT_FOUND: some message since the horizon is gone. Never when there was
            # none to lose; never from a lossless broker unless before its history.
            assert horizon.position < end or before_history or harness.partial_view, (
                "NOT_FOUND with nothing to lose"
            )
            assert before_history or not harness.lossless, "a lossless broker lost a message"
            self.hold(client, topics, end)
        else:
            assert not before_history, "a horizon before the broker's history is NOT_FOUND"
            wanted = set(topics)
            new = []
            for position in range(horizon.position, end):
                message = self.history[position]
                if message.publisher == client.queue.id or self.had(client, position):
                    continue
                matched = tuple(t for t in message.topics if t in wanted)
                if matched:
                    new.append((position, matched))
            self.hold(client, topics, horizon.position)
            if not self.queue_up(client, new):
                self.drop(number)
        self.overflowing()
        self.check_interest()

    @precondition(lambda self: self.clients)
    @rule(
        number=client_numbers,
        entries=st.lists(st.one_of(topic_lists, st.just(())), min_size=1, max_size=4),
        padding=st.lists(st.sampled_from(PADDING), min_size=4, max_size=4),
    )
    def publish(self, number: int, entries: list[tuple[bytes, ...]], padding: list[int]) -> None:
        number, client = self.pick(number)
        harness = self.harness
        batch = [
            (topics, b"m%d" % (len(self.history) + i) + b"." * padding[i])
            for i, topics in enumerate(entries)
        ]
        stamp = harness.answer(self.broker.publish(client.queue, batch, harness.now))
        harness.settle()
        slow = set()
        for topics, payload in batch:
            position = len(self.history)
            self.history.append(Published(topics, payload, client.queue.id))
            for other, receiver in self.clients.items():
                if other == number or other in slow:
                    continue  # the publisher never gets its own message
                matched = tuple(t for t in topics if t in receiver.since)
                if matched and not self.queue_up(receiver, [(position, matched)]):
                    slow.add(other)
        self.seen(stamp)  # the stamp of the last message is a horizon of its own
        for other in slow:
            self.drop(other)
        self.overflowing()
        self.check_interest()

    @precondition(lambda self: any(c.waiting for c in self.clients.values()))
    @rule(number=client_numbers, with_horizon=st.booleans())
    def poll_a_waiting_client(self, number: int, with_horizon: bool) -> None:
        waiting = [n for n, c in sorted(self.clients.items()) if c.waiting]
        self.poll(waiting[number % len(waiting)], with_horizon)

    @precondition(lambda self: self.clients)
    @rule(number=client_numbers, with_horizon=st.booleans())
    def poll(self, number: int, with_horizon: bool) -> None:
        number, client = self.pick(number)
        harness = self.harness
        harness.settle()
        if with_horizon:
            deliveries, horizon = harness.answer(self.broker.poll(client.queue, harness.now()))
            assert horizon is not None
        else:  # a plain poll drains the local queue, without the broker
            deliveries, horizon = client.queue.drain(), None
        got = [described(d) for d in deliveries]
        expected = [(self.history[p].payload, matched) for p, matched in client.waiting]
        assert [(payload, matched) for payload, matched, _ in got] == expected
        for (position, _), (_, _, stamp) in zip(client.waiting, got, strict=True):
            self.stamped(position, stamp)
        client.waiting.clear()
        if horizon is not None:
            self.seen(horizon)

    # -- invariants ------------------------------------------------------------

    @invariant()
    def the_shared_empty_queue_stays_empty(self) -> None:
        assert NO_ENTRIES == []

    @invariant()
    def statistics_follow_the_subscriptions(self) -> None:
        stats = self.broker.stats()
        assert stats.clients == len(self.clients)
        assert stats.topics == len(self.interest)
        assert stats.subscriptions == sum(self.interest.values())
        assert stats.queued_messages == sum(len(c.waiting) for c in self.clients.values())
        assert sorted(self.broker.topic_subscribers()) == sorted(self.interest.items())

    def teardown(self) -> None:
        self.harness.close()


CONTRACT_SETTINGS = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_broker_contract(name: str) -> None:
    harness = staticmethod(HARNESSES[name])
    machine = type(f"Contract_{name}", (BrokerContract,), {"make_harness": harness})
    run_state_machine_as_test(machine, settings=CONTRACT_SETTINGS)
