"""The router in memory: routing rules, retroactivity and slow consumers.

The router is synchronous; time is passed in as Unix microseconds. T0 is when
the router starts; a publisher id that no test queue uses is OTHER.
"""

from __future__ import annotations

from kraken.routing import ClientQueue, Message, Router

from .shards import distinct_shard_topics, same_shard_topics

T0 = 1_800_000_000_000_000
OTHER = 99  # a publisher with no queue of its own in these tests


def new_queue(qid, max_messages=1000, max_bytes=1 << 20, on_overflow=None):
    return ClientQueue(qid, max_messages, max_bytes, on_overflow)


def entries(queue: ClientQueue) -> list[tuple[tuple[bytes, ...], bytes]]:
    """Drain a queue into (matched topics, payload) pairs, oldest first."""
    out = []
    for delivery in queue.drain():
        if isinstance(delivery, Message):
            out.append((delivery.topics, delivery.payload))
        else:
            message, matched = delivery
            out.append((matched, message.payload))
    return out


def payloads(queue: ClientQueue) -> list[bytes]:
    return [payload for _, payload in entries(queue)]


# -- routing rules -------------------------------------------------------------


def test_PUBLISH_to_several_topics_reaches_a_subscriber_once_listing_the_matched_ones():
    router = Router(T0, num_shards=4)
    a, b, c, d = distinct_shard_topics(router, 4)
    sub = new_queue(1)
    router.subscribe(sub, (c, a, b), T0)
    router.publish(OTHER, (a, b, c, d), b"m", T0 + 1)
    assert entries(sub) == [((a, b, c), b"m")]


def test_matched_topics_follow_the_message_order_when_shards_group_them_differently():
    router = Router(T0, num_shards=4)
    a, c = same_shard_topics(router, 2)
    b, d = same_shard_topics(router, 2, avoid=a)
    assert router.shard_of(a) is router.shard_of(c)
    assert router.shard_of(b) is not router.shard_of(a)
    sub = new_queue(1)
    router.subscribe(sub, (a, b, c), T0)
    # grouped by shard the hits would read a, c, b; the message names a, b, c
    router.publish(OTHER, (a, b, c, d), b"m", T0 + 1)
    assert entries(sub) == [((a, b, c), b"m")]


def test_a_subscriber_of_every_topic_of_a_message_gets_all_of_them():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    sub = new_queue(1)
    router.subscribe(sub, (a, b, c), T0)
    router.publish(OTHER, (c, a, b), b"m", T0 + 1)
    assert entries(sub) == [((c, a, b), b"m")]


def test_PUBLISH_reaches_every_subscriber_of_any_of_its_topics_and_no_one_else():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    on_a, on_b, on_c = new_queue(1), new_queue(2), new_queue(3)
    router.subscribe(on_a, (a,), T0)
    router.subscribe(on_b, (b,), T0)
    router.subscribe(on_c, (c,), T0)
    router.publish(OTHER, (a, b), b"m", T0 + 1)
    assert entries(on_a) == [((a,), b"m")]
    assert entries(on_b) == [((b,), b"m")]
    assert entries(on_c) == []


def test_the_publisher_never_receives_its_own_message():
    router = Router(T0, num_shards=4)
    a, b = distinct_shard_topics(router, 2)
    me, other = new_queue(1), new_queue(2)
    for q in (me, other):
        router.subscribe(q, (a, b), T0)
    router.publish(me.id, (a,), b"one topic", T0 + 1)
    router.publish(me.id, (a, b), b"two topics", T0 + 2)
    assert entries(me) == []
    assert payloads(other) == [b"one topic", b"two topics"]


def test_messages_of_several_publishers_arrive_in_publish_order():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    sub = new_queue(1)
    router.subscribe(sub, (a, b, c), T0)
    sent = []
    for i in range(30):
        publisher = 10 + i % 3
        topics = [(a,), (b, c), (c, a, b)][i % 3]
        payload = b"%d" % i
        router.publish(publisher, topics, payload, T0 + 1)  # one microsecond for all
        sent.append(payload)
    assert payloads(sub) == sent


def test_SUBSCRIBE_to_one_topic_more_than_once_is_the_same_as_once():
    router = Router(T0)
    sub = new_queue(1)
    router.subscribe(sub, (b"x",), T0)
    router.subscribe(sub, (b"x", b"x"), T0 + 1)
    assert router.topic_count() == 1
    router.publish(OTHER, (b"x",), b"m", T0 + 2)
    assert entries(sub) == [((b"x",), b"m")]
    router.unsubscribe(sub, (b"x",))  # one unsubscribe undoes it all
    router.publish(OTHER, (b"x",), b"n", T0 + 3)
    assert entries(sub) == []
    assert router.topic_count() == 0


def test_UNSUBSCRIBE_from_a_topic_not_subscribed_is_a_no_op():
    router = Router(T0)
    mine, theirs = new_queue(1), new_queue(2)
    router.subscribe(mine, (b"x",), T0)
    router.subscribe(theirs, (b"y",), T0)
    router.unsubscribe(mine, (b"y", b"never-seen"))
    assert router.topic_count() == 2
    assert set(mine.subscriptions) == {b"x"}
    router.publish(OTHER, (b"x", b"y"), b"m", T0 + 1)
    assert entries(mine) == [((b"x",), b"m")]
    assert entries(theirs) == [((b"y",), b"m")]


def test_SUBSCRIBE_to_no_topic_at_all_changes_nothing():
    router = Router(T0)
    sub = new_queue(1)
    assert router.subscribe(sub, (), T0) is True
    assert router.topic_count() == 0 and sub.subscriptions == {}


def test_SUBSCRIBE_to_no_topic_keeps_a_pending_register_horizon():
    router = Router(T0)
    sub = new_queue(1)
    router.register(sub, T0 + 1)
    router.publish(OTHER, (b"x",), b"m", T0 + 2)
    assert router.subscribe(sub, (), T0 + 3) is True
    assert router.subscribe(sub, (b"x",), T0 + 4) is True
    assert entries(sub) == [((b"x",), b"m")]


def test_a_topic_whose_last_subscriber_unsubscribes_is_forgotten():
    router = Router(T0, num_shards=4)
    a, b = distinct_shard_topics(router, 2)
    one, two = new_queue(1), new_queue(2)
    router.subscribe(one, (a, b), T0)
    router.subscribe(two, (a,), T0)
    assert router.topic_count() == 2
    router.unsubscribe(one, (a, b))
    assert router.topic_count() == 1
    router.unsubscribe(two, (a,))
    assert router.topic_count() == 0


def test_remove_drops_every_subscription_and_the_queue():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    gone, stays = new_queue(1), new_queue(2)
    router.subscribe(gone, (a, b, c), T0)
    router.subscribe(stays, (a,), T0)
    router.publish(OTHER, (a,), b"queued", T0 + 1)
    router.remove(gone)
    assert router.topic_count() == 1  # b and c had no other subscriber
    assert gone.subscriptions == {} and gone.entries == []
    router.publish(OTHER, (a, b, c), b"after", T0 + 2)
    assert gone.entries == []
    assert payloads(stays) == [b"queued", b"after"]
    router.remove(stays)
    assert router.topic_count() == 0


# -- retroactivity -------------------------------------------------------------


def test_register_then_SUBSCRIBE_queues_the_buffered_messages_since_the_register():
    router = Router(T0, num_shards=4)
    x, y = distinct_shard_topics(router, 2)
    sub = new_queue(1)
    router.publish(OTHER, (x,), b"before", T0 + 1)
    router.register(sub, T0 + 2)
    router.publish(OTHER, (x,), b"after x", T0 + 3)
    router.publish(OTHER, (y,), b"after y", T0 + 4)
    router.publish(OTHER, (x, y), b"after both", T0 + 5)
    assert router.subscribe(sub, (x,), T0 + 6) is True
    assert entries(sub) == [((x,), b"after x"), ((x,), b"after both")]
    assert sub.horizon is None


def test_only_the_first_SUBSCRIBE_after_a_register_is_retroactive():
    router = Router(T0)
    sub = new_queue(1)
    router.register(sub, T0 + 1)
    router.publish(OTHER, (b"x",), b"x", T0 + 2)
    router.publish(OTHER, (b"y",), b"y", T0 + 3)
    assert router.subscribe(sub, (b"x",), T0 + 4)
    assert payloads(sub) == [b"x"]
    assert router.subscribe(sub, (b"y",), T0 + 5)
    assert payloads(sub) == []


def test_register_does_not_miss_a_message_published_in_the_same_microsecond():
    router = Router(T0)
    sub = new_queue(1)
    router.publish(OTHER, (b"x",), b"before", T0 + 1)
    router.register(sub, T0 + 1)
    router.publish(OTHER, (b"x",), b"after", T0 + 1)
    router.subscribe(sub, (b"x",), T0 + 1)
    assert payloads(sub) == [b"after"]


def test_a_second_register_replaces_the_first():
    router = Router(T0)
    sub = new_queue(1)
    router.register(sub, T0 + 1)
    router.publish(OTHER, (b"x",), b"between", T0 + 2)
    router.register(sub, T0 + 3)
    router.publish(OTHER, (b"x",), b"after", T0 + 4)
    assert router.subscribe(sub, (b"x",), T0 + 5)
    assert payloads(sub) == [b"after"]


def test_RETRO_SUBSCRIBE_queues_what_was_published_strictly_after_its_horizon():
    router = Router(T0)
    sub = new_queue(1)
    first = router.publish(OTHER, (b"x",), b"1", T0 + 10)
    router.publish(OTHER, (b"x",), b"2", T0 + 20)
    router.publish(OTHER, (b"x",), b"3", T0 + 30)
    assert router.retro_subscribe(sub, first.stamp, (b"x",), T0 + 40) is True
    assert payloads(sub) == [b"2", b"3"]
    router.publish(OTHER, (b"x",), b"4", T0 + 50)  # and the subscription is live
    assert payloads(sub) == [b"4"]


def test_RETRO_SUBSCRIBE_lists_the_requested_topics_a_message_carries_once():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    sub = new_queue(1)
    router.publish(OTHER, (a, b, c), b"m", T0 + 1)
    assert router.retro_subscribe(sub, T0, (c, a), T0 + 2)
    assert entries(sub) == [((a, c), b"m")]


def test_RETRO_SUBSCRIBE_never_queues_the_connections_own_messages():
    router = Router(T0, num_shards=4)
    a, b = distinct_shard_topics(router, 2)
    me = new_queue(1)
    router.publish(me.id, (a,), b"mine", T0 + 1)
    router.publish(me.id, (a, b), b"mine too", T0 + 2)
    router.publish(OTHER, (a,), b"theirs", T0 + 3)
    assert router.retro_subscribe(me, T0, (a, b), T0 + 4)
    assert payloads(me) == [b"theirs"]
    router.register(me, T0 + 5)
    router.publish(me.id, (a,), b"mine again", T0 + 6)
    assert router.subscribe(me, (b,), T0 + 7)
    assert payloads(me) == []


def test_RETRO_SUBSCRIBE_skips_a_message_already_delivered_live_via_another_topic():
    router = Router(T0, num_shards=4)
    a, b = distinct_shard_topics(router, 2)
    sub = new_queue(1)
    router.subscribe(sub, (a,), T0 + 1)
    router.publish(OTHER, (a, b), b"live", T0 + 2)
    router.publish(OTHER, (b,), b"b only", T0 + 3)
    assert entries(sub) == [((a,), b"live")]
    assert router.retro_subscribe(sub, T0, (b,), T0 + 4)
    assert entries(sub) == [((b,), b"b only")]


def test_RETRO_SUBSCRIBE_skips_messages_queued_by_an_earlier_one_of_the_same_topics():
    router = Router(T0, num_shards=4)
    a, b = distinct_shard_topics(router, 2)
    sub = new_queue(1)
    router.publish(OTHER, (a,), b"1", T0 + 1)
    router.publish(OTHER, (b,), b"2", T0 + 2)
    assert router.retro_subscribe(sub, T0, (a, b), T0 + 3)
    assert payloads(sub) == [b"1", b"2"]
    assert router.retro_subscribe(sub, T0, (a, b), T0 + 4)
    assert router.retro_subscribe(sub, T0, (b,), T0 + 5)
    assert payloads(sub) == []


def test_RETRO_SUBSCRIBE_after_a_live_one_queues_only_what_the_live_one_missed():
    router = Router(T0)
    sub = new_queue(1)
    router.publish(OTHER, (b"x",), b"missed", T0 + 1)
    router.subscribe(sub, (b"x",), T0 + 2)
    router.publish(OTHER, (b"x",), b"live", T0 + 3)
    assert router.retro_subscribe(sub, T0, (b"x",), T0 + 4)
    assert payloads(sub) == [b"missed", b"live"]


def test_RETRO_SUBSCRIBE_after_an_unsubscribe_is_a_fresh_request():
    # Decided: de-duplication is against the topics the connection covers now. After
    # an unsubscribe, a retro_subscribe asks afresh and gets the message again (as the
    # original does); while a topic stays subscribed, its messages are not queued twice.
    router = Router(T0, num_shards=4)
    a, b = distinct_shard_topics(router, 2)
    sub = new_queue(1)
    router.subscribe(sub, (a,), T0 + 1)
    router.publish(OTHER, (a, b), b"live", T0 + 2)
    assert payloads(sub) == [b"live"]
    assert router.retro_subscribe(sub, T0, (b,), T0 + 3)
    assert payloads(sub) == []  # still covered through a
    router.unsubscribe(sub, (a, b))
    assert router.retro_subscribe(sub, T0, (b,), T0 + 4)
    assert payloads(sub) == [b"live"]


def test_retroactive_messages_merge_in_publish_order_with_queued_live_ones():
    router = Router(T0, num_shards=4)
    live, old = distinct_shard_topics(router, 2)
    sub = new_queue(1)
    router.subscribe(sub, (live,), T0)
    router.publish(OTHER, (old,), b"1", T0 + 1)
    router.publish(OTHER + 1, (live,), b"2", T0 + 2)
    router.publish(OTHER, (old,), b"3", T0 + 3)
    router.publish(OTHER + 1, (live,), b"4", T0 + 4)
    router.publish(OTHER, (old,), b"5", T0 + 5)
    assert router.retro_subscribe(sub, T0, (old,), T0 + 6)
    assert payloads(sub) == [b"1", b"2", b"3", b"4", b"5"]


def test_a_horizon_before_the_router_started_is_NOT_FOUND():
    router = Router(T0)
    early, on_time = new_queue(1), new_queue(2)
    router.publish(OTHER, (b"x",), b"m", T0 + 1)
    assert router.retro_subscribe(early, T0 - 1, (b"x",), T0 + 2) is False
    assert early.entries == []
    assert router.retro_subscribe(on_time, T0, (b"x",), T0 + 2) is True
    assert payloads(on_time) == [b"m"]


def test_NOT_FOUND_when_a_message_on_a_requested_topic_after_the_horizon_was_evicted():
    router = Router(T0, num_shards=4, messages_per_shard=2)
    x, busy = same_shard_topics(router, 2)
    far = same_shard_topics(router, 1, avoid=x)[0]
    assert router.shard_of(far) is not router.shard_of(x)
    sub = new_queue(1)
    router.publish(OTHER, (x,), b"lost", T0 + 1)
    router.publish(OTHER, (far,), b"far", T0 + 2)
    router.publish(OTHER, (busy,), b"1", T0 + 3)
    router.publish(OTHER, (busy,), b"2", T0 + 4)  # evicts x's message
    assert router.retro_subscribe(sub, T0, (far, x), T0 + 5) is False
    assert sub.entries == []  # not even far's message, still buffered
    assert set(sub.subscriptions) == {far, x}  # but the subscription took effect
    router.publish(OTHER, (x,), b"live", T0 + 6)
    assert payloads(sub) == [b"live"]


def test_STORED_for_a_quiet_topic_on_the_shard_where_a_busy_one_evicted():
    router = Router(T0, num_shards=4, messages_per_shard=3)
    quiet, busy = same_shard_topics(router, 2)
    router.publish(OTHER, (quiet,), b"old quiet", T0 + 1)  # before the horizon
    horizon = router.horizon(T0 + 2)
    for i in range(5):
        router.publish(OTHER, (busy,), b"busy%d" % i, T0 + 3 + i)  # evicts after the horizon
    router.publish(OTHER, (quiet,), b"new quiet", T0 + 10)
    on_quiet, on_busy = new_queue(1), new_queue(2)
    assert router.retro_subscribe(on_quiet, horizon, (quiet,), T0 + 11) is True
    assert payloads(on_quiet) == [b"new quiet"]
    assert router.retro_subscribe(on_busy, horizon, (busy,), T0 + 11) is False
    assert on_busy.entries == []


def test_an_eviction_at_or_before_the_horizon_does_not_spoil_it():
    router = Router(T0, num_shards=1, messages_per_shard=1)
    sub = new_queue(1)
    router.publish(OTHER, (b"x",), b"old", T0 + 1)
    horizon = router.horizon(T0 + 1)
    router.publish(OTHER, (b"x",), b"new", T0 + 2)  # evicts "old", stamped at the horizon
    assert router.retro_subscribe(sub, horizon, (b"x",), T0 + 3) is True
    assert payloads(sub) == [b"new"]


def test_register_then_SUBSCRIBE_answers_NOT_FOUND_after_an_eviction_but_subscribes():
    router = Router(T0, num_shards=1, messages_per_shard=1)
    sub = new_queue(1)
    router.register(sub, T0 + 1)
    router.publish(OTHER, (b"x",), b"1", T0 + 2)
    router.publish(OTHER, (b"x",), b"2", T0 + 3)
    assert router.subscribe(sub, (b"x",), T0 + 4) is False
    assert sub.entries == [] and sub.horizon is None
    router.publish(OTHER, (b"x",), b"3", T0 + 5)
    assert payloads(sub) == [b"3"]


# -- slow consumers ------------------------------------------------------------


def message(stamp: int, payload: bytes = b"") -> Message:
    return Message(stamp, (b"x",), payload, OTHER)


def test_a_queue_holds_exactly_max_messages_and_one_more_overflows_it():
    calls = []
    sub = new_queue(1, max_messages=3, max_bytes=1 << 20, on_overflow=lambda: calls.append(1))
    for i in range(3):
        m = message(T0 + i, b"p")
        sub.deliver(m, m)
    assert len(sub.entries) == 3 and calls == [] and not sub.dead
    m = message(T0 + 3, b"p")
    sub.deliver(m, m)
    assert calls == [1] and sub.entries == [] and sub.bytes == 0 and sub.dead
    for i in range(4, 6):
        m = message(T0 + i, b"p")
        sub.deliver(m, m)
    assert calls == [1] and sub.entries == []


def test_a_queue_holds_exactly_max_bytes_and_one_more_byte_overflows_it():
    calls = []
    sub = new_queue(1, max_messages=100, max_bytes=10, on_overflow=lambda: calls.append(1))
    first, second = message(T0, b"123456"), message(T0 + 1, b"7890")
    sub.deliver(first, first)
    sub.deliver(second, second)
    assert sub.bytes == 10 and len(sub.entries) == 2 and calls == []
    third = message(T0 + 2, b"!")
    sub.deliver(third, third)
    assert calls == [1] and sub.entries == [] and sub.bytes == 0
    sub.deliver(third, third)
    assert calls == [1] and sub.entries == []


def test_deliver_many_fills_a_queue_exactly_and_overflows_past_it():
    calls = []
    sub = new_queue(1, max_messages=3, max_bytes=6, on_overflow=lambda: calls.append(1))
    m0, m1, m2 = message(T0, b"aa"), message(T0 + 1, b"bb"), message(T0 + 2, b"cc")
    sub.deliver(m0, m0)
    sub.deliver_many([(m1, m1), (m2, m2)])
    assert len(sub.entries) == 3 and sub.bytes == 6 and calls == []
    sub.drain()
    sub.deliver(m0, m0)
    m3 = message(T0 + 3)
    sub.deliver_many([(m1, m1), (m2, m2), (m3, m3)])  # 4 messages: one too many
    assert calls == [1] and sub.entries == [] and sub.dead


def test_deliver_many_overflows_on_bytes():
    calls = []
    sub = new_queue(1, max_messages=100, max_bytes=5, on_overflow=lambda: calls.append(1))
    m0, m1, m2 = message(T0, b"aa"), message(T0 + 1, b"bb"), message(T0 + 2, b"cc")
    sub.deliver(m0, m0)
    sub.deliver_many([(m1, m1), (m2, m2)])
    assert calls == [1] and sub.entries == []


def test_a_RETRO_SUBSCRIBE_past_the_queue_limit_makes_a_slow_consumer():
    calls = []
    router = Router(T0)
    sub = new_queue(1, max_messages=2, on_overflow=lambda: calls.append(1))
    for i in range(3):
        router.publish(OTHER, (b"x",), b"%d" % i, T0 + 1 + i)
    router.retro_subscribe(sub, T0, (b"x",), T0 + 5)
    assert calls == [1] and sub.entries == []
    router.publish(OTHER, (b"x",), b"later", T0 + 6)
    assert calls == [1] and sub.entries == []


def test_the_message_past_the_limit_makes_a_subscriber_slow_and_spares_the_others():
    calls = []
    router = Router(T0)
    slow = new_queue(1, max_messages=2, on_overflow=lambda: calls.append("slow"))
    fast = new_queue(2, max_messages=10, on_overflow=lambda: calls.append("fast"))
    router.subscribe(slow, (b"x",), T0)
    router.subscribe(fast, (b"x", b"y"), T0)
    for i in range(3):
        router.publish(OTHER, (b"x", b"y"), b"%d" % i, T0 + 1 + i)
    assert calls == ["slow"] and slow.entries == []
    assert payloads(fast) == [b"0", b"1", b"2"]


def test_publish_many_stamps_each_message_with_its_own_reading_of_the_clock():
    router = Router(T0)
    sub = new_queue(1)
    router.subscribe(sub, (b"x",), T0)
    readings = iter([T0 + 10, T0 + 10, T0 + 500, T0 + 400])  # the same time twice, then a step back
    last = router.publish_many(
        OTHER, [((b"x",), b"%d" % i) for i in range(4)], lambda: next(readings)
    )
    stamps = [delivery.stamp for delivery in sub.drain()]
    assert stamps == [T0 + 10, T0 + 11, T0 + 500, T0 + 501]
    assert last is not None and last.stamp == T0 + 501
    assert router.published == 4 and router.deliveries == 4


def test_publish_many_routes_a_batch_of_one_two_and_three_topic_messages_like_publish():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    both, only_b, none = new_queue(1), new_queue(2), new_queue(3)
    router.subscribe(both, (a, b), T0)
    router.subscribe(only_b, (b,), T0)
    batch = [((a,), b"1"), ((a, b), b"2"), ((b, a), b"3"), ((c, b, a), b"4"), ((c,), b"5")]
    router.publish_many(1, batch, lambda: T0 + 1)  # queue 1 is the publisher: it gets nothing
    assert entries(both) == []
    assert entries(only_b) == [((b,), b"2"), ((b,), b"3"), ((b,), b"4")]
    assert entries(none) == []
    assert router.deliveries == 3
    router.publish_many(2, [((a, b), b"own")], lambda: T0 + 1)  # only_b's own, via b
    assert entries(only_b) == []
    assert entries(both) == [((a, b), b"own")]
    assert router.deliveries == 4
    router.publish_many(OTHER, batch, lambda: T0 + 2)
    assert entries(both) == [((a,), b"1"), ((a, b), b"2"), ((b, a), b"3"), ((b, a), b"4")]


def test_the_many_topics_warning_applies_to_one_and_two_topic_messages_too(caplog):
    router = Router(T0, min_topics_to_warn=1)
    with caplog.at_level("WARNING", logger="kraken.router"):
        router.publish(OTHER, (b"x",), b"1", T0 + 1)
    assert "published to 1 topics" in caplog.text
    router = Router(T0, min_topics_to_warn=2)
    with caplog.at_level("WARNING", logger="kraken.router"):
        router.publish(OTHER, (b"x",), b"1", T0 + 1)
        assert "published to 2 topics" not in caplog.text
        router.publish(OTHER, (b"x", b"y"), b"2", T0 + 2)
    assert "published to 2 topics" in caplog.text
