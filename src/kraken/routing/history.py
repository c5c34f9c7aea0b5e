"""The retro buffer of one router shard: recent messages, and what it has lost.

It keeps the last ``capacity`` messages published to the shard's topics. When a
message leaves, the buffer remembers, per topic, the stamp of the newest message
it evicted on that topic, so that a retroactive subscription can tell exactly
whether anything it asks for is gone. That memory is bounded too: past
``capacity`` topics the oldest records fold into one shard-wide ``floor``, which
can only make the answer NOT_FOUND more often, never less.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from kraken.routing.message import Message, Topics


class RetroBuffer:
    __slots__ = ("_evicted", "_messages", "capacity", "floor")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # (message, the topics of it that belong to this shard), oldest first
        self._messages: deque[tuple[Message, Topics]] = deque()
        # topic -> stamp of its newest evicted message, oldest record first
        self._evicted: dict[bytes, int] = {}
        self.floor = 0  # stamp at or above every record folded out of _evicted

    def __len__(self) -> int:
        return len(self._messages)

    def append(self, message: Message, topics: Topics) -> None:
        messages = self._messages
        messages.append((message, topics))
        if len(messages) > self.capacity:
            self._evict(*messages.popleft())

    def _evict(self, message: Message, topics: Topics) -> None:
        evicted = self._evicted
        stamp = message.stamp
        for topic in topics:
            # re-inserting keeps _evicted ordered by stamp, oldest first
            evicted.pop(topic, None)
            evicted[topic] = stamp
        while len(evicted) > self.capacity:
            oldest = next(iter(evicted))
            self.floor = max(self.floor, evicted.pop(oldest))

    def lost_since(self, horizon: int, topics: Topics) -> bool:
        """True when a message on one of ``topics`` stamped after ``horizon`` is gone."""
        evicted = self._evicted
        floor = self.floor  # a topic without a record may have been folded into it
        return any(evicted.get(t, floor) > horizon for t in topics)

    def since(self, horizon: int) -> Iterator[tuple[Message, Topics]]:
        """Buffered messages stamped after ``horizon``, newest first."""
        for item in reversed(self._messages):
            if item[0].stamp <= horizon:
                return
            yield item
