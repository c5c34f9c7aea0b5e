"""The workloads, each run the same way against Kraken and against Redis.

Rule 1: each workload is bounded in time (its window) and in count (its limits),
and encodes what it sends before its window opens.
Rule 2: each checks its answer after the window: every expected delivery
arrived exactly once with the right topics, in publish order per publisher,
nothing else arrived, and every reply was the exact expected bytes. For Redis
the expectation follows its push semantics: one push per subscribed channel a
message was published to (a message on two topics is two ``PUBLISH``).

A "delivery" is one message reaching one subscriber: a Kraken poll entry, or
a Redis push.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from benchmarks.report import HIGHER, LOWER, Outcome, Window, latency_figures
from benchmarks.servers import ServerProcess
from benchmarks.wire import (
    STORED,
    Conn,
    KrakenPoller,
    KrakenPusher,
    RedisSubscriber,
    Requester,
    Shared,
    Sink,
    connect,
    kraken_entry,
    kraken_messages_reply,
    kraken_publish,
    kraken_set,
    redis_confirmations,
    resp,
)

ID_SPAN = 10**8  # message ids: publisher * ID_SPAN + sequence number
DRAIN_TIMEOUT = 60.0  # seconds the subscribers may take to receive everything after the window
MAX_ERRORS = 5  # errors quoted per run; the rest are counted


@dataclass
class Params:
    """Sizes of every workload; ``quick()`` scales them down for a smoke run."""

    quick: bool = False
    duration: float = 5.0  # seconds of each throughput window
    payload_bytes: int = 16
    # fanout
    fanout_subscribers: int = 200
    fanout_topics: int = 1_000
    fanout_topics_per_subscriber: int = 10
    fanout_publishers: int = 4
    fanout_batch: int = 50
    fanout_max_batches: int = 3_000  # per publisher
    fanout_sleep: float = 0.010  # seconds a poller sleeps after an empty poll
    # broadcast
    broadcast_subscribers: int = 500
    broadcast_rate: float = 1_000.0  # messages per second
    broadcast_sleep: float = 0.010
    # idle
    idle_sizes: tuple[int, ...] = (5_000, 10_000)
    idle_topics: int = 100_000
    idle_topics_per_connection: int = 20
    idle_period: float = 2.0  # seconds between two polls of one connection
    idle_rate: float = 100.0
    idle_duration: float = 10.0
    # churn
    churn_connections: int = 50
    churn_topics_per_op: int = 20
    churn_topic_space: int = 10_000
    churn_max_ops: int = 1_000_000  # per connection
    # retro
    retro_connections: int = 10
    retro_topics: int = 1_000
    retro_topics_per_op: int = 10
    retro_shards: int = 4
    retro_per_shard: int = 10_000
    retro_duration: float = 3.0

    @classmethod
    def quick_params(cls) -> Params:
        return cls(
            quick=True,
            duration=0.6,
            fanout_subscribers=50,
            fanout_max_batches=400,
            broadcast_subscribers=50,
            broadcast_rate=500.0,
            idle_sizes=(200,),
            idle_topics=10_000,
            idle_period=0.25,
            idle_duration=0.6,
            churn_connections=10,
            retro_connections=4,
            retro_per_shard=500,
            retro_duration=0.4,
        )


def payload(message_id: int, size: int) -> bytes:
    return (b"%010d" % message_id).ljust(size, b".")


def message_id(payload: bytes) -> int:
    return int(payload[:10])


class Failures:
    """The errors of one run: the first few quoted, all counted."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.count = 0

    def __call__(self, text: str) -> None:
        self.count += 1
        if self.count <= MAX_ERRORS:
            self.errors.append(text)

    def close(self) -> None:
        if self.count > MAX_ERRORS:
            self.errors.append(f"... and {self.count - MAX_ERRORS} more errors")


def labels(prefix: str) -> Callable[[], str]:
    counter = iter(range(1 << 62))
    return lambda: f"{prefix} {next(counter)}"


async def open_conns(
    shared: Shared, port: int, count: int, make: Callable[[Shared, str], Conn], prefix: str
) -> list[Conn]:
    label = labels(prefix)
    return await connect(lambda: make(shared, label()), count, port)


async def subscribe_all(
    kind: str, subscribers: Sequence[Conn], topics: Sequence[Sequence[bytes]], at_once: int = 500
) -> None:
    """Subscribe subscriber i to topics[i], ``at_once`` at a time, each reply checked."""

    async def one(conn: Conn, ts: Sequence[bytes]) -> None:
        if kind == "kraken":
            await conn.call(kraken_set(b"subscribe", b" ".join(ts)), STORED)
        else:
            await conn.call(resp(b"SUBSCRIBE", *ts), redis_confirmations(b"subscribe", ts, 1))

    for start in range(0, len(subscribers), at_once):
        end = start + at_once
        await asyncio.gather(
            *(one(c, t) for c, t in zip(subscribers[start:end], topics[start:end], strict=True))
        )


async def drain(shared: Shared, subscribers: Sequence[KrakenPoller | RedisSubscriber]) -> None:
    shared.drain(subscribers)
    try:
        await asyncio.wait_for(asyncio.shield(shared.drained), DRAIN_TIMEOUT)
    except TimeoutError:
        shared.error(f"subscribers not drained after {DRAIN_TIMEOUT:.0f} s: deliveries missing")


def check_deliveries(
    kind: str,
    subscribers: Sequence[KrakenPoller | RedisSubscriber],
    expected: list[dict[object, tuple[bytes, ...] | None]],
    sent_at: Callable[[int], float],
    fail: Failures,
) -> tuple[int, list[float]]:
    """Check every subscriber got exactly ``expected[i]``; return deliveries and latencies.

    Kraken: ``expected[i]`` maps message id -> the topics its entry must list.
    Redis: it maps (channel, message id) -> None. Each id must arrive in
    increasing order per publisher.
    """
    delivered = 0
    latencies: list[float] = []
    for i, subscriber in enumerate(subscribers):
        want = expected[i]
        last: dict[int, int] = {}
        try:
            if isinstance(subscriber, KrakenPoller | KrakenPusher):
                got = [
                    (t, topics, p) for t, entries in subscriber.entries() for topics, p in entries
                ]
            else:
                got = [(t, (channel,), p) for t, channel, p in subscriber.pushes()]
        except ValueError as error:
            fail(f"{subscriber.label}: {error}")
            continue
        for t, topics, data in got:
            mid = message_id(data)
            key: object = mid if kind == "kraken" else (topics[0], mid)
            topics_wanted = want.pop(key, False)
            if topics_wanted is False:
                fail(f"{subscriber.label}: unexpected or duplicate delivery {topics!r} {data!r}")
                continue
            if kind == "kraken" and topics_wanted != topics:
                fail(f"{subscriber.label}: message {mid} lists {topics!r}, not {topics_wanted!r}")
            publisher = mid // ID_SPAN
            # Redis pushes a message once per matching channel: the same id may repeat
            if last.get(publisher, -1) > mid or (kind == "kraken" and last.get(publisher) == mid):
                fail(f"{subscriber.label}: message {mid} out of publish order")
            last[publisher] = mid
            delivered += 1
            latencies.append(t - sent_at(mid))
        if want:
            fail(f"{subscriber.label}: {len(want)} expected deliveries missing")
    return delivered, latencies


def close_all(shared: Shared, conns: Sequence[Conn]) -> None:
    shared.closing = True
    for conn in conns:
        conn.close()


class Workload:
    name = ""
    servers: tuple[str, ...] = ("kraken", "redis")
    description = ""

    def kraken_options(self, params: Params) -> list[str]:
        return []

    def redis_max_clients(self, params: Params) -> int:
        return 10_500

    async def run(
        self, kind: str, server: ServerProcess, params: Params, profile: Path | None
    ) -> Outcome:
        raise NotImplementedError


# -- fanout ----------------------------------------------------------------------


class Fanout(Workload):
    """Subscribers on 10 of 1,000 topics each, publishers sending batches as fast as acked."""

    def __init__(self, sleep: bool, push: bool = False) -> None:
        self.sleep = sleep
        self.push = push  # Kraken's subscribers in push mode (set push): no polls
        if push:
            self.name = "fanout-push"
            self.description = "Kraken's subscribers in push mode (set push), not polling"
        else:
            self.name = "fanout" if sleep else "fanout-nosleep"
            self.description = (
                "pollers sleep after an empty poll"
                if sleep
                else "pollers never sleep (busy polling)"
            )
        self._prepared: tuple[object, ...] | None = None

    def prepare(
        self, params: Params
    ) -> tuple[list[list[bytes]], list[list[list[tuple[bytes, ...]]]]]:
        rng = random.Random(5)
        topics = [b"t%d" % i for i in range(params.fanout_topics)]
        subscriptions = [
            rng.sample(topics, params.fanout_topics_per_subscriber)
            for _ in range(params.fanout_subscribers)
        ]
        # batches[publisher][batch] = the topics of each message; payloads follow from ids
        batches = [
            [
                [tuple(rng.sample(topics, rng.randint(1, 2))) for _ in range(params.fanout_batch)]
                for _ in range(params.fanout_max_batches)
            ]
            for _ in range(params.fanout_publishers)
        ]
        return subscriptions, batches

    async def run(
        self, kind: str, server: ServerProcess, params: Params, profile: Path | None
    ) -> Outcome:
        if self._prepared is None:
            self._prepared = self.prepare(params)
        subscriptions, batches = self._prepared  # type: ignore[misc]
        outcome = Outcome()
        fail = Failures(outcome.errors)
        shared = Shared()
        size = params.fanout_batch
        subscribers_of: dict[bytes, list[int]] = {}
        for i, ts in enumerate(subscriptions):
            for t in ts:
                subscribers_of.setdefault(t, []).append(i)

        # encode every batch before the window
        requests: list[list[bytes]] = []
        replies: list[list[bytes]] = []
        for p, publisher_batches in enumerate(batches):
            reqs, reps = [], []
            for b, batch in enumerate(publisher_batches):
                base = p * ID_SPAN + b * size
                messages = [
                    (ts, payload(base + j, params.payload_bytes)) for j, ts in enumerate(batch)
                ]
                if kind == "kraken":
                    reqs.append(kraken_publish(messages))
                    reps.append(STORED)
                else:
                    reqs.append(b"".join(resp(b"PUBLISH", t, m) for ts, m in messages for t in ts))
                    reps.append(
                        b"".join(
                            b":%d\r\n" % len(subscribers_of.get(t, ()))
                            for ts, _ in messages
                            for t in ts
                        )
                    )
            requests.append(reqs)
            replies.append(reps)

        make_sub: type[Conn] = RedisSubscriber
        if kind == "kraken":
            make_sub = KrakenPusher if self.push else KrakenPoller
        subscribers = await open_conns(
            shared,
            server.port,
            len(subscriptions),
            lambda s, label: make_sub(s, label),
            "subscriber",
        )
        await subscribe_all(kind, subscribers, subscriptions)
        if kind == "kraken" and self.push:
            await asyncio.gather(*(s.push_mode() for s in subscribers))  # type: ignore[attr-defined]
        done = asyncio.get_running_loop().create_future()
        finished: list[Requester] = []

        def on_done(requester: Requester) -> None:
            finished.append(requester)
            if len(finished) == len(batches) and not done.done():
                done.set_result(None)

        publishers = [
            Requester(shared, f"publisher {p}", requests[p], replies[p], on_done)
            for p in range(len(batches))
        ]
        loop = asyncio.get_running_loop()
        for publisher in publishers:
            await loop.create_connection(lambda pub=publisher: pub, "127.0.0.1", server.port)

        with Window(server, profile) as window:
            deadline = perf_counter() + params.duration
            if kind == "kraken" and not self.push:
                for sub in subscribers:
                    sub.sleep = params.fanout_sleep if self.sleep else 0.0  # type: ignore[attr-defined]
                    sub.start()  # type: ignore[attr-defined]
            for publisher in publishers:
                publisher.start(deadline, len(requests[0]))
            try:
                await asyncio.wait_for(done, params.duration + DRAIN_TIMEOUT)
            except TimeoutError:
                shared.error("publishers did not finish: a reply is missing")
            await drain(shared, subscribers)  # type: ignore[arg-type]
        close_all(shared, [*subscribers, *publishers])
        for error in shared.errors:
            fail(error)

        # what should have arrived: every message of every acknowledged batch
        expected: list[dict[object, tuple[bytes, ...] | None]] = [{} for _ in subscriptions]
        sets = [set(ts) for ts in subscriptions]
        published = 0
        for p, publisher in enumerate(publishers):
            error = publisher.verify()
            if error:
                fail(error)
            for b in range(publisher.sent):
                for j, ts in enumerate(batches[p][b]):
                    mid = p * ID_SPAN + b * size + j
                    published += 1
                    if kind == "kraken":
                        hit = {s for t in ts for s in subscribers_of.get(t, ())}
                        for s in hit:
                            expected[s][mid] = tuple(t for t in ts if t in sets[s])
                    else:
                        for t in ts:
                            for s in subscribers_of.get(t, ()):
                                expected[s][(t, mid)] = None

        def sent_at(mid: int) -> float:
            return publishers[mid // ID_SPAN].sent_times[(mid % ID_SPAN) // size]

        delivered, latencies = check_deliveries(kind, subscribers, expected, sent_at, fail)  # type: ignore[arg-type]
        fail.close()
        add_delivery_figures(
            outcome, kind, subscribers, delivered, published, latencies, window, server
        )
        return outcome


def add_delivery_figures(
    outcome: Outcome,
    kind: str,
    subscribers: Sequence[Any],
    delivered: int,
    published: int,
    latencies: list[float],
    window: Window,
    server: ServerProcess,
    fraction: float | None = None,
) -> None:
    """The figures fanout and broadcast both report, in one order."""
    if kind == "kraken" and not isinstance(subscribers[0], KrakenPusher):
        polls = sum(s.polls for s in subscribers)
        outcome.add("polls per delivery", polls / delivered if delivered else None, LOWER)
    if fraction is not None:
        outcome.add("delivered fraction", fraction, HIGHER)
    outcome.add("messages published/s", published / window.wall, HIGHER)
    outcome.add("deliveries/s", delivered / window.wall, HIGHER)
    outcome.add("server CPU-s", window.server_cpu)
    outcome.add("server CPU % of a core", 100 * window.server_share, LOWER)
    outcome.add(
        "deliveries per server CPU-s",
        delivered / window.server_cpu if window.server_cpu else None,
        HIGHER,
    )
    outcome.figures += latency_figures("latency", latencies)
    outcome.add("server RSS MB", server.rss_bytes() / 2**20, LOWER)
    outcome.generator.append(("window", window.generator_share))


# -- broadcast -------------------------------------------------------------------


class Broadcast(Workload):
    name = "broadcast"
    description = "one topic, many subscribers, a paced publisher"

    async def run(
        self, kind: str, server: ServerProcess, params: Params, profile: Path | None
    ) -> Outcome:
        outcome = Outcome()
        fail = Failures(outcome.errors)
        shared = Shared()
        topic = b"broadcast"
        count = int(params.broadcast_rate * params.duration)
        n = params.broadcast_subscribers
        payloads = [payload(i, params.payload_bytes) for i in range(count)]
        if kind == "kraken":
            requests = [kraken_publish([((topic,), p)]) for p in payloads]
            reply_bytes = len(STORED) * count
        else:
            requests = [resp(b"PUBLISH", topic, p) for p in payloads]
            reply_bytes = len(b":%d\r\n" % n) * count
        make_sub = KrakenPoller if kind == "kraken" else RedisSubscriber
        subscribers = await open_conns(
            shared, server.port, n, lambda s, label: make_sub(s, label), "subscriber"
        )
        await subscribe_all(kind, subscribers, [[topic]] * n)
        loop = asyncio.get_running_loop()
        _, sink = await loop.create_connection(
            lambda: Sink(shared, "publisher"), "127.0.0.1", server.port
        )
        sent_times = [0.0] * count

        with Window(server, profile) as window:
            if kind == "kraken":
                for sub in subscribers:
                    sub.sleep = params.broadcast_sleep  # type: ignore[union-attr]
                    sub.start()  # type: ignore[union-attr]
            t0 = perf_counter()
            sent = 0
            write = sink.transport.write
            while sent < count:
                now = perf_counter()
                due = min(count, int((now - t0) * params.broadcast_rate) + 1)
                if due > sent:
                    write(b"".join(requests[sent:due]))
                    for i in range(sent, due):
                        sent_times[i] = now
                    sent = due
                await asyncio.sleep(0.001)
            try:
                await asyncio.wait_for(sink.all_replies(reply_bytes), DRAIN_TIMEOUT)
            except TimeoutError:
                shared.error("the publisher's replies are missing")
            await drain(shared, subscribers)  # type: ignore[arg-type]
        close_all(shared, [*subscribers, sink])
        for error in shared.errors:
            fail(error)
        acks = b"".join(sink.chunks)
        expected_acks = STORED * count if kind == "kraken" else b":%d\r\n" % n * count
        if acks != expected_acks:
            fail(f"publisher: replies differ from {expected_acks[:20]!r}...: {acks[:60]!r}")
        expected: list[dict[object, tuple[bytes, ...] | None]] = [
            dict.fromkeys(range(count), (topic,))
            if kind == "kraken"
            else dict.fromkeys((topic, i) for i in range(count))
            for _ in range(n)
        ]
        delivered, latencies = check_deliveries(
            kind,
            subscribers,
            expected,
            sent_times.__getitem__,
            fail,  # type: ignore[arg-type]
        )
        fail.close()
        add_delivery_figures(
            outcome,
            kind,
            subscribers,
            delivered,
            count,
            latencies,
            window,
            server,
            fraction=delivered / (count * n),
        )
        return outcome


# -- idle ------------------------------------------------------------------------


class Idle(Workload):
    """Many connections, each on 20 of 100,000 topics, polling every 2 s; a trickle published."""

    description = "mostly idle connections polling every 2 s (Redis: subscribed, pushed)"

    def __init__(self, size: int, push: bool = False) -> None:
        self.size = size
        self.push = push  # Kraken's connections in push mode: they never poll
        self.name = f"idle-push {size:,}" if push else f"idle {size:,}"
        if push:
            self.description = "mostly idle connections in push mode (set push), never polling"

    def kraken_options(self, params: Params) -> list[str]:
        return ["--max-tcp-clients", str(max(10_000, self.size + 100))]

    def redis_max_clients(self, params: Params) -> int:
        return max(10_500, self.size + 100)

    async def run(
        self, kind: str, server: ServerProcess, params: Params, profile: Path | None
    ) -> Outcome:
        outcome = Outcome()
        fail = Failures(outcome.errors)
        shared = Shared()
        rng = random.Random(7)
        topics = [b"i%d" % i for i in range(params.idle_topics)]
        per = params.idle_topics_per_connection
        subscriptions = [rng.sample(topics, per) for _ in range(self.size)]
        subscribers_of: dict[bytes, list[int]] = {}
        for i, ts in enumerate(subscriptions):
            for t in ts:
                subscribers_of.setdefault(t, []).append(i)
        count = int(params.idle_rate * params.idle_duration)
        message_topics = [rng.choice(topics) for _ in range(count)]
        payloads = [payload(i, params.payload_bytes) for i in range(count)]
        if kind == "kraken":
            requests = [
                kraken_publish([((t,), p)]) for t, p in zip(message_topics, payloads, strict=True)
            ]
            acks = [STORED] * count
        else:
            requests = [
                resp(b"PUBLISH", t, p) for t, p in zip(message_topics, payloads, strict=True)
            ]
            acks = [b":%d\r\n" % len(subscribers_of.get(t, ())) for t in message_topics]

        await asyncio.sleep(0.2)
        rss_base = server.rss_bytes()
        make_sub: type[Conn] = RedisSubscriber
        if kind == "kraken":
            make_sub = KrakenPusher if self.push else KrakenPoller
        subscribers = await open_conns(
            shared, server.port, self.size, lambda s, label: make_sub(s, label), "connection"
        )
        # one round trip each, so that the server holds every connection before measuring
        hello = resp(b"PING") if kind == "redis" else b"version\r\n"
        await asyncio.gather(
            *(c.call_until(hello, lambda b: b.endswith(b"\r\n")) for c in subscribers)
        )
        await asyncio.sleep(0.2)
        rss_connected = server.rss_bytes()
        await subscribe_all(kind, subscribers, subscriptions)
        if kind == "kraken" and self.push:
            await asyncio.gather(*(c.push_mode() for c in subscribers))  # type: ignore[attr-defined]
        await asyncio.sleep(0.2)
        rss_subscribed = server.rss_bytes()
        loop = asyncio.get_running_loop()
        _, sink = await loop.create_connection(
            lambda: Sink(shared, "publisher"), "127.0.0.1", server.port
        )
        sent_times = [0.0] * count

        with Window(server, profile) as window:
            if kind == "kraken" and not self.push:
                for sub in subscribers:
                    sub.period = params.idle_period  # type: ignore[union-attr]
                    sub.start(rng.random() * params.idle_period)  # type: ignore[union-attr]
            t0 = perf_counter()
            sent = 0
            write = sink.transport.write
            while sent < count:
                now = perf_counter()
                due = min(count, int((now - t0) * params.idle_rate) + 1)
                if due > sent:
                    write(b"".join(requests[sent:due]))
                    for i in range(sent, due):
                        sent_times[i] = now
                    sent = due
                await asyncio.sleep(0.005)
            await asyncio.sleep(max(0.0, t0 + params.idle_duration - perf_counter()))
        rss_end = server.rss_bytes()
        try:
            await asyncio.wait_for(sink.all_replies(sum(map(len, acks))), DRAIN_TIMEOUT)
        except TimeoutError:
            shared.error("the publisher's replies are missing")
        await drain(shared, subscribers)  # type: ignore[arg-type]
        close_all(shared, [*subscribers, sink])
        for error in shared.errors:
            fail(error)
        if b"".join(sink.chunks) != b"".join(acks):
            fail("publisher: replies differ from the expected ones")
        expected: list[dict[object, tuple[bytes, ...] | None]] = [{} for _ in subscriptions]
        for mid, t in enumerate(message_topics):
            for s in subscribers_of.get(t, ()):
                if kind == "kraken":
                    expected[s][mid] = (t,)
                else:
                    expected[s][(t, mid)] = None
        delivered, latencies = check_deliveries(
            kind,
            subscribers,
            expected,
            sent_times.__getitem__,
            fail,  # type: ignore[arg-type]
        )
        fail.close()
        outcome.add("server CPU % of a core", 100 * window.server_share, LOWER)
        outcome.add("server RSS MB", rss_end / 2**20, LOWER)
        outcome.add("RSS bytes per connection", (rss_connected - rss_base) / self.size, LOWER)
        outcome.add(
            "RSS bytes per subscription",
            (rss_subscribed - rss_connected) / (self.size * per),
            LOWER,
        )
        if kind == "kraken" and not self.push:
            rtts = [r for s in subscribers for r in s.rtts]  # type: ignore[union-attr]
            outcome.add("polls/s", len(rtts) / window.wall)
            outcome.figures += latency_figures("poll round trip", rtts)
        outcome.add("deliveries", delivered)
        outcome.figures += latency_figures("latency", latencies)
        outcome.generator.append(("window", window.generator_share))
        return outcome


# -- churn -----------------------------------------------------------------------


class Churn(Workload):
    name = "churn"
    description = "connections alternating subscribe and unsubscribe of 20 topics"

    async def run(
        self, kind: str, server: ServerProcess, params: Params, profile: Path | None
    ) -> Outcome:
        outcome = Outcome()
        fail = Failures(outcome.errors)
        shared = Shared()
        rng = random.Random(11)
        space = [b"c%d" % i for i in range(params.churn_topic_space)]
        per = params.churn_topics_per_op
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        finished: list[Requester] = []

        def on_done(requester: Requester) -> None:
            finished.append(requester)
            if len(finished) == params.churn_connections and not done.done():
                done.set_result(None)

        requesters = []
        for c in range(params.churn_connections):
            requests, replies = [], []
            for _ in range(16):
                ts = rng.sample(space, per)
                if kind == "kraken":
                    requests += [
                        kraken_set(b"subscribe", b" ".join(ts)),
                        kraken_set(b"unsubscribe", b" ".join(ts)),
                    ]
                    replies += [STORED, STORED]
                else:
                    requests += [resp(b"SUBSCRIBE", *ts), resp(b"UNSUBSCRIBE", *ts)]
                    replies += [
                        redis_confirmations(b"subscribe", ts, 1),
                        redis_confirmations(b"unsubscribe", ts, per - 1),
                    ]
            requester = Requester(shared, f"connection {c}", requests, replies, on_done)
            await loop.create_connection(lambda r=requester: r, "127.0.0.1", server.port)
            requesters.append(requester)

        with Window(server, profile) as window:
            deadline = perf_counter() + params.duration
            for requester in requesters:
                requester.start(deadline, params.churn_max_ops)
            try:
                await asyncio.wait_for(done, params.duration + DRAIN_TIMEOUT)
            except TimeoutError:
                shared.error("a churn connection did not finish: a reply is missing")
        close_all(shared, requesters)
        for error in shared.errors:
            fail(error)
        for requester in requesters:
            error = requester.verify()
            if error:
                fail(error)
        fail.close()
        ops = sum(r.sent for r in requesters)
        outcome.add("ops/s (subscribe or unsubscribe)", ops / window.wall, HIGHER)
        outcome.add("server CPU % of a core", 100 * window.server_share, LOWER)
        outcome.add(
            "ops per server CPU-s", ops / window.server_cpu if window.server_cpu else None, HIGHER
        )
        outcome.figures += latency_figures(
            "op latency", [x for r in requesters for x in r.latencies]
        )
        outcome.generator.append(("window", window.generator_share))
        return outcome


# -- retro -----------------------------------------------------------------------


class Retro(Workload):
    """register+subscribe, and retro_subscribe, against a full retro buffer (Kraken only)."""

    name = "retro"
    servers = ("kraken",)
    description = "register+subscribe and retro_subscribe against a full retro buffer"

    def kraken_options(self, params: Params) -> list[str]:
        return [
            "--num-router-shards",
            str(params.retro_shards),
            "--messages-stored-per-router-shard",
            str(params.retro_per_shard),
        ]

    async def run(
        self, kind: str, server: ServerProcess, params: Params, profile: Path | None
    ) -> Outcome:
        outcome = Outcome()
        fail = Failures(outcome.errors)
        shared = Shared()
        rng = random.Random(13)
        topics = [b"r%d" % i for i in range(params.retro_topics)]
        capacity = params.retro_shards * params.retro_per_shard
        loop = asyncio.get_running_loop()
        _, publisher = await loop.create_connection(
            lambda: Conn(shared, "publisher"), "127.0.0.1", server.port
        )

        async def publish(first: int, count: int) -> list[tuple[bytes, bytes]]:
            messages = [
                (rng.choice(topics), payload(first + i, params.payload_bytes)) for i in range(count)
            ]
            for start in range(0, count, 500):
                chunk = messages[start : start + 500]
                await publisher.call(kraken_publish([((t,), p) for t, p in chunk]), STORED)
            return messages

        # fill past capacity, take a horizon, then publish 80 % of capacity after it: the
        # buffer is full and (shards being balanced within 10 %) has lost nothing after it
        before = capacity * 5 // 4
        await publish(0, before)
        reply = await publisher.call_until(b"get horizon\r\n", lambda b: b.endswith(b"END\r\n"))
        horizon = reply.split(b"\r\n")[1]
        after = await publish(before, capacity * 4 // 5)

        per = params.retro_topics_per_op
        sets = [rng.sample(topics, per) for _ in range(32)]
        register_requests, register_replies = [], []
        retro_requests, retro_replies = [], []
        queued = 0
        for ts in sets:
            block = b" ".join(ts)
            register_requests.append(
                kraken_set(b"register", b"")
                + kraken_set(b"subscribe", block)
                + kraken_set(b"unsubscribe", block)
            )
            register_replies.append(STORED * 3)
            wanted = set(ts)
            entries = [kraken_entry((t,), p) for t, p in after if t in wanted]
            queued += len(entries)
            retro_requests.append(
                kraken_set(b"retro_subscribe", horizon + b"\r\n" + block)
                + b"get messages\r\n"
                + kraken_set(b"unsubscribe", block)
            )
            retro_replies.append(STORED + kraken_messages_reply(entries) + STORED)

        for phase, requests, replies in (
            ("register+subscribe", register_requests, register_replies),
            ("retro_subscribe", retro_requests, retro_replies),
        ):
            done = loop.create_future()
            finished: list[Requester] = []

            def on_done(
                requester: Requester,
                finished: list[Requester] = finished,
                done: asyncio.Future[None] = done,
            ) -> None:
                finished.append(requester)
                if len(finished) == params.retro_connections and not done.done():
                    done.set_result(None)

            requesters = []
            for c in range(params.retro_connections):
                offset = c * 7 % len(requests)
                r = Requester(
                    shared,
                    f"{phase} {c}",
                    requests[offset:] + requests[:offset],
                    replies[offset:] + replies[:offset],
                    on_done,
                )
                await loop.create_connection(lambda r=r: r, "127.0.0.1", server.port)
                requesters.append(r)
            phase_profile = (
                profile.with_name(f"{profile.stem}-{phase.replace('+', '-')}{profile.suffix}")
                if profile
                else None
            )
            with Window(server, phase_profile) as window:
                deadline = perf_counter() + params.retro_duration
                for r in requesters:
                    r.start(deadline, 1_000_000)
                try:
                    await asyncio.wait_for(done, params.retro_duration + DRAIN_TIMEOUT)
                except TimeoutError:
                    shared.error(f"{phase}: a reply is missing")
            for r in requesters:
                r.close()
            for r in requesters:
                error = r.verify()
                if error:
                    fail(error)
            ops = sum(r.sent for r in requesters)
            outcome.add(f"{phase}: ops/s", ops / window.wall, HIGHER)
            outcome.add(
                f"{phase}: ops per server CPU-s",
                ops / window.server_cpu if window.server_cpu else None,
                HIGHER,
            )
            outcome.figures += latency_figures(
                f"{phase}: op", [x for r in requesters for x in r.latencies]
            )
            outcome.generator.append((phase, window.generator_share))
        shared.closing = True
        publisher.close()
        for error in shared.errors:
            fail(error)
        fail.close()
        outcome.add("retro buffer, messages", capacity)
        outcome.add("messages queued per retro_subscribe", queued / len(sets))
        return outcome


def all_workloads(params: Params) -> list[Workload]:
    return [
        Fanout(sleep=True),
        Fanout(sleep=False),
        Fanout(sleep=True, push=True),
        Broadcast(),
        *(Idle(size) for size in params.idle_sizes),
        *(Idle(size, push=True) for size in params.idle_sizes),
        Churn(),
        Retro(),
    ]
