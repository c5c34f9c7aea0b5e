"""Brokers under the contract test, each behind a ``Harness``.

A harness builds one broker, gives it time, and waits for its answers: for the
in-memory broker an answer is there at once; for a broker behind a network (the
proxy, Redis) ``answer`` waits until the backend has replied and ``settle``
until every message published so far has reached its local subscribers. A new
broker joins the contract test by adding a harness to ``HARNESSES``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kraken.brokers.base import Answer, Broker, Pending
from kraken.brokers.local import LocalBroker
from kraken.routing import Router
from kraken.routing.history import DEFAULT_MAX_BYTES
from kraken_testing import Deferring

T = TypeVar("T")

T0 = 1_800_000_000_000_000  # when every broker here starts, Unix microseconds


class Harness(Protocol):
    broker: Broker
    started: int  # a horizon before this is before the broker's history began
    lossless: bool  # its history outlasts a test run: NOT_FOUND only before ``started``
    max_messages: int  # each client queue's limit

    def now(self) -> int: ...

    def advance(self, microseconds: int) -> None: ...

    def answer(self, answer: Answer[T]) -> T:
        """The value of ``answer``, once the broker has given it."""
        ...

    def settle(self) -> None:
        """Wait until every message published so far is in its subscribers' queues."""
        ...

    def close(self) -> None: ...


class LocalHarness:
    """The in-memory broker, with a clock the test moves by hand."""

    def __init__(
        self,
        shards: int = 4,
        capacity: int = 10_000,
        max_messages: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.started = self._now = T0
        self.lossless = capacity >= 10_000 and max_bytes >= DEFAULT_MAX_BYTES
        self.max_messages = max_messages
        router = Router(
            T0, num_shards=shards, messages_per_shard=capacity, bytes_per_shard=max_bytes
        )
        self.broker: Broker = LocalBroker(router, max_messages, 1 << 30)

    def now(self) -> int:
        return self._now

    def advance(self, microseconds: int) -> None:
        self._now += microseconds

    def answer(self, answer: Answer[T]) -> T:
        assert not isinstance(answer, Pending), "the in-memory broker answers at once"
        return answer

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass


class DeferredHarness(LocalHarness):
    """The in-memory broker answering every request later, as a networked one would."""

    def __init__(self) -> None:
        super().__init__()
        operations = ("register", "horizon", "subscribe", "retro_subscribe", "unsubscribe")
        self.deferring = Deferring(self.broker, (*operations, "publish", "poll"))
        self.broker = self.deferring  # a Broker by delegation

    def answer(self, answer: Answer[T]) -> T:
        assert isinstance(answer, Pending), "every operation of this broker is deferred"
        assert not answer.done, "a deferred answer waits for its backend"
        self.deferring.settle()
        return answer.result()


HARNESSES: dict[str, Callable[[], Any]] = {
    "local": LocalHarness,
    "local_one_shard": lambda: LocalHarness(shards=1),
    # a retro buffer of 3 messages per shard: NOT_FOUND is common
    "local_small_buffer": lambda: LocalHarness(shards=2, capacity=3),
    # a retro buffer of 4,000 charged bytes per shard: a few messages (payloads of up to
    # 2,000 bytes and 256 bytes a topic), evicted for bytes, not count; NOT_FOUND is common
    "local_small_bytes": lambda: LocalHarness(shards=2, max_bytes=4000),
    # queues of 4 messages: slow consumers are common
    "local_small_queues": lambda: LocalHarness(max_messages=4),
    "deferred": DeferredHarness,
}
