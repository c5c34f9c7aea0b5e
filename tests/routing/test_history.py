"""The retro buffer of one shard: what it keeps, and exactly what it has lost."""

from __future__ import annotations

import random

from kraken.routing import Message, RetroBuffer

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
