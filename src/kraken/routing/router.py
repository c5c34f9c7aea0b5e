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
from typing import Protocol
from zlib import crc32

from kraken.routing.clock import HorizonClock
from kraken.routing.history import RetroBuffer
from kraken.routing.message import Delivery, Message
from kraken.routing.queue import ClientQueue, stamp_of
from kraken.types import Topics

log = logging.getLogger("kraken.router")

WARN_INTERVAL = 10_000_000  # microseconds between two fan-out warnings of one kind


class InterestListener(Protocol):
    """Told when topics gain their first subscriber, or lose their last one."""

    def interest_gained(self, topics: Topics) -> None: ...

    def interest_lost(self, topics: Topics) -> None: ...


class RouterShard:
    """Part of the topic index (topic -> subscribers) and its retro buffer."""

    __slots__ = ("history", "index")

    def __init__(self, capacity: int) -> None:
        self.index: dict[bytes, set[ClientQueue]] = {}
        self.history = RetroBuffer(capacity)


class Router:
    def __init__(
        self,
        now: int,
        num_shards: int = 4,
        messages_per_shard: int = 10_000,
        min_fanout_to_warn: int = 1_000,
        min_topics_to_warn: int = 1_000,
    ) -> None:
        self.started = now
        self.clock = HorizonClock(now)
        self.shards = [RouterShard(messages_per_shard) for _ in range(num_shards)]
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
        if horizon < self.started or any(
            shard.history.lost_since(horizon, tuple(ts)) for shard, ts in groups.items()
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
