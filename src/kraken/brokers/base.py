"""The ``Broker`` protocol: everything a session needs from where messages go.

A session (one per client, whatever its transport) talks to one broker. The
in-memory broker over ``kraken.routing`` is the default; a proxy in front of
other Kraken nodes, or a Redis backplane, implements the same protocol, so that
sessions and transports stay the same whatever the backend.

Rule 1: a broker never knows its clients' protocol. It deals in topics, client
queues and stamps; sessions encode replies.
Rule 2: an answer may come later. Every operation returns its value, or a
``Pending`` that a broker behind a network resolves when its backend answers.
Rule 3: a broker lives in the event loop's thread and never blocks it; time is
passed in (Unix microseconds), as to the router.

Messages reach a client through its ``ClientQueue``, which every broker keeps
in this process: a publish appends to the queues of local subscribers at once,
and a poll drains the caller's own queue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeAlias, TypeVar

from kraken.errors import ServerError
from kraken.routing import ClientQueue, Delivery, InterestListener
from kraken.types import Entry, Topics

T = TypeVar("T")
U = TypeVar("U")

__all__ = ["Answer", "Broker", "BrokerStats", "InterestListener", "Pending", "Polled"]


class Pending(Generic[T]):
    """An answer that arrives later: resolved once with a value, or failed once.

    Sans-I/O: no event loop. Callbacks run synchronously when it settles (at
    once, if it already has), in the order they were added.
    """

    __slots__ = ("_callbacks", "_error", "_settled", "_value")

    def __init__(self) -> None:
        self._settled = False
        self._value: T | None = None
        self._error: ServerError | None = None
        self._callbacks: list[Callable[[Pending[T]], None]] = []

    @property
    def done(self) -> bool:
        return self._settled

    def resolve(self, value: T) -> None:
        self._settle(value, None)

    def fail(self, error: ServerError) -> None:
        """The backend could not answer: the request gets ``error``'s reply."""
        self._settle(None, error)

    def result(self) -> T:
        """The value; raises the ``ServerError`` it failed with. Only once done."""
        if not self._settled:
            raise RuntimeError("the answer is still pending")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by resolve()

    def add_done_callback(self, callback: Callable[[Pending[T]], None]) -> None:
        if self._settled:
            callback(self)
        else:
            self._callbacks.append(callback)

    def then(self, function: Callable[[T], U]) -> Pending[U]:
        """A pending answer of ``function(value)``; a failure passes through."""
        mapped: Pending[U] = Pending()

        def settle(done: Pending[T]) -> None:
            if done._error is not None:
                mapped.fail(done._error)
            else:
                mapped.resolve(function(done._value))  # type: ignore[arg-type]

        self.add_done_callback(settle)
        return mapped

    def _settle(self, value: T | None, error: ServerError | None) -> None:
        if self._settled:
            raise RuntimeError("an answer settles once")
        self._settled = True
        self._value = value
        self._error = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


Answer: TypeAlias = T | Pending[T]
"""What a broker operation returns: its value now, or later."""

Polled = tuple[list[Delivery], int | None]
"""A poll's answer: the deliveries taken from the queue, oldest first, and the
horizon (None when the poll did not ask for it): every drained message is
stamped at or below it, and every message still to come above it."""


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """Read-only figures for the admin API and metrics (a snapshot)."""

    topics: int  # topics with at least one local subscriber
    subscriptions: int  # (client, topic) pairs
    clients: int  # open client queues
    queued_messages: int  # deliveries waiting in client queues
    queued_bytes: int  # their payload bytes
    published: int  # messages published through this broker
    deliveries: int  # messages queued for subscribers
    retro_requests: int  # retroactive subscribes
    retro_not_found: int  # ... answered NOT_FOUND
    buffered_messages: int  # messages kept for retroactivity
    buffered_bytes: int = 0  # ... their charged bytes (payloads and a charge per topic)
    evicted_for_bytes: int = 0  # messages the history dropped for its byte bound


class Broker(Protocol):
    """Where a session's requests go. See the module's rules."""

    # -- clients -----------------------------------------------------------------

    def connect(self, on_overflow: Callable[[], None]) -> ClientQueue:
        """A new client's queue, with a broker-wide unique ``id``.

        ``on_overflow`` is called once, synchronously, by the delivery that would
        pass one of the queue's limits: the client is a slow consumer.
        """
        ...

    def disconnect(self, queue: ClientQueue) -> None:
        """Forget a client (a queue this broker handed out): its subscriptions
        (interest may be lost) and its messages. Once; a second call does nothing."""
        ...

    # -- requests ----------------------------------------------------------------

    def register(self, queue: ClientQueue, now: int) -> Answer[None]:
        """Remember the current horizon as the start of the queue's next subscribe."""
        ...

    def horizon(self, now: int) -> Answer[int]:
        """The current horizon: every message so far is stamped at or below it."""
        ...

    def subscribe(self, queue: ClientQueue, topics: Topics, now: int) -> Answer[bool]:
        """Subscribe (retroactively after a register); False means NOT_FOUND: the
        subscription took effect, but messages since the horizon are lost. Once it
        has, ``queue.subscriptions`` holds the topics: the session counts them
        against ``max_subscriptions_per_client`` before the next subscribe."""
        ...

    def retro_subscribe(
        self, queue: ClientQueue, horizon: int, topics: Topics, now: int
    ) -> Answer[bool]:
        """Subscribe and queue every message on ``topics`` stamped after ``horizon``
        that the queue has not had; False (NOT_FOUND) when some are lost."""
        ...

    def unsubscribe(self, queue: ClientQueue, topics: Topics) -> Answer[None]: ...

    def publish(
        self, queue: ClientQueue, entries: Sequence[Entry], clock: Callable[[], int]
    ) -> Answer[int]:
        """Publish each entry in order, never to ``queue`` itself; the stamp of the
        last. ``clock`` gives the time, asked once per message."""
        ...

    def poll(self, queue: ClientQueue, now: int) -> Answer[Polled]:
        """Take the queue's deliveries and the horizon, at once: every delivery taken
        is stamped at or below the horizon, every later one above it. (A poll that
        does not ask for the horizon drains the local queue without the broker.)"""
        ...

    # -- events and figures ------------------------------------------------------

    def watch_interest(self, listener: InterestListener) -> None:
        """Have ``listener`` told of each topic's first local subscriber and last."""
        ...

    def stats(self) -> BrokerStats: ...

    def topic_subscribers(self) -> list[tuple[bytes, int]]:
        """Each topic with local subscribers, with how many."""
        ...
