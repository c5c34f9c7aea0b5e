"""The router in memory, no event loop: routing rules, retroactivity, limits.

Time is passed in as Unix microseconds; T0 is the router's start."""

from __future__ import annotations

import subprocess
import sys

from kraken.routing import ClientQueue, HorizonClock, Message, RetroBuffer, Router

from .shards import distinct_shard_topics

T0 = 1_800_000_000_000_000


def queue(qid: int, max_messages: int = 1000, max_bytes: int = 1 << 20, overflow=None):
    return ClientQueue(qid, max_messages, max_bytes, overflow)


def drained(q: ClientQueue) -> list[tuple[tuple[bytes, ...], bytes]]:
    out = []
    for d in q.drain():
        message, topics = (d, d.topics) if isinstance(d, Message) else d
        out.append((topics, message.payload))
    return out


def test_one_delivery_per_subscriber_listing_matched_topics_in_message_order():
    router = Router(T0)
    a, b, c = distinct_shard_topics(router, 3)
    sub = queue(1)
    router.subscribe(sub, (c, a), T0)
    router.publish(9, (a, b, c), b"m", T0 + 1)
    assert drained(sub) == [((a, c), b"m")]


def test_publisher_never_receives_its_own_message():
    router = Router(T0)
    me, other = queue(1), queue(2)
    router.subscribe(me, (b"x",), T0)
    router.subscribe(other, (b"x",), T0)
    router.publish(1, (b"x", b"y"), b"own", T0 + 1)
    assert drained(me) == [] and drained(other) == [((b"x",), b"own")]


def test_subscribe_to_one_topic_more_than_once_delivers_once():
    router = Router(T0)
    sub = queue(1)
    router.subscribe(sub, (b"x",), T0)
    router.subscribe(sub, (b"x",), T0)
    router.publish(9, (b"x",), b"m", T0 + 1)
    assert drained(sub) == [((b"x",), b"m")]


def test_topic_whose_last_subscriber_leaves_is_forgotten():
    router = Router(T0)
    a, b = queue(1), queue(2)
    router.subscribe(a, (b"x", b"y"), T0)
    router.subscribe(b, (b"x",), T0)
    router.unsubscribe(a, (b"y", b"never"))
    assert router.topic_count() == 1
    router.remove(b)
    router.remove(a)
    assert router.topic_count() == 0
    router.publish(9, (b"x",), b"m", T0 + 1)  # nobody left: nothing breaks


def test_register_then_subscribe_replays_since_the_register_only_once():
    router = Router(T0)
    sub = queue(1)
    router.publish(9, (b"x",), b"before", T0 + 1)
    router.register(sub, T0 + 2)
    router.publish(9, (b"x",), b"after", T0 + 3)
    assert router.subscribe(sub, (b"x",), T0 + 4) is True
    assert drained(sub) == [((b"x",), b"after")]
    router.publish(9, (b"y",), b"later", T0 + 5)
    router.subscribe(sub, (b"y",), T0 + 6)  # the horizon was used up
    assert drained(sub) == []


def test_retro_never_delivers_twice_what_a_live_or_earlier_retro_subscription_got():
    router = Router(T0)
    sub = queue(1)
    horizon = router.horizon(T0 + 1)
    router.subscribe(sub, (b"a",), T0 + 2)
    router.publish(9, (b"a", b"b"), b"live", T0 + 3)
    router.publish(9, (b"b",), b"b only", T0 + 4)
    assert drained(sub) == [((b"a",), b"live")]
    assert router.retro_subscribe(sub, horizon, (b"a", b"b"), T0 + 5)
    assert drained(sub) == [((b"b",), b"b only")]
    assert router.retro_subscribe(sub, horizon, (b"b",), T0 + 6)
    assert drained(sub) == []


def test_retro_messages_are_merged_in_publish_order_with_queued_live_ones():
    router = Router(T0)
    sub = queue(1)
    horizon = router.horizon(T0)
    router.subscribe(sub, (b"live",), T0 + 1)
    router.publish(9, (b"old",), b"1", T0 + 2)
    router.publish(9, (b"live",), b"2", T0 + 3)
    router.publish(9, (b"old",), b"3", T0 + 4)
    router.retro_subscribe(sub, horizon, (b"old",), T0 + 5)
    assert [p for _, p in drained(sub)] == [b"1", b"2", b"3"]


def test_not_found_is_exact_per_topic_and_still_subscribes():
    router = Router(T0, num_shards=1, messages_per_shard=3)
    horizon = router.horizon(T0)
    router.publish(9, (b"quiet",), b"q", T0 + 1)
    for i in range(3):
        router.publish(9, (b"busy",), b"%d" % i, T0 + 2 + i)  # evicts "quiet"'s message
    lost, kept = queue(1), queue(2)
    assert router.retro_subscribe(lost, horizon, (b"quiet",), T0 + 9) is False
    assert router.retro_subscribe(kept, horizon, (b"busy",), T0 + 9) is True
    assert drained(lost) == [] and len(drained(kept)) == 3
    router.publish(9, (b"quiet",), b"live", T0 + 10)
    assert drained(lost) == [((b"quiet",), b"live")]


def test_horizon_before_the_start_is_not_found():
    router = Router(T0)
    assert router.retro_subscribe(queue(1), T0 - 1, (b"x",), T0 + 1) is False
    assert router.retro_subscribe(queue(2), T0, (b"x",), T0 + 1) is True


def test_retro_buffer_folds_its_eviction_memory_conservatively():
    buffer = RetroBuffer(capacity=2)
    for i, topic in enumerate([b"a", b"b", b"c", b"d", b"e"]):
        buffer.append(Message(T0 + i, (topic,), b"", 9), (topic,))
    # a, b, c evicted; records for 2 topics kept, the oldest folded into the floor
    assert buffer.lost_since(T0 - 1, (b"a",))  # folded: still reported lost
    assert buffer.lost_since(T0 + 1, (b"c",))
    assert not buffer.lost_since(T0 + 2, (b"c",))  # nothing on c after its eviction
    assert not buffer.lost_since(T0 + 2, (b"d",))


def test_clock_stamps_strictly_increase_and_follow_the_horizon():
    clock = HorizonClock(T0)
    assert [clock.stamp(T0 + 5) for _ in range(3)] == [T0 + 5, T0 + 6, T0 + 7]
    assert clock.stamp(T0) == T0 + 8  # the wall clock stepped back
    horizon = clock.horizon(T0 + 100)
    assert horizon == T0 + 100 and clock.stamp(T0 + 100) == T0 + 101
    assert clock.horizon(T0) == T0 + 101  # never decreases


def test_queue_holds_exactly_its_limit_and_the_next_makes_it_a_slow_consumer():
    calls = []
    sub = queue(1, max_messages=2, max_bytes=10, overflow=lambda: calls.append(1))
    router = Router(T0)
    router.subscribe(sub, (b"x",), T0)
    router.publish(9, (b"x",), b"12345", T0 + 1)
    router.publish(9, (b"x",), b"12345", T0 + 2)  # 2 messages, 10 bytes: full, not over
    assert len(sub.entries) == 2 and calls == []
    router.publish(9, (b"x",), b"1", T0 + 3)
    assert calls == [1] and sub.entries == [] and sub.dead
    router.publish(9, (b"x",), b"1", T0 + 4)
    assert calls == [1]  # told once


def test_wire_and_routing_load_no_asyncio_or_socket():
    code = (
        "import sys, kraken.wire, kraken.routing;"
        "print(sorted(m for m in ('asyncio', 'socket') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_retro_buffer_reads_per_topic_after_many_evictions():
    buffer = RetroBuffer(capacity=100)
    for i in range(1000):
        topic = b"even" if i % 2 == 0 else b"odd"
        buffer.append(Message(T0 + i, (topic,), b"%d" % i, 9), (topic,))
    assert len(buffer) == 100
    odd = [m.payload for m in buffer.since(T0 + 949, [b"odd"])]
    assert odd == [b"%d" % i for i in range(951, 1000, 2)]
    both = sorted(m.stamp - T0 for m in buffer.since(T0 + 995, [b"odd", b"even"]))
    assert both == [996, 997, 998, 999]
    assert buffer.lost_since(T0 + 898, [b"odd"]) and not buffer.lost_since(T0 + 899, [b"odd"])
