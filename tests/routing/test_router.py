"""The router in memory, no event loop: its rules, each tested once.

Sections follow the rules: who gets a message and how, the publisher's own
messages, subscriptions, publish_many, register and RETRO_SUBSCRIBE, NOT_FOUND,
slow consumers, fan-out warnings. Time is passed in as Unix microseconds: T0 is
when the router starts; a publisher id that no test queue uses is OTHER.
In tables, topics are letters ("cab" names the topics c, a, b), placed on the
router's shards by ``layout``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from kraken.routing import ClientQueue, Message, Router
from kraken.routing.history import TOPIC_BYTES
from kraken.routing.router import WARN_INTERVAL

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


def layout(router: Router, kind: str) -> dict[str, bytes]:
    """Topics a, b, c, d: each on a shard of its own ("distinct"), a and c on one
    shard and b and d on another ("grouped"), or all four on one shard ("one shard")."""
    if kind == "distinct":
        topics = distinct_shard_topics(router, 4)
    elif kind == "grouped":
        a, c = same_shard_topics(router, 2)
        b, d = same_shard_topics(router, 2, avoid=a)
        assert router.shard_of(a) is router.shard_of(c)
        assert router.shard_of(b) is not router.shard_of(a)
        topics = [a, b, c, d]
    else:
        assert kind == "one shard"
        topics = same_shard_topics(router, 4)
    return dict(zip("abcd", topics, strict=True))


def named(topics: dict[str, bytes], letters: str) -> tuple[bytes, ...]:
    return tuple(topics[letter] for letter in letters)


# -- who gets a message, and how -----------------------------------------------


@pytest.mark.parametrize(
    "kind, subscribed, published, matched",
    [
        pytest.param("distinct", "a", "a", "a", id="one topic"),
        pytest.param("distinct", "a", "ab", "a", id="two topics, the first matched"),
        pytest.param("distinct", "b", "ab", "b", id="two topics, the second matched"),
        pytest.param("distinct", "ab", "ba", "ba", id="two topics, both matched"),
        pytest.param("one shard", "ab", "ba", "ba", id="two topics on one shard, both matched"),
        pytest.param("one shard", "b", "ab", "b", id="two topics on one shard, one matched"),
        pytest.param("distinct", "ca", "abc", "ac", id="three topics, two matched"),
        pytest.param("distinct", "abc", "cab", "cab", id="three topics, all matched"),
        pytest.param("distinct", "cab", "abcd", "abc", id="four topics, three matched"),
        # grouped by shard the hits would read a, c, b; the message names a, b, c
        pytest.param("grouped", "abc", "abcd", "abc", id="four topics, shards group them"),
    ],
)
def test_a_message_reaches_a_subscriber_once_listing_the_matched_topics_in_its_order(
    kind, subscribed, published, matched
):
    router = Router(T0, num_shards=4)
    topics = layout(router, kind)
    sub = new_queue(1)
    router.subscribe(sub, named(topics, subscribed), T0)
    router.publish(OTHER, named(topics, published), b"m", T0 + 1)
    assert entries(sub) == [(named(topics, matched), b"m")]


def test_PUBLISH_reaches_every_subscriber_of_any_of_its_topics_and_no_one_else():
    router = Router(T0, num_shards=4)
    a, b, c = distinct_shard_topics(router, 3)
    on_a = [new_queue(1), new_queue(2)]
    on_b = [new_queue(3), new_queue(4)]
    on_c = new_queue(5)
    for sub in on_a:
        router.subscribe(sub, (a,), T0)
    for sub in on_b:
        router.subscribe(sub, (b,), T0)
    router.subscribe(on_c, (c,), T0)
    router.publish(OTHER, (a, b), b"m", T0 + 1)
    assert [entries(sub) for sub in on_a] == [[((a,), b"m")]] * 2
    assert [entries(sub) for sub in on_b] == [[((b,), b"m")]] * 2
    assert entries(on_c) == []
    assert router.deliveries == 4


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


# -- the publisher's own messages ----------------------------------------------


def publish_one(router: Router, publisher: int, topics: tuple[bytes, ...], now: int) -> None:
    router.publish(publisher, topics, b"own", now)


def publish_batch(router: Router, publisher: int, topics: tuple[bytes, ...], now: int) -> None:
    router.publish_many(publisher, [((b"first",), b"first"), (topics, b"own")], lambda: now)


@pytest.mark.parametrize("send", [publish_one, publish_batch], ids=["publish", "publish_many"])
@pytest.mark.parametrize(
    "mine, published",
    [
        pytest.param("a", "a", id="one topic"),
        pytest.param("ab", "ab", id="two topics, publisher on both"),
        pytest.param("a", "ab", id="two topics, publisher on the first"),
        pytest.param("b", "ab", id="two topics, publisher on the second"),
        pytest.param("abc", "abc", id="three topics, publisher on all"),
        pytest.param("b", "abc", id="three topics, publisher on one"),
    ],
)
def test_the_publisher_never_receives_its_own_message(send, mine, published):
    router = Router(T0, num_shards=4)
    topics = layout(router, "distinct")
    me, other = new_queue(1), new_queue(2)
    router.subscribe(me, named(topics, mine), T0)
    router.subscribe(other, named(topics, published), T0)
    send(router, me.id, named(topics, published), T0 + 1)
    assert entries(me) == []
    assert entries(other) == [(named(topics, published), b"own")]
    assert router.deliveries == 1  # the publisher is not counted either


# -- subscriptions -------------------------------------------------------------


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


def test_SUBSCRIBE_or_RETRO_SUBSCRIBE_to_no_topic_at_all_changes_nothing():
    router = Router(T0)
    sub = new_queue(1)
    assert router.subscribe(sub, (), T0) is True
    assert router.retro_subscribe(sub, T0 - 1, (), T0) is True  # nothing asked, nothing lost
    assert router.topic_count() == 0 and sub.subscriptions == {}
    assert router.not_found == 0


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
    router.publish(OTHER, (a, b), b"m", T0 + 1)  # nobody left: nothing breaks
    assert entries(one) == [] and entries(two) == []


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


# -- publish_many --------------------------------------------------------------


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
    a, b, c, d = distinct_shard_topics(router, 4)
    both, only_b, elsewhere = new_queue(1), new_queue(2), new_queue(3)
    router.subscribe(both, (a, b), T0)
    router.subscribe(only_b, (b,), T0)
    router.subscribe(elsewhere, (d,), T0)
    batch = [((a,), b"1"), ((a, b), b"2"), ((b, a), b"3"), ((c, b, a), b"4"), ((c,), b"5")]
    router.publish_many(OTHER, batch, lambda: T0 + 1)
    assert entries(both) == [((a,), b"1"), ((a, b), b"2"), ((b, a), b"3"), ((b, a), b"4")]
    assert entries(only_b) == [((b,), b"2"), ((b,), b"3"), ((b,), b"4")]
    assert entries(elsewhere) == []
    assert router.published == 5 and router.deliveries == 7


# -- register and RETRO_SUBSCRIBE ----------------------------------------------


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


@pytest.mark.parametrize(
    "kind, published, asked, matched",
    [
        pytest.param("distinct", "abc", "ca", "ac", id="three topics, two asked"),
        pytest.param("one shard", "ab", "ba", "ab", id="two topics on one shard, both asked"),
        pytest.param("one shard", "ab", "b", "b", id="two topics on one shard, one asked"),
        pytest.param("distinct", "ab", "ba", "ab", id="two topics, both asked"),
    ],
)
def test_RETRO_SUBSCRIBE_queues_a_message_once_listing_the_asked_topics_in_its_order(
    kind, published, asked, matched
):
    router = Router(T0, num_shards=4)
    topics = layout(router, kind)
    sub = new_queue(1)
    router.publish(OTHER, named(topics, published), b"m", T0 + 1)
    assert router.retro_subscribe(sub, T0, named(topics, asked), T0 + 2)
    assert entries(sub) == [(named(topics, matched), b"m")]


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


@pytest.mark.parametrize(
    "asked", [pytest.param("b", id="the other topic"), pytest.param("ab", id="both topics")]
)
def test_RETRO_SUBSCRIBE_skips_a_message_already_delivered_live_via_another_topic(asked):
    router = Router(T0, num_shards=4)
    topics = layout(router, "distinct")
    a, b = topics["a"], topics["b"]
    sub = new_queue(1)
    horizon = router.horizon(T0 + 1)
    router.subscribe(sub, (a,), T0 + 2)
    router.publish(OTHER, (a, b), b"live", T0 + 3)
    router.publish(OTHER, (b,), b"b only", T0 + 4)
    assert entries(sub) == [((a,), b"live")]
    assert router.retro_subscribe(sub, horizon, named(topics, asked), T0 + 5)
    assert entries(sub) == [((b,), b"b only")]
    assert router.retro_subscribe(sub, horizon, named(topics, asked), T0 + 6)
    assert entries(sub) == []


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


def test_a_message_still_waiting_in_the_queue_is_not_queued_again():
    # found by the broker contract test: subscribed through a, the message waits in the
    # queue; after an unsubscribe, a retro_subscribe (or register and subscribe) on b
    # finds it in the buffer, and must not put a second copy beside the first
    for resubscribe in ("retro_subscribe", "register"):
        router = Router(T0, num_shards=4)
        a, b = distinct_shard_topics(router, 2)
        sub = new_queue(1)
        router.subscribe(sub, (a,), T0 + 1)
        router.publish(OTHER, (a, b), b"waiting", T0 + 2)
        router.publish(OTHER, (b,), b"missed", T0 + 3)
        router.unsubscribe(sub, (a,))
        if resubscribe == "register":
            sub.horizon = T0
            assert router.subscribe(sub, (b,), T0 + 4)
        else:
            assert router.retro_subscribe(sub, T0, (b,), T0 + 4)
        assert payloads(sub) == [b"waiting", b"missed"]


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


# -- NOT_FOUND -----------------------------------------------------------------


def test_a_horizon_before_the_router_started_is_NOT_FOUND():
    router = Router(T0)
    early, on_time = new_queue(1), new_queue(2)
    router.publish(OTHER, (b"x",), b"m", T0 + 1)
    assert router.retro_subscribe(early, T0 - 1, (b"x",), T0 + 2) is False
    assert early.entries == []
    assert router.retro_subscribe(on_time, T0, (b"x",), T0 + 2) is True
    assert payloads(on_time) == [b"m"]
    assert router.retro_requests == 2 and router.not_found == 1


@pytest.mark.parametrize(
    "asked, found, queued",
    [
        # its only eviction was of a message stamped at the horizon: nothing is lost
        pytest.param((b"quiet",), True, [b"new quiet"], id="evicted at the horizon only"),
        # every message on it since the horizon is still buffered, on a shard that lost others
        pytest.param((b"busy",), True, [b"busy 1", b"busy 2"], id="kept on a shard that evicted"),
        pytest.param((b"lost",), False, [], id="evicted after the horizon"),
        pytest.param((b"busy", b"lost"), False, [], id="one of two asked evicted"),
    ],
)
def test_NOT_FOUND_is_exact_per_topic_on_a_shard_that_evicted(asked, found, queued):
    router = Router(T0, num_shards=1, messages_per_shard=3)
    router.publish(OTHER, (b"quiet",), b"old quiet", T0 + 1)
    horizon = router.horizon(T0 + 1)
    assert horizon == T0 + 1  # the stamp of "old quiet"
    router.publish(OTHER, (b"lost",), b"gone", T0 + 2)
    router.publish(OTHER, (b"busy",), b"busy 1", T0 + 3)
    router.publish(OTHER, (b"busy",), b"busy 2", T0 + 4)  # evicts "old quiet"
    router.publish(OTHER, (b"quiet",), b"new quiet", T0 + 5)  # evicts "gone"
    sub = new_queue(1)
    assert router.retro_subscribe(sub, horizon, asked, T0 + 6) is found
    assert payloads(sub) == queued


def test_NOT_FOUND_queues_nothing_from_any_shard_but_still_subscribes():
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


@pytest.mark.parametrize("kind", ["distinct", "grouped", "one shard"])
def test_each_shard_charges_a_message_its_payload_and_its_own_topics(kind):
    router = Router(T0, num_shards=4)
    t = layout(router, kind)
    router.publish(OTHER, (t["a"], t["b"], t["c"]), b"x" * 100, T0 + 1)
    shards = {id(router.shard_of(t[name])): router.shard_of(t[name]) for name in "abc"}
    expected = sum(
        100 + TOPIC_BYTES * sum(router.shard_of(t[name]) is shard for name in "abc")
        for shard in shards.values()
    )
    assert router.buffered_bytes() == expected
    assert router.evicted_for_bytes() == 0


def test_RETRO_SUBSCRIBE_is_NOT_FOUND_exactly_for_the_topics_the_byte_bound_evicted():
    bound = 2 * (1000 + TOPIC_BYTES)  # two 1000-byte messages on one topic
    router = Router(T0, num_shards=1, messages_per_shard=10_000, bytes_per_shard=bound)
    router.publish(OTHER, (b"old",), b"o" * 1000, T0 + 1)
    horizon = router.horizon(T0 + 2)
    router.publish(OTHER, (b"big",), b"b" * 1000, T0 + 3)
    router.publish(OTHER, (b"next",), b"n" * 1000, T0 + 4)  # evicts "old": not after horizon
    assert router.buffered() == 2 and router.buffered_bytes() == bound
    old = new_queue(1)
    assert router.retro_subscribe(old, horizon, (b"old", b"big", b"next"), T0 + 5) is True
    assert payloads(old) == [b"b" * 1000, b"n" * 1000]
    router.publish(OTHER, (b"last",), b"l" * 1000, T0 + 6)  # evicts "big", after the horizon
    assert router.evicted_for_bytes() == 2
    late = new_queue(2)
    assert router.retro_subscribe(late, horizon, (b"big",), T0 + 7) is False
    assert late.entries == [] and b"big" in late.subscriptions
    since = new_queue(3)  # a horizon after the evicted message: everything since is there
    assert router.retro_subscribe(since, T0 + 3, (b"big", b"next", b"last"), T0 + 7) is True
    assert payloads(since) == [b"n" * 1000, b"l" * 1000]


# -- slow consumers ------------------------------------------------------------

Send = Callable[[list[bytes]], None]


def by_deliver(sub: ClientQueue) -> Send:
    stamps = itertools.count(T0 + 1)

    def send(batch: list[bytes]) -> None:
        for payload in batch:
            message = Message(next(stamps), (b"x",), payload, OTHER)
            sub.deliver(message, message)

    return send


def by_deliver_many(sub: ClientQueue) -> Send:
    stamps = itertools.count(T0 + 1)

    def send(batch: list[bytes]) -> None:
        messages = [Message(next(stamps), (b"x",), payload, OTHER) for payload in batch]
        sub.deliver_many([(m, m) for m in messages])

    return send


def by_publish(topics: tuple[bytes, ...]) -> Callable[[ClientQueue], Send]:
    """Live deliveries to a subscriber of the first of ``topics``."""

    def start(sub: ClientQueue) -> Send:
        router = Router(T0)
        router.subscribe(sub, topics[:1], T0)
        times = itertools.count(T0 + 1)

        def send(batch: list[bytes]) -> None:
            for payload in batch:
                router.publish(OTHER, topics, payload, next(times))

        return send

    return start


def by_retro_subscribe(sub: ClientQueue) -> Send:
    """Each batch published to a fresh topic, then queued by a RETRO_SUBSCRIBE to it."""
    router = Router(T0)
    times = itertools.count(T0 + 1)

    def send(batch: list[bytes]) -> None:
        topic = b"topic%d" % len(sub.subscriptions)
        horizon = router.horizon(next(times))
        for payload in batch:
            router.publish(OTHER, (topic,), payload, next(times))
        router.retro_subscribe(sub, horizon, (topic,), next(times))

    return send


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(by_deliver, id="deliver"),
        pytest.param(by_deliver_many, id="deliver_many"),
        pytest.param(by_publish((b"x",)), id="publish to one topic"),
        pytest.param(by_publish((b"x", b"y")), id="publish to two topics"),
        pytest.param(by_publish((b"x", b"y", b"z")), id="publish to three topics"),
        pytest.param(by_retro_subscribe, id="retro_subscribe"),
    ],
)
@pytest.mark.parametrize(
    "before, past",
    [
        pytest.param([[b"12345", b"12345"]], [b"1"], id="full, then one more"),
        pytest.param([[b"12345"]], [b"12345", b"1"], id="room for one, then two"),
    ],
)
@pytest.mark.parametrize(
    "max_messages, max_bytes",
    [pytest.param(2, 1 << 20, id="max_messages"), pytest.param(100, 10, id="max_bytes")],
)
def test_a_queue_holds_up_to_its_limit_and_the_delivery_past_it_makes_a_slow_consumer(
    start, max_messages, max_bytes, before, past
):
    # at most 2 messages or 10 bytes: "before" fits, "past" goes over, in any way of sending
    calls = []
    sub = new_queue(1, max_messages, max_bytes, on_overflow=lambda: calls.append(1))
    send = start(sub)
    for batch in before:
        send(batch)
    fill = [payload for batch in before for payload in batch]
    assert len(sub.entries) == len(fill) and sub.bytes == sum(map(len, fill))
    assert calls == [] and not sub.dead
    send(past)
    assert calls == [1] and sub.entries == [] and sub.bytes == 0 and sub.dead
    send([b"1"])
    assert calls == [1] and sub.entries == []  # told once


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


# -- fan-out warnings ----------------------------------------------------------


@pytest.mark.parametrize(
    "minimum, published, warns",
    [
        pytest.param(1, "a", True, id="one topic, at the minimum"),
        pytest.param(2, "a", False, id="one topic, below the minimum"),
        pytest.param(2, "ab", True, id="two topics, at the minimum"),
        pytest.param(3, "ab", False, id="two topics, below the minimum"),
        pytest.param(3, "abc", True, id="three topics, at the minimum"),
        pytest.param(4, "abc", False, id="three topics, below the minimum"),
    ],
)
def test_a_message_to_at_least_min_topics_to_warn_topics_is_logged(
    caplog, minimum, published, warns
):
    router = Router(T0, min_topics_to_warn=minimum)
    topics = layout(router, "distinct")
    with caplog.at_level("WARNING", logger="kraken.router"):
        router.publish(OTHER, named(topics, published), b"m", T0 + 1)
    if warns:
        assert f"large fan-out: a message was published to {len(published)} topics" in caplog.text
    else:
        assert "large fan-out" not in caplog.text


@pytest.mark.parametrize(
    "published, subscribers, warns",
    [
        pytest.param("a", "aa", True, id="one topic, at the minimum"),
        pytest.param("a", "ab", False, id="one topic, below the minimum"),
        pytest.param("ab", "ab", True, id="two topics, at the minimum"),
        pytest.param("ab", "ac", False, id="two topics, below the minimum"),
        pytest.param("abc", "bc", True, id="three topics, at the minimum"),
        pytest.param("abc", "cd", False, id="three topics, below the minimum"),
    ],
)
def test_a_message_reaching_at_least_min_fanout_to_warn_subscribers_is_logged(
    caplog, published, subscribers, warns
):
    router = Router(T0, min_fanout_to_warn=2)
    topics = layout(router, "distinct")
    for qid, letter in enumerate(subscribers):
        router.subscribe(new_queue(qid), (topics[letter],), T0)
    publisher = new_queue(OTHER)
    router.subscribe(publisher, named(topics, published), T0)  # never counted
    with caplog.at_level("WARNING", logger="kraken.router"):
        router.publish(OTHER, named(topics, published), b"m", T0 + 1)
    if warns:
        text = f"large fan-out: a message to {len(published)} topics reached 2 subscribers"
        assert text in caplog.text
    else:
        assert "large fan-out" not in caplog.text


def test_fan_out_warnings_of_one_kind_are_logged_once_per_interval_with_a_count(caplog):
    router = Router(T0, min_topics_to_warn=1)
    with caplog.at_level("WARNING", logger="kraken.router"):
        router.publish(OTHER, (b"x",), b"1", T0 + 1)
        router.publish(OTHER, (b"x",), b"2", T0 + 2)
        router.publish(OTHER, (b"x",), b"3", T0 + WARN_INTERVAL)
        router.publish(OTHER, (b"x",), b"4", T0 + 1 + WARN_INTERVAL)
        router.publish(OTHER, (b"x",), b"5", T0 + 1 + 2 * WARN_INTERVAL)
    text = "large fan-out: a message was published to 1 topics"
    assert [r.getMessage() for r in caplog.records] == [
        text,
        f"{text} (2 more since the last warning)",
        text,
    ]
