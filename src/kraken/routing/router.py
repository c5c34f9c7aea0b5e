"""The router: topics, subscribers, fan-out and retroactivity.

Rule 1: synchronous and in memory. No sockets, no bytes on the wire, no clock:
every operation that needs the time is given ``now`` in Unix microseconds.
Rule 2: anything with a ``ClientQueue`` can subscribe (a TCP client, later a
WebSocket or the upstream link of a proxy); the router never knows which.
Rule 3: a topic's first subscriber and its last one leaving are told to the
``interest`` listener, once per request, with every topic that changed: what a
proxy or a backplane subscribes upstream, and unsubscribes.

The topic index is split into shards by a stable hash of the topic (CRC-32), as
the original split it into router shards; each shard owns the subscriber sets
of its topics and the retro buffer of messages published to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from zlib import crc32

from kraken.routing.clock import HorizonClock
from kraken.routing.history import DEFAULT_MAX_BYTES, RetroBuffer
from kraken.routing.message import Delivery, Message
from kraken.routing.queue import ClientQueue, stamp_of
from kraken.types import Topics

log = logging.getLogger("kraken.router")

WARN_INTERVAL = 10_000_000  # microseconds between two fan-out warnings of one kind
RESTORED = -1  # the publisher of a message restored from an earlier run: no queue's id
MAX_GAPS = 64  # downtimes remembered; past it the oldest folds into ``started``


@dataclass(frozen=True, slots=True)
class HistorySnapshot:
    """What a router knows of its past, as plain data: what a planned restart keeps.

    ``messages`` are the messages some shard's retro buffer holds, oldest first, as
    (stamp, topics, payload, the indices of the shards that hold it); ``evictions``
    is per shard (eviction records oldest first, floor). ``last`` is the clock's
    highest stamp or horizon handed out; horizons before ``started`` answer
    NOT_FOUND, and so do those strictly inside one of the ``gaps`` (a downtime:
    the last horizon of a run, the first of the next), which no run handed out.
    """

    started: int
    last: int
    gaps: tuple[tuple[int, int], ...]
    messages: list[tuple[int, Topics, bytes, tuple[int, ...]]]
    evictions: list[tuple[list[tuple[bytes, int]], int]]


class InterestListener(Protocol):
    """Told when topics gain their first subscriber, or lose their last one."""

    def interest_gained(self, topics: Topics) -> None: ...

    def interest_lost(self, topics: Topics) -> None: ...


class RouterShard:
    """Part of the topic index (topic -> subscribers) and its retro buffer."""

    __slots__ = ("history", "index")

    def __init__(self, capacity: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.index: dict[bytes, set[ClientQueue]] = {}
        self.history = RetroBuffer(capacity, max_bytes)


class Router:
    def __init__(
        self,
        now: int,
        num_shards: int = 4,
        messages_per_shard: int = 10_000,
        min_fanout_to_warn: int = 1_000,
        min_topics_to_warn: int = 1_000,
        bytes_per_shard: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.started = now
        # downtimes between the runs this router continues (see restore): horizons
        # strictly inside one were handed out by no run it knows of
        self.gaps: tuple[tuple[int, int], ...] = ()
        self.clock = HorizonClock(now)
        self.shards = [RouterShard(messages_per_shard, bytes_per_shard) for _ in range(num_shards)]
        self.min_fanout_to_warn = min_fanout_to_warn
        self.min_topics_to_warn = min_topics_to_warn
        self._warned = {"fanout": -WARN_INTERVAL, "topics": -WARN_INTERVAL}
        self._suppressed = {"fanout": 0, "topics": 0}
        self.published = 0
        self.deliveries = 0
        self.retro_requests = 0
        self.not_found = 0
        self.interest: InterestListener | None = None

    def shard_of(self, topic: bytes) -> RouterShard:
        shards = self.shards
        return shards[crc32(topic) % len(shards)]

    def _by_shard(self, topics: Topics) -> dict[RouterShard, list[bytes]]:
        groups: dict[RouterShard, list[bytes]] = {}
        for topic in topics:
            groups.setdefault(self.shard_of(topic), []).append(topic)
        return groups

    # -- subscriptions ---------------------------------------------------------

    def register(self, queue: ClientQueue, now: int) -> None:
        """Remember "now" as the horizon of the queue's next subscribe."""
        queue.horizon = self.clock.horizon(now)

    def horizon(self, now: int) -> int:
        return self.clock.horizon(now)

    def subscribe(self, queue: ClientQueue, topics: Topics, now: int) -> bool:
        """Subscribe; retroactively so when a register horizon is pending.

        Returns False for NOT_FOUND (the subscription took effect, but messages
        since the horizon can no longer all be queued).
        """
        if not topics:
            return True
        horizon = queue.horizon
        if horizon is not None:
            queue.horizon = None
            return self.retro_subscribe(queue, horizon, topics, now)
        self._add(queue, topics, self.clock.last)
        return True

    def retro_subscribe(self, queue: ClientQueue, horizon: int, topics: Topics, now: int) -> bool:
        """Subscribe and queue every buffered message on ``topics`` since ``horizon``
        that the queue has not had: none still waiting in it, none that reached it
        through a topic it has held since before the message was stamped.

        Returns False for NOT_FOUND: the horizon precedes the server's start, or a
        message on a requested topic since the horizon has left the buffer. Then
        the subscription still takes effect, and nothing is queued retroactively.
        """
        if not topics:
            return True  # nothing asked for, nothing lost
        self.retro_requests += 1
        last = self.clock.last
        groups = self._by_shard(topics)
        if (
            horizon < self.started
            or (self.gaps and any(a < horizon < b for a, b in self.gaps))
            or any(shard.history.lost_since(horizon, tuple(ts)) for shard, ts in groups.items())
        ):
            self.not_found += 1
            self._add(queue, topics, last)
            return False
        wanted = set(topics)
        found: dict[int, Message] = {}
        for shard, shard_topics in groups.items():
            for message in shard.history.since(horizon, shard_topics):
                found[message.stamp] = message
        covered = queue.subscriptions
        # a message still waiting in the queue (queued through a topic since
        # unsubscribed) is not queued twice
        waiting = {stamp_of(d) for d in queue.entries} if found and queue.entries else ()
        deliveries: list[tuple[Message, Delivery]] = []
        for stamp in sorted(found):
            message = found[stamp]
            if message.publisher == queue.id or stamp in waiting:
                continue
            # a message on a topic covered since before it was stamped is there already
            if any(covered.get(t, stamp) < stamp for t in message.topics):
                continue
            matched = tuple(t for t in message.topics if t in wanted)
            deliveries.append(
                (message, message if len(matched) == len(message.topics) else (message, matched))
            )
        self._add(queue, topics, min(horizon, last))
        self.deliveries += len(deliveries)
        queue.deliver_many(deliveries)
        return True

    def _add(self, queue: ClientQueue, topics: Topics, covered_since: int) -> None:
        subscriptions = queue.subscriptions
        shards = self.shards
        nshards = len(shards)
        gained = []
        for topic in topics:
            old = subscriptions.get(topic)
            if old is None:
                subscriptions[topic] = covered_since
                index = shards[crc32(topic) % nshards].index
                subscribers = index.get(topic)
                if subscribers is None:
                    index[topic] = {queue}
                    gained.append(topic)
                else:
                    subscribers.add(queue)
            elif covered_since < old:
                subscriptions[topic] = covered_since
        if gained and self.interest is not None:
            self.interest.interest_gained(tuple(gained))

    def unsubscribe(self, queue: ClientQueue, topics: Topics) -> None:
        subscriptions = queue.subscriptions
        shards = self.shards
        nshards = len(shards)
        lost = []
        for topic in topics:
            if subscriptions.pop(topic, None) is not None:
                index = shards[crc32(topic) % nshards].index
                subscribers = index[topic]
                if len(subscribers) == 1:
                    del index[topic]  # a topic whose last subscriber leaves is forgotten
                    lost.append(topic)
                else:
                    subscribers.discard(queue)
        if lost and self.interest is not None:
            self.interest.interest_lost(tuple(lost))

    def remove(self, queue: ClientQueue) -> None:
        """Forget a queue whose client went away: its subscriptions and messages."""
        self.unsubscribe(queue, tuple(queue.subscriptions))
        queue.close()

    # -- publishing ------------------------------------------------------------

    def publish(self, publisher: int, topics: Topics, payload: bytes, now: int) -> Message:
        """Stamp a message, keep it for retroactivity and queue it for every subscriber.

        Each subscribed queue gets it once, listing the topics it matched in the
        order the message names them; the publisher's own queue never gets it.
        """
        message = self.publish_many(publisher, ((topics, payload),), lambda: now)
        assert message is not None
        return message

    def publish_many(
        self, publisher: int, entries: Iterable[tuple[Topics, bytes]], now: Callable[[], int]
    ) -> Message | None:
        """``publish`` for each of ``entries`` (topics, payload), in order; the last message.

        ``now`` gives the time in Unix microseconds; it is asked once per message so
        that a long batch is stamped as it goes. The hot path of the server: the
        one- and two-topic cases are written out here.
        """
        shards = self.shards
        nshards = len(shards)
        clock = self.clock
        warn_topics = self.min_topics_to_warn
        warn_fanout = self.min_fanout_to_warn
        published = deliveries = 0
        message = None
        for topics, payload in entries:
            t = now()
            last = clock.last
            stamp = clock.last = t if t > last else last + 1
            message = Message(stamp, topics, payload, publisher)
            published += 1
            n = len(topics)
            if n >= warn_topics:
                self._warn("topics", t, f"a message was published to {n} topics")
            if n == 1:
                topic = topics[0]
                shard = shards[crc32(topic) % nshards]
                shard.history.append(message, topics)
                subscribers = shard.index.get(topic)
                if not subscribers:
                    continue
                count = 0
                size = len(payload)
                for queue in subscribers:
                    if queue.id != publisher:  # ClientQueue.deliver, written out
                        count += 1
                        queued = queue.entries
                        total = queue.bytes + size
                        waiting = len(queued)
                        if waiting < queue.max_messages and total <= queue.max_bytes:
                            queue.bytes = total
                            if waiting:
                                queued.append(message)
                            else:  # an empty queue shares NO_ENTRIES: a list of its own
                                queue.entries = [message]
                                if queue.on_ready is not None:
                                    queue.on_ready()
                        else:
                            queue.overflow()
            elif n == 2:
                first, second = topics
                one = shards[crc32(first) % nshards]
                two = shards[crc32(second) % nshards]
                if one is two:
                    one.history.append(message, topics)
                else:
                    one.history.append(message, (first,))
                    two.history.append(message, (second,))
                ones: set[ClientQueue] | tuple[()] = one.index.get(first) or ()
                twos: set[ClientQueue] | tuple[()] = two.index.get(second) or ()
                count = 0
                if ones:
                    only: Delivery | None = None
                    for queue in ones:
                        if queue.id != publisher:
                            count += 1
                            if queue in twos:
                                queue.deliver(message, message)
                            else:
                                if only is None:
                                    only = (message, (first,))
                                queue.deliver(message, only)
                if twos:
                    only = None
                    for queue in twos:
                        if queue.id != publisher and queue not in ones:
                            count += 1
                            if only is None:
                                only = (message, (second,))
                            queue.deliver(message, only)
            elif n:
                count = self._fan_out_many(message, publisher, topics)
            else:
                continue
            deliveries += count
            if count >= warn_fanout:
                self._warn("fanout", t, f"a message to {n} topics reached {count} subscribers")
        self.published += published
        self.deliveries += deliveries
        return message

    def _fan_out_many(self, message: Message, publisher: int, topics: Topics) -> int:
        matched: dict[ClientQueue, list[bytes]] = {}
        for shard, shard_topics in self._by_shard(topics).items():
            shard.history.append(message, tuple(shard_topics))
            index = shard.index
            for topic in shard_topics:
                subscribers = index.get(topic)
                if subscribers:
                    for queue in subscribers:
                        hits = matched.get(queue)
                        if hits is None:
                            matched[queue] = [topic]
                        else:
                            hits.append(topic)
        count = 0
        every = len(topics)
        for queue, hits in matched.items():
            if queue.id == publisher:
                continue
            count += 1
            if len(hits) == every:
                queue.deliver(message, message)
            else:
                if len(hits) > 1:  # list them in the order the message names them
                    order = set(hits)
                    hits = [t for t in topics if t in order]
                queue.deliver(message, (message, tuple(hits)))
        return count

    def _warn(self, kind: str, now: int, text: str) -> None:
        """Log a fan-out warning, at most one per kind every WARN_INTERVAL."""
        if now - self._warned[kind] < WARN_INTERVAL:
            self._suppressed[kind] += 1
            return
        suppressed = self._suppressed[kind]
        self._warned[kind] = now
        self._suppressed[kind] = 0
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        log.warning("large fan-out: %s%s", text, more)

    # -- across a restart --------------------------------------------------------

    def snapshot(self) -> HistorySnapshot:
        """The retro buffers, their eviction records and the clock, as plain data."""
        held: dict[int, tuple[Message, list[int]]] = {}
        for i, shard in enumerate(self.shards):
            for message in shard.history.held():
                entry = held.get(message.stamp)
                if entry is None:
                    held[message.stamp] = (message, [i])
                else:
                    entry[1].append(i)
        messages = [
            (stamp, message.topics, message.payload, tuple(shards))
            for stamp, (message, shards) in sorted(held.items())
        ]
        evictions = [shard.history.evictions() for shard in self.shards]
        return HistorySnapshot(self.started, self.clock.last, self.gaps, messages, evictions)

    def restore(self, snapshot: HistorySnapshot, now: int) -> None:
        """Continue the run ``snapshot`` was taken of: before any client, on a router
        with as many shards. Horizons from its start on are answered again (exactly:
        its evictions stay lost, and this router's own limits evict what they must);
        the clock goes on above its last horizon. A horizon inside the downtime, between
        its last horizon and this router's clock at ``now``, answers NOT_FOUND.

        Restored messages have no publisher (``RESTORED``): connections are new, so a
        client may get back messages it published itself before the restart. Raises
        ValueError, changing nothing, when the snapshot is not consistent.
        """
        if self.published or self.buffered() or self.topic_count() or self.gaps:
            raise ValueError("history is restored into a new router only")
        shards = self.shards
        placed = self._check(snapshot)
        for shard, (records, floor) in zip(shards, snapshot.evictions, strict=True):
            shard.history.restore_evictions(records, floor)
        for (stamp, topics, payload, _), on_shards in zip(snapshot.messages, placed, strict=True):
            message = Message(stamp, topics, payload, RESTORED)
            for i, shard_topics in on_shards:
                shards[i].history.append(message, shard_topics)
        clock = self.clock
        clock.last = max(clock.last, snapshot.last)
        resumed = clock.horizon(now)
        gaps = snapshot.gaps
        if resumed > snapshot.last + 1:
            gaps += ((snapshot.last, resumed),)
        started = snapshot.started
        while len(gaps) > MAX_GAPS:  # forget the oldest downtime: earlier is NOT_FOUND
            started = gaps[0][1]
            gaps = gaps[1:]
        self.started = started
        self.gaps = gaps

    def _check(self, snapshot: HistorySnapshot) -> list[list[tuple[int, Topics]]]:
        """Raise ValueError unless ``snapshot`` is consistent for this router; for each
        message, the shards that hold it with its topics on each."""
        started, last, shards = snapshot.started, snapshot.last, self.shards
        if len(snapshot.evictions) != len(shards):
            raise ValueError(
                f"taken with {len(snapshot.evictions)} router shards, not {len(shards)}"
            )
        if not 0 <= started <= last:
            raise ValueError("its start is after its last horizon")
        before = started
        for a, b in snapshot.gaps:
            if not before <= a < b <= last:
                raise ValueError("its downtimes are out of order")
            before = b
        for records, floor in snapshot.evictions:
            if not 0 <= floor <= last or any(not 0 <= stamp <= last for _, stamp in records):
                raise ValueError("an eviction is stamped after its last horizon")
        placed = []
        previous = -1
        nshards = len(shards)
        for stamp, topics, _, on_shards in snapshot.messages:
            if not previous < stamp <= last:
                raise ValueError("its messages are out of order, or after its last horizon")
            previous = stamp
            if not on_shards or len(set(on_shards)) != len(on_shards):
                raise ValueError(f"message {stamp} is held by no shard, or twice by one")
            mine = []
            for i in on_shards:
                if not 0 <= i < nshards:
                    raise ValueError(f"message {stamp} is held by shard {i}, which is none")
                shard_topics = tuple(t for t in topics if crc32(t) % nshards == i)
                if not shard_topics:
                    raise ValueError(f"message {stamp} is held by shard {i}, not its topics'")
                mine.append((i, shard_topics))
            placed.append(mine)
        return placed

    # -- introspection ---------------------------------------------------------

    def topic_count(self) -> int:
        return sum(len(shard.index) for shard in self.shards)

    def subscription_count(self) -> int:
        return sum(len(queues) for shard in self.shards for queues in shard.index.values())

    def topic_subscribers(self) -> list[tuple[bytes, int]]:
        """Each subscribed topic with its number of subscribers."""
        return [(t, len(queues)) for shard in self.shards for t, queues in shard.index.items()]

    def buffered(self) -> int:
        return sum(len(shard.history) for shard in self.shards)

    def buffered_bytes(self) -> int:
        """The retro buffers' charged bytes: payloads plus ``TOPIC_BYTES`` per topic."""
        return sum(shard.history.bytes for shard in self.shards)

    def evicted_for_bytes(self) -> int:
        """Messages the retro buffers evicted for their byte bound, not their count."""
        return sum(shard.history.evicted_for_bytes for shard in self.shards)
