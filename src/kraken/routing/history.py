"""The retro buffer of one router shard: recent messages, and what it has lost.

It keeps the last ``capacity`` messages published to the shard's topics. When a
message leaves, the buffer remembers, per topic, the stamp of the newest message
it evicted on that topic, so that a retroactive subscription can tell exactly
whether anything it asks for is gone. That memory is bounded too: past
``capacity`` topics the oldest records fold into one shard-wide ``floor``, which
can only make the answer NOT_FOUND more often, never less.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice

from kraken.routing.message import Message
from kraken.types import Topics


class _TopicLog:
    """The buffered messages of one topic, oldest first; ``start`` skips evicted ones."""

    __slots__ = ("messages", "start")

    def __init__(self, message: Message) -> None:
        self.messages = [message]
        self.start = 0


class RetroBuffer:
    """Recent messages of one shard, in publish order and per topic."""

    __slots__ = ("_by_topic", "_evicted", "_messages", "capacity", "floor")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # (message, the topics of it that belong to this shard), oldest first
        self._messages: deque[tuple[Message, Topics]] = deque()
        # topic -> its buffered messages, so a retro reads only what it asks for
        self._by_topic: dict[bytes, _TopicLog] = {}
        # topic -> stamp of its newest evicted message, oldest record first
        self._evicted: dict[bytes, int] = {}
        self.floor = 0  # stamp at or above every record folded out of _evicted

    def __len__(self) -> int:
        return len(self._messages)

    def append(self, message: Message, topics: Topics) -> None:
        """Keep ``message`` under ``topics`` (its topics of this shard); once full,
        evict the oldest message (written out here: it runs on every append)."""
        messages = self._messages
        messages.append((message, topics))
        by_topic = self._by_topic
        for topic in topics:
            log = by_topic.get(topic)
            if log is None:
                by_topic[topic] = _TopicLog(message)
            else:
                log.messages.append(message)
        if len(messages) <= self.capacity:
            return
        oldest, oldest_topics = messages.popleft()
        evicted = self._evicted
        stamp = oldest.stamp
        for topic in oldest_topics:
            # the oldest message of the buffer is the oldest of each of its topics
            log = by_topic[topic]
            log.start += 1
            if log.start == len(log.messages):
                del by_topic[topic]
            elif log.start > 64 and log.start * 2 > len(log.messages):
                del log.messages[: log.start]
                log.start = 0
            # re-inserting keeps _evicted ordered by stamp, oldest first
            evicted.pop(topic, None)
            evicted[topic] = stamp
        while len(evicted) > self.capacity:
            record = next(iter(evicted))
            self.floor = max(self.floor, evicted.pop(record))

    def lost_since(self, horizon: int, topics: Topics) -> bool:
        """True when a message on one of ``topics`` stamped after ``horizon`` is gone."""
        evicted = self._evicted
        floor = self.floor  # a topic without a record may have been folded into it
        return any(evicted.get(t, floor) > horizon for t in topics)

    def since(self, horizon: int, topics: Iterable[bytes]) -> Iterator[Message]:
        """Buffered messages on ``topics`` stamped after ``horizon`` (a message on
        several of them comes once per topic)."""
        if not self._messages or self._messages[-1][0].stamp <= horizon:
            return  # nothing newer than the horizon at all: the common register case
        by_topic = self._by_topic
        for topic in topics:
            log = by_topic.get(topic)
            if log is not None:
                messages = log.messages
                first = bisect_right(messages, horizon, lo=log.start, key=_stamp)
                yield from islice(messages, first, None)


def _stamp(message: Message) -> int:
    return message.stamp
