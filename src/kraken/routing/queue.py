"""The per-client queue: what a subscriber owns in the router.

A ``ClientQueue`` is a subscriber: the router appends deliveries to it
synchronously at publish time, so a publisher never waits on a subscriber.
Limits are checked at enqueue time; the delivery that would exceed one makes
the client a slow consumer: the queue drops everything, stops accepting, and
calls ``on_overflow`` once so its transport can close the connection.
A queue that becomes non-empty calls ``on_ready``, when one is set: what a
push transport waits for (a polled queue leaves it None and pays nothing).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from kraken.routing.message import Delivery, Message

# The entries of every empty queue: shared, never appended to. A delivery to an
# empty queue gives it a list of its own, so that an idle client keeps none.
NO_ENTRIES: list[Delivery] = []


def stamp_of(delivery: Delivery) -> int:
    return delivery.stamp if isinstance(delivery, Message) else delivery[0].stamp


class ClientQueue:
    """The subscriptions and pending messages of one client."""

    __slots__ = (
        "_on_overflow",
        "bytes",
        "dead",
        "entries",
        "horizon",
        "id",
        "lost",
        "max_bytes",
        "max_messages",
        "on_ready",
        "received",
        "subscriptions",
    )

    def __init__(
        self,
        client_id: int,
        max_messages: int,
        max_bytes: int,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.id = client_id
        # topic -> stamp after which every message on it has reached this queue
        self.subscriptions: dict[bytes, int] = {}
        self.horizon: int | None = None  # set by register, used by the next subscribe
        self.entries: list[Delivery] = NO_ENTRIES
        self.bytes = 0  # payload bytes in entries
        self.received = 0  # deliveries accepted over the queue's life
        self.dead = False
        self.lost: str | None = None  # why its broker lost messages for it (see lose)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._on_overflow = on_overflow
        self.on_ready: Callable[[], None] | None = None

    def deliver(self, message: Message, delivery: Delivery) -> None:
        """Queue one delivery of ``message`` (hot path: one call per recipient)."""
        size = self.bytes + len(message.payload)
        waiting = len(self.entries)
        if waiting >= self.max_messages or size > self.max_bytes:
            self.overflow()
            return
        self.bytes = size
        if waiting:
            self.entries.append(delivery)
        else:
            self.entries = [delivery]
            if self.on_ready is not None:
                self.on_ready()

    def deliver_many(self, deliveries: list[tuple[Message, Delivery]]) -> None:
        """Queue retroactive deliveries, keeping the queue in publish order."""
        if not deliveries:
            return
        size = self.bytes + sum(len(m.payload) for m, _ in deliveries)
        if len(self.entries) + len(deliveries) > self.max_messages or size > self.max_bytes:
            self.overflow()
            return
        new = [d for _, d in deliveries]
        entries = self.entries
        waiting = len(entries)
        if not entries:
            self.entries = new
        elif stamp_of(entries[-1]) > deliveries[0][0].stamp:
            self.entries = list(heapq.merge(entries, new, key=stamp_of))
        else:
            entries.extend(new)
        self.bytes = size
        if not waiting and self.on_ready is not None:
            self.on_ready()

    def drain(self) -> list[Delivery]:
        """Take every queued delivery, oldest first (the caller's list; when there
        is none, the shared ``NO_ENTRIES``, which must not be changed)."""
        entries = self.entries
        if entries:
            self.received += len(entries)
            self.entries = NO_ENTRIES
            self.bytes = 0
        return entries

    def overflow(self) -> None:
        """The delivery that would pass a limit: drop everything, accept nothing more."""
        if self.dead:
            return
        self.dead = True
        self.entries = NO_ENTRIES
        self.bytes = 0
        try:
            if self._on_overflow is not None:
                self._on_overflow()  # may read the limits that were passed, to report them
        finally:
            self.max_messages = -1  # every later delivery lands here and is dropped

    def lose(self, why: str) -> None:
        """Its broker lost messages meant for it (a proxy's upstream link, a backplane):
        as an overflow, it drops everything and calls ``on_overflow``, with ``lost``
        saying why, so that its transport closes the connection."""
        if not self.dead:
            self.lost = why
            self.overflow()

    def close(self) -> None:
        """Stop accepting deliveries and free the queue (the client went away)."""
        self.dead = True
        self.max_messages = -1
        self.entries = NO_ENTRIES
        self.bytes = 0
        self._on_overflow = None
        self.on_ready = None
