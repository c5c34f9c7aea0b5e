"""The retro buffer of one shard: what it keeps, and exactly what it has lost."""

from __future__ import annotations

import random
import sys

from kraken.routing import Message, RetroBuffer
from kraken.routing.history import TOPIC_BYTES

T0 = 1_800_000_000_000_000


def fill(buffer: RetroBuffer, topics_per_message: list[tuple[bytes, ...]]) -> list[Message]:
    messages = []
    for i, topics in enumerate(topics_per_message):
        message = Message(T0 + 1 + i, topics, b"%d" % i, 9)
        buffer.append(message, topics)
        messages.append(message)
    return messages


def test_the_buffer_never_holds_more_than_its_capacity():
    buffer = RetroBuffer(capacity=3)
    messages = fill(buffer, [(b"a",), (b"b",), (b"a", b"b"), (b"c",), (b"a",)])
    assert len(buffer) == 3
    kept = sorted({m.stamp for m in buffer.since(T0, [b"a", b"b", b"c"])})
    assert kept == [m.stamp for m in messages[-3:]]


def test_since_returns_the_messages_on_the_topics_asked_strictly_after_the_horizon():
    buffer = RetroBuffer(capacity=10)
    messages = fill(buffer, [(b"a",), (b"b",), (b"a", b"b"), (b"c",), (b"a",)])
    on_a = [m.payload for m in buffer.since(messages[0].stamp, [b"a"])]
    assert on_a == [b"2", b"4"]
    assert list(buffer.since(messages[-1].stamp, [b"a", b"b", b"c"])) == []


def test_lost_since_is_exact_per_topic():
    buffer = RetroBuffer(capacity=2)
    messages = fill(buffer, [(b"a",), (b"b",), (b"b",), (b"b",)])  # a's and one b's evicted
    lost_a, lost_b = messages[0].stamp, messages[1].stamp
    assert buffer.lost_since(lost_a - 1, (b"a",))
    assert not buffer.lost_since(lost_a, (b"a",))  # nothing on a after that is gone
    assert buffer.lost_since(lost_b - 1, (b"b",))
    assert not buffer.lost_since(lost_b, (b"b",))
    assert not buffer.lost_since(T0, (b"never",))  # nothing on it was ever evicted
    assert buffer.lost_since(lost_a, (b"never", b"b"))  # any requested topic counts


def test_evicting_a_message_on_several_topics_records_each_of_them():
    buffer = RetroBuffer(capacity=2)
    messages = fill(buffer, [(b"a", b"b"), (b"c",), (b"d",)])
    stamp = messages[0].stamp
    assert buffer.lost_since(stamp - 1, (b"a",)) and buffer.lost_since(stamp - 1, (b"b",))
    assert not buffer.lost_since(stamp - 1, (b"c",))


def test_the_eviction_memory_folds_into_the_floor_and_stays_conservative():
    buffer = RetroBuffer(capacity=2)
    messages = fill(buffer, [(b"a",), (b"b",), (b"c",), (b"d",), (b"e",)])
    # a, b and c were evicted: 3 records for a memory of 2, so a's folds into the floor
    assert buffer.floor == messages[0].stamp
    assert buffer.lost_since(messages[0].stamp - 1, (b"a",))  # still reported lost
    assert not buffer.lost_since(messages[0].stamp, (b"a",))
    # a topic without a record may have been folded: the floor answers for it
    assert buffer.lost_since(messages[0].stamp - 1, (b"never",))
    assert not buffer.lost_since(messages[0].stamp, (b"never",))
    # the topics still remembered keep their exact answer
    assert buffer.lost_since(messages[2].stamp - 1, (b"c",))
    assert not buffer.lost_since(messages[2].stamp, (b"c",))


def test_lost_since_is_never_too_rare_whatever_the_traffic():
    rng = random.Random(1234)
    topics = [b"t%d" % i for i in range(12)]
    for capacity in (1, 2, 3, 5, 8):
        buffer = RetroBuffer(capacity)
        evicted: list[Message] = []
        window: list[Message] = []
        for i in range(400):
            chosen = tuple(rng.sample(topics, rng.randint(1, 3)))
            message = Message(T0 + 1 + i, chosen, b"", 9)
            buffer.append(message, chosen)
            window.append(message)
            if len(window) > capacity:
                evicted.append(window.pop(0))
            assert len(buffer) == len(window)
            for _ in range(5):
                horizon = T0 + rng.randint(0, i + 1)
                asked = tuple(rng.sample(topics, rng.randint(1, 3)))
                truly_lost = any(
                    m.stamp > horizon and not set(asked).isdisjoint(m.topics) for m in evicted
                )
                if truly_lost:
                    assert buffer.lost_since(horizon, asked), (capacity, i, horizon, asked)
                kept = {m.stamp for m in buffer.since(horizon, asked)}
                expected = {
                    m.stamp
                    for m in window
                    if m.stamp > horizon and not set(asked).isdisjoint(m.topics)
                }
                assert kept == expected


def test_lost_since_is_exact_while_the_eviction_memory_has_room():
    buffer = RetroBuffer(capacity=4)
    messages = fill(buffer, [(b"a",), (b"b",), (b"a",), (b"b",), (b"c",), (b"c",), (b"c",)])
    # evicted: a@1, b@2, a@3 -- two topics remembered, well within the memory
    assert buffer.floor == 0
    assert buffer.lost_since(messages[2].stamp - 1, (b"a",))
    assert not buffer.lost_since(messages[2].stamp, (b"a",))
    assert not buffer.lost_since(messages[1].stamp, (b"b",))
    assert not buffer.lost_since(T0, (b"c",))


def test_reads_stay_exact_per_topic_after_many_evictions():
    # long enough for each topic's log to drop its evicted head more than once
    buffer = RetroBuffer(capacity=100)
    messages = fill(buffer, [(b"even",) if i % 2 == 0 else (b"odd",) for i in range(1000)])
    assert len(buffer) == 100
    odd = [m.payload for m in buffer.since(messages[949].stamp, [b"odd"])]
    assert odd == [b"%d" % i for i in range(951, 1000, 2)]
    both = sorted(m.stamp for m in buffer.since(messages[995].stamp, [b"odd", b"even"]))
    assert both == [m.stamp for m in messages[996:]]
    assert buffer.lost_since(messages[898].stamp, [b"odd"])
    assert not buffer.lost_since(messages[899].stamp, [b"odd"])


# -- the byte bound ------------------------------------------------------------------


def charge(message: Message, topics: tuple[bytes, ...]) -> int:
    return len(message.payload) + TOPIC_BYTES * len(topics)


def publish(buffer: RetroBuffer, i: int, topics: tuple[bytes, ...], size: int) -> Message:
    message = Message(T0 + 1 + i, topics, b"x" * size, 9)
    buffer.append(message, topics)
    return message


def test_each_message_is_charged_its_payload_and_a_fixed_sum_per_topic():
    buffer = RetroBuffer(capacity=10, max_bytes=1 << 20)
    publish(buffer, 0, (b"a",), 100)
    publish(buffer, 1, (b"a", b"b", b"c"), 0)
    assert buffer.bytes == 100 + TOPIC_BYTES + 3 * TOPIC_BYTES
    assert buffer.evicted_for_bytes == 0


def test_the_buffer_never_holds_more_charged_bytes_than_its_bound():
    bound = 3 * (1000 + TOPIC_BYTES)  # three 1000-byte messages on one topic each
    buffer = RetroBuffer(capacity=100, max_bytes=bound)
    messages = [publish(buffer, i, (b"t%d" % (i % 2),), 1000) for i in range(5)]
    assert len(buffer) == 3
    assert buffer.bytes == bound
    assert buffer.evicted_for_bytes == 2
    kept = sorted(m.stamp for m in buffer.since(T0, [b"t0", b"t1"]))
    assert kept == [m.stamp for m in messages[2:]]
    # a bigger message pushes out as many of the oldest as it needs, and no more
    publish(buffer, 5, (b"t0",), 1900)
    assert len(buffer) == 2
    assert buffer.bytes == 1000 + 1900 + 2 * TOPIC_BYTES <= bound
    assert buffer.evicted_for_bytes == 4


def test_a_message_naming_many_topics_is_charged_for_each_and_evicts_for_them():
    buffer = RetroBuffer(capacity=100, max_bytes=10 * TOPIC_BYTES)
    small = publish(buffer, 0, (b"s",), 0)
    wide = tuple(b"w%d" % i for i in range(9))
    publish(buffer, 1, wide, 0)  # 10 topics in all: exactly the bound
    assert len(buffer) == 2 and buffer.bytes == 10 * TOPIC_BYTES
    publish(buffer, 2, (b"s",), 0)  # one topic over: the oldest goes, and it is enough
    assert len(buffer) == 2 and buffer.bytes == 10 * TOPIC_BYTES
    assert buffer.lost_since(small.stamp - 1, (b"s",))
    assert not buffer.lost_since(T0, wide)


def test_a_message_charged_more_than_the_bound_is_not_kept_and_counts_as_lost():
    buffer = RetroBuffer(capacity=100, max_bytes=1000)
    before = publish(buffer, 0, (b"a",), 10)
    huge = publish(buffer, 1, (b"a", b"b"), 5000)
    assert len(buffer) == 0 and buffer.bytes == 0
    assert buffer.lost_since(before.stamp, (b"b",))  # huge, on b after that horizon, is gone
    assert buffer.lost_since(before.stamp, (b"a",))
    assert not buffer.lost_since(huge.stamp, (b"a", b"b"))
    after = publish(buffer, 2, (b"a",), 10)  # the buffer takes messages again at once
    assert [m.stamp for m in buffer.since(huge.stamp, [b"a"])] == [after.stamp]


def test_evicting_for_the_count_is_not_counted_as_evicting_for_bytes():
    buffer = RetroBuffer(capacity=2, max_bytes=1 << 20)
    for i in range(5):
        publish(buffer, i, (b"a",), 10)
    assert len(buffer) == 2
    assert buffer.evicted_for_bytes == 0
    assert buffer.bytes == 2 * (10 + TOPIC_BYTES)


def test_lost_since_is_exact_under_both_bounds_whatever_the_traffic():
    """Against a reference window: the newest messages that fit both bounds. While
    the eviction memory has room (no fold into the floor), lost_since is exactly
    "a message on an asked topic after the horizon is gone"; after a fold it may
    say lost more often, never less; and since() gives exactly the window."""
    rng = random.Random(4321)
    topics = [b"t%d" % i for i in range(10)]
    for capacity, max_bytes in ((50, 2000), (50, 5000), (4, 3000), (1000, 700)):
        buffer = RetroBuffer(capacity, max_bytes)
        evicted: list[tuple[Message, int]] = []
        window: list[tuple[Message, int]] = []
        for i in range(300):
            chosen = tuple(rng.sample(topics, rng.randint(1, 4)))
            size = rng.choice((0, 10, 100, 500, 1500))
            message = publish(buffer, i, chosen, size)
            window.append((message, charge(message, chosen)))
            while len(window) > capacity or sum(c for _, c in window) > max_bytes:
                evicted.append(window.pop(0))
            assert len(buffer) == len(window)
            assert buffer.bytes == sum(c for _, c in window) <= max_bytes
            for _ in range(5):
                horizon = T0 + rng.randint(0, i + 1)
                asked = tuple(rng.sample(topics, rng.randint(1, 3)))
                truly_lost = any(
                    m.stamp > horizon and not set(asked).isdisjoint(m.topics) for m, _ in evicted
                )
                said_lost = buffer.lost_since(horizon, asked)
                if buffer.floor == 0:
                    assert said_lost == truly_lost, (capacity, max_bytes, i, horizon, asked)
                elif truly_lost:
                    assert said_lost, (capacity, max_bytes, i, horizon, asked)
                kept = {m.stamp for m in buffer.since(horizon, asked)}
                expected = {
                    m.stamp
                    for m, _ in window
                    if m.stamp > horizon and not set(asked).isdisjoint(m.topics)
                }
                assert kept == expected
        assert buffer.evicted_for_bytes > 0


def test_an_evicted_message_is_let_go_at_once_not_when_its_topic_log_is_trimmed():
    buffer = RetroBuffer(capacity=100, max_bytes=1 << 20)
    first = publish(buffer, 0, (b"a", b"b"), 1000)
    held = sys.getrefcount(first)
    for i in range(1, 100):  # under both bounds: kept
        publish(buffer, i, (b"a",), 1000)
    assert sys.getrefcount(first) == held
    for i in range(100, 110):  # past the count: the first ten are evicted, a's log not trimmed
        publish(buffer, i, (b"a",), 1000)
    assert sys.getrefcount(first) == held - 3  # the buffer's entry and both topic logs
    assert [m.payload[:1] for m in buffer.since(T0, [b"a"])] == [b"x"] * 100
