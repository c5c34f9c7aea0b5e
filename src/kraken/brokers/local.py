"""The in-memory broker: one process, the router of ``kraken.routing``.

The default broker. Every answer is immediate (never ``Pending``); it owns the
router and the client queues it hands out, and nothing else: no sockets, no
clock of its own (time comes from the session), no knowledge of any protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kraken.brokers.base import BrokerStats, Polled
from kraken.config import Config
from kraken.routing import ClientQueue, HistorySnapshot, InterestListener, Router
from kraken.types import Entry, Topics


class _Listeners:
    """Several interest listeners behind the router's one."""

    __slots__ = ("listeners",)

    def __init__(self, first: InterestListener) -> None:
        self.listeners = [first]

    def interest_gained(self, topics: Topics) -> None:
        for listener in self.listeners:
            listener.interest_gained(topics)

    def interest_lost(self, topics: Topics) -> None:
        for listener in self.listeners:
            listener.interest_lost(topics)


class _LinkedQueue(ClientQueue):
    """A client queue on the broker's ring of open queues: two links per client,
    where a dict of the queues would cost an entry each."""

    __slots__ = ("_next", "_prev")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._prev: _LinkedQueue | None = None  # None: not on the ring
        self._next: _LinkedQueue | None = None


class LocalBroker:
    """The ``Broker`` of one process, over a ``Router``."""

    def __init__(self, router: Router, max_queued_messages: int, max_queued_bytes: int) -> None:
        self.router = router
        self.max_queued_messages = max_queued_messages
        self.max_queued_bytes = max_queued_bytes
        self._ring = _LinkedQueue(0, 0, 0)  # the open queues, linked around it
        self._ring._prev = self._ring._next = self._ring
        self.clients = 0
        self._next_id = 0

    @classmethod
    def from_config(cls, config: Config, now: int) -> LocalBroker:
        router = Router(
            now,
            num_shards=config.num_router_shards,
            messages_per_shard=config.messages_stored_per_router_shard,
            min_fanout_to_warn=config.router_min_fanout_to_warn,
            min_topics_to_warn=config.router_min_publish_to_topics_to_warn,
            bytes_per_shard=config.max_buffered_bytes_per_router_shard,
        )
        return cls(router, config.max_queued_messages, config.max_queued_bytes)

    # -- clients -----------------------------------------------------------------

    def connect(self, on_overflow: Callable[[], None]) -> ClientQueue:
        self._next_id += 1
        queue = _LinkedQueue(
            self._next_id, self.max_queued_messages, self.max_queued_bytes, on_overflow
        )
        ring = self._ring
        first = ring._next
        assert first is not None
        queue._prev, queue._next = ring, first
        ring._next = first._prev = queue
        self.clients += 1
        return queue

    def disconnect(self, queue: ClientQueue) -> None:
        if not isinstance(queue, _LinkedQueue) or queue._prev is None:
            return  # not one of this broker's open queues
        before, after = queue._prev, queue._next
        assert after is not None
        before._next, after._prev = after, before
        queue._prev = queue._next = None
        self.clients -= 1
        self.router.remove(queue)

    def queues(self) -> Iterator[ClientQueue]:
        """The open client queues."""
        ring = self._ring
        queue = ring._next
        while queue is not ring:
            assert queue is not None
            yield queue
            queue = queue._next

    # -- requests ----------------------------------------------------------------

    def register(self, queue: ClientQueue, now: int) -> None:
        self.router.register(queue, now)

    def horizon(self, now: int) -> int:
        return self.router.horizon(now)

    def subscribe(self, queue: ClientQueue, topics: Topics, now: int) -> bool:
        return self.router.subscribe(queue, topics, now)

    def retro_subscribe(self, queue: ClientQueue, horizon: int, topics: Topics, now: int) -> bool:
        return self.router.retro_subscribe(queue, horizon, topics, now)

    def unsubscribe(self, queue: ClientQueue, topics: Topics) -> None:
        self.router.unsubscribe(queue, topics)

    def publish(
        self, queue: ClientQueue, entries: Sequence[Entry], clock: Callable[[], int]
    ) -> int:
        router = self.router
        router.publish_many(queue.id, entries, clock)
        return router.clock.last

    def poll(self, queue: ClientQueue, now: int) -> Polled:
        return queue.drain(), self.router.horizon(now)

    # -- events and figures ------------------------------------------------------

    def watch_interest(self, listener: InterestListener) -> None:
        router = self.router
        if router.interest is None:
            router.interest = listener
        elif isinstance(router.interest, _Listeners):
            router.interest.listeners.append(listener)
        else:
            router.interest = _Listeners(router.interest)
            router.interest.listeners.append(listener)

    def stats(self) -> BrokerStats:
        router = self.router
        queued = [(len(q.entries), q.bytes) for q in self.queues()]
        return BrokerStats(
            topics=router.topic_count(),
            subscriptions=router.subscription_count(),
            clients=self.clients,
            queued_messages=sum(n for n, _ in queued),
            queued_bytes=sum(b for _, b in queued),
            published=router.published,
            deliveries=router.deliveries,
            retro_requests=router.retro_requests,
            retro_not_found=router.not_found,
            buffered_messages=router.buffered(),
            buffered_bytes=router.buffered_bytes(),
            evicted_for_bytes=router.evicted_for_bytes(),
        )

    def topic_subscribers(self) -> list[tuple[bytes, int]]:
        return self.router.topic_subscribers()

    # -- across a planned restart (not part of the Broker protocol) ----------------

    def history(self) -> HistorySnapshot:
        """The retro buffers and the horizon clock, as plain data: what a graceful stop
        keeps (``kraken.server.history_file`` writes it)."""
        return self.router.snapshot()

    def restore_history(self, snapshot: HistorySnapshot, now: int) -> None:
        """Continue the run ``snapshot`` was taken of, before any client connects
        (``Router.restore``); ValueError, changing nothing, when it does not fit."""
        if self.clients:
            raise ValueError("history is restored before any client connects")
        self.router.restore(snapshot, now)
