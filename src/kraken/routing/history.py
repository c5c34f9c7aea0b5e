"""The retro buffer of one router shard: recent messages, and what it has lost.

It keeps the last messages published to the shard's topics: at most
``capacity`` of them, and at most ``max_bytes`` charged bytes, each message
charged its payload plus ``TOPIC_BYTES`` for each of its topics in the shard
(what the buffer's bookkeeping costs per topic), so that neither large payloads
nor messages naming many topics can pin unbounded memory. The oldest leave
while either bound is passed; a message charged more than ``max_bytes`` leaves
at once.

When a message leaves, the buffer remembers, per topic, the stamp of the newest
message it evicted on that topic, so that a retroactive subscription can tell
exactly whether anything it asks for is gone, whichever bound evicted it. That
memory is bounded too: past ``capacity`` topics the oldest records fold into
one shard-wide ``floor``, which can only make the answer NOT_FOUND more often,
never less.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice

from kraken.routing.message import Message
from kraken.types import Topics

# Bytes a buffered message is charged per topic, on top of its payload: about what
# the buffer keeps for it (the topic and its log entry, a share of the message):
# measured 215 bytes for a topic named once, 300-430 for a message on one topic.
TOPIC_BYTES = 256
DEFAULT_MAX_BYTES = 16 << 20  # Config.max_buffered_bytes_per_router_shard's default

_GONE = Message(0, (), b"", 0)  # where a topic log held a message evicted since


class _TopicLog:
    """The buffered messages of one topic, oldest first; ``start`` skips evicted ones,
    each replaced by ``_GONE`` until the log drops its head."""

    __slots__ = ("messages", "start")

    def __init__(self, message: Message) -> None:
        self.messages = [message]
        self.start = 0


class RetroBuffer:
    """Recent messages of one shard, in publish order and per topic."""

    __slots__ = (
        "_by_topic",
        "_evicted",
        "_messages",
        "bytes",
        "capacity",
        "evicted_for_bytes",
        "floor",
        "max_bytes",
    )

    def __init__(self, capacity: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0  # charged bytes of the buffered messages (see TOPIC_BYTES)
        self.evicted_for_bytes = 0  # messages evicted by max_bytes while under capacity
        # (message, the topics of it that belong to this shard, its charge), oldest first
        self._messages: deque[tuple[Message, Topics, int]] = deque()
        # topic -> its buffered messages, so a retro reads only what it asks for
        self._by_topic: dict[bytes, _TopicLog] = {}
        # topic -> stamp of its newest evicted message, oldest record first
        self._evicted: dict[bytes, int] = {}
        self.floor = 0  # stamp at or above every record folded out of _evicted

    def __len__(self) -> int:
        return len(self._messages)

    def append(self, message: Message, topics: Topics) -> None:
        """Keep ``message`` under ``topics`` (its topics of this shard). Past
        ``capacity``, evict the oldest message (written out here: it runs on every
        append to a full buffer); then, past ``max_bytes``, as many as it takes."""
        charge = len(message.payload) + TOPIC_BYTES * len(topics)
        messages = self._messages
        messages.append((message, topics, charge))
        by_topic = self._by_topic
        for topic in topics:
            log = by_topic.get(topic)
            if log is None:
                by_topic[topic] = _TopicLog(message)
            else:
                log.messages.append(message)
        size = self.bytes + charge
        if len(messages) > self.capacity:
            # _evict_oldest, written out
            oldest, oldest_topics, oldest_charge = messages.popleft()
            size -= oldest_charge
            evicted = self._evicted
            stamp = oldest.stamp
            for topic in oldest_topics:
                # the oldest message of the buffer is the oldest of each of its topics
                log = by_topic[topic]
                kept = log.messages
                start = log.start
                kept[start] = _GONE  # let the message go now, not when the log is trimmed
                start += 1
                if start == len(kept):
                    del by_topic[topic]
                elif start > 64 and start * 2 > len(kept):
                    del kept[:start]
                    log.start = 0
                else:
                    log.start = start
                # re-inserting keeps _evicted ordered by stamp, oldest first
                evicted.pop(topic, None)
                evicted[topic] = stamp
            if len(evicted) > self.capacity:
                self._fold()
        self.bytes = size
        if size > self.max_bytes:
            while self.bytes > self.max_bytes:
                self.evicted_for_bytes += 1
                self._evict_oldest()

    def _evict_oldest(self) -> None:
        """Evict the oldest message, remembering per topic that it is gone."""
        oldest, oldest_topics, charge = self._messages.popleft()
        self.bytes -= charge
        by_topic = self._by_topic
        evicted = self._evicted
        stamp = oldest.stamp
        for topic in oldest_topics:
            log = by_topic[topic]
            kept = log.messages
            start = log.start
            kept[start] = _GONE
            start += 1
            if start == len(kept):
                del by_topic[topic]
            elif start > 64 and start * 2 > len(kept):
                del kept[:start]
                log.start = 0
            else:
                log.start = start
            evicted.pop(topic, None)
            evicted[topic] = stamp
        if len(evicted) > self.capacity:
            self._fold()

    def _fold(self) -> None:
        """Fold the oldest eviction records into ``floor`` until ``capacity`` are left."""
        evicted = self._evicted
        while len(evicted) > self.capacity:
            record = next(iter(evicted))
            self.floor = max(self.floor, evicted.pop(record))

    # -- across a restart (plain data; the server layer writes and reads the file) ---

    def held(self) -> Iterator[Message]:
        """The buffered messages, oldest first."""
        for message, _, _ in self._messages:
            yield message

    def evictions(self) -> tuple[list[tuple[bytes, int]], int]:
        """What the buffer knows it lost: the eviction records (topic, stamp of its
        newest evicted message), oldest first, and ``floor``."""
        return list(self._evicted.items()), self.floor

    def restore_evictions(self, records: Iterable[tuple[bytes, int]], floor: int) -> None:
        """Take back ``evictions()`` of an earlier buffer, before any message is appended:
        the messages it lost stay lost. More records than ``capacity`` fold into the floor."""
        if self._messages or self._evicted or self.floor:
            raise ValueError("eviction records are restored into an empty buffer only")
        evicted = self._evicted
        for topic, stamp in records:
            evicted.pop(topic, None)
            evicted[topic] = stamp
        self.floor = floor
        if len(evicted) > self.capacity:
            self._fold()

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
