"""History across a planned restart, in memory: ``Router.snapshot`` and ``restore``.

A restored router must answer every retroactive subscribe as the router it was
taken of would have (the same messages, the same NOT_FOUNDs), keep its clock
going up, and answer NOT_FOUND for horizons of the downtime.
"""

from __future__ import annotations

import random

import pytest

from kraken.routing import ClientQueue, HistorySnapshot, Message, Router
from kraken.routing.router import MAX_GAPS, RESTORED

from .shards import distinct_shard_topics, same_shard_topics

T0 = 1_800_000_000_000_000
SECOND = 1_000_000
PUBLISHER = 7
TOPICS = [b"t%d" % i for i in range(10)]


def new_queue(qid: int) -> ClientQueue:
    return ClientQueue(qid, 100_000, 1 << 30)


def retro(router: Router, horizon: int, topics: tuple[bytes, ...], qid: int = 1000):
    """What a fresh connection gets for ``retro_subscribe horizon topics``: None for
    NOT_FOUND, else the (stamp, topics delivered, payload) queued, in order."""
    queue = new_queue(qid)
    if not router.retro_subscribe(queue, horizon, topics, horizon + SECOND):
        router.remove(queue)
        return None
    out = []
    for delivery in queue.drain():
        message, matched = (
            (delivery, delivery.topics) if isinstance(delivery, Message) else delivery
        )
        out.append((message.stamp, matched, message.payload))
    router.remove(queue)
    return out


def traffic(router: Router, rng: random.Random, n: int, now: int) -> list[int]:
    """Publish ``n`` messages of 1 to 4 topics; the horizons seen along the way."""
    horizons = [router.horizon(now)]
    for i in range(n):
        topics = tuple(rng.sample(TOPICS, rng.randint(1, 4)))
        router.publish(PUBLISHER, topics, b"m%d" % i, now + i)
        if rng.random() < 0.2:
            horizons.append(router.horizon(now + i))
    return horizons


def restored(router: Router, now: int, **limits: int) -> Router:
    copy = Router(now, num_shards=len(router.shards), **limits)
    copy.restore(router.snapshot(), now)
    return copy


@pytest.mark.parametrize("capacity", [3, 8, 50, 1000])
def test_a_restored_router_answers_every_retro_subscribe_as_the_original(capacity):
    rng = random.Random(capacity)
    original = Router(T0, num_shards=3, messages_per_shard=capacity, bytes_per_shard=6000)
    horizons = traffic(original, rng, 300, T0 + 1)
    copy = restored(original, T0 + 10 * SECOND, messages_per_shard=capacity, bytes_per_shard=6000)
    assert copy.started == original.started
    last = original.clock.last  # later horizons are of the downtime (tested below)
    for horizon in [T0 - 1, T0, *horizons, *rng.sample(range(T0, last + 1), 40)]:
        for _ in range(3):
            topics = tuple(rng.sample(TOPICS, rng.randint(1, 3)))
            assert retro(copy, horizon, topics) == retro(original, horizon, topics), (
                horizon,
                topics,
            )


def test_the_snapshot_is_plain_data_and_a_message_on_several_shards_is_written_once():
    router = Router(T0, num_shards=4)
    one, two = distinct_shard_topics(router, 2)
    message = router.publish(PUBLISHER, (one, two), b"both", T0 + 1)
    snapshot = router.snapshot()
    assert isinstance(snapshot, HistorySnapshot)
    (entry,) = snapshot.messages
    assert entry[:3] == (message.stamp, (one, two), b"both")
    assert sorted(entry[3]) == sorted(router.shards.index(router.shard_of(t)) for t in (one, two))
    assert snapshot.last == message.stamp and snapshot.started == T0
    assert snapshot.evictions == [([], 0)] * 4


def test_a_message_one_shard_evicted_stays_lost_there_and_found_on_the_other():
    router = Router(T0, num_shards=4, messages_per_shard=1)
    one, two = distinct_shard_topics(router, 2)
    both = router.publish(PUBLISHER, (one, two), b"both", T0 + 1)
    router.publish(PUBLISHER, (one,), b"pushes it out of one's shard", T0 + 2)
    copy = restored(router, T0 + SECOND, messages_per_shard=1)
    assert retro(copy, T0, (one,)) is None
    assert retro(copy, T0, (two,)) == [(both.stamp, (two,), b"both")]
    assert retro(copy, both.stamp, (one,)) == [
        (both.stamp + 1, (one,), b"pushes it out of one's shard")
    ]


def test_restored_messages_reach_their_publisher_too():
    """Connections are new after a restart: publisher exclusion cannot hold by
    connection, so a client gets back its own messages since its horizon, as after a
    reconnect."""
    router = Router(T0, num_shards=2)
    message = router.publish(PUBLISHER, (b"a",), b"mine", T0 + 1)
    copy = restored(router, T0 + SECOND)
    assert retro(copy, T0, (b"a",), qid=PUBLISHER) == [(message.stamp, (b"a",), b"mine")]
    held = list(copy.shard_of(b"a").history.held())
    assert [m.publisher for m in held] == [RESTORED]


def test_the_clock_goes_on_above_the_last_horizon_even_when_the_wall_clock_went_back():
    router = Router(T0, num_shards=2)
    router.publish(PUBLISHER, (b"a",), b"x", T0 + 5 * SECOND)
    last = router.horizon(T0 + 6 * SECOND)
    behind = Router(T0 + SECOND, num_shards=2)  # the wall clock stepped back
    behind.restore(router.snapshot(), T0 + SECOND)
    assert behind.horizon(T0 + SECOND) == last
    assert behind.publish(PUBLISHER, (b"a",), b"y", T0 + 2 * SECOND).stamp == last + 1
    assert behind.gaps == ()  # no downtime to guard: every horizon above last is new
    ahead = restored(router, T0 + 60 * SECOND)
    assert ahead.horizon(T0 + 60 * SECOND) == T0 + 60 * SECOND > last


def test_horizons_of_the_downtime_answer_not_found_the_last_one_before_it_does_not():
    router = Router(T0, num_shards=2)
    before = router.publish(PUBLISHER, (b"a",), b"before", T0 + 1)
    last = router.horizon(T0 + SECOND)
    copy = restored(router, T0 + 10 * SECOND)
    after = copy.publish(PUBLISHER, (b"a",), b"after", T0 + 11 * SECOND)
    assert copy.gaps == ((last, T0 + 10 * SECOND),)
    assert retro(copy, before.stamp - 1, (b"a",)) == [
        (before.stamp, (b"a",), b"before"),
        (after.stamp, (b"a",), b"after"),
    ]
    assert retro(copy, last, (b"a",)) == [(after.stamp, (b"a",), b"after")]
    # no server handed these out: another run may have published in between
    assert retro(copy, last + 1, (b"a",)) is None
    assert retro(copy, T0 + 10 * SECOND - 1, (b"a",)) is None
    assert retro(copy, T0 + 10 * SECOND, (b"a",)) == [(after.stamp, (b"a",), b"after")]


def test_downtimes_are_kept_across_restarts_and_the_oldest_fold_into_the_start():
    router = Router(T0, num_shards=2)
    now = T0
    for _ in range(MAX_GAPS + 3):
        router.publish(PUBLISHER, (b"a",), b"x", now + 1)
        now += 10 * SECOND
        router = restored(router, now)
    assert len(router.gaps) == MAX_GAPS
    assert router.started > T0  # the three oldest downtimes are now before the start
    first_kept = router.gaps[0]
    assert retro(router, first_kept[0] + 1, (b"a",)) is None
    assert retro(router, router.started - 1, (b"a",)) is None
    assert retro(router, first_kept[0], (b"a",)) is not None


def test_smaller_limits_at_restore_evict_the_oldest_and_remember_them():
    router = Router(T0, num_shards=1, messages_per_shard=10)
    messages = [router.publish(PUBLISHER, (b"a",), b"%d" % i, T0 + 1 + i) for i in range(10)]
    copy = restored(router, T0 + SECOND, messages_per_shard=4)
    assert copy.buffered() == 4
    assert retro(copy, messages[4].stamp, (b"a",)) is None  # message 5 is gone
    assert [p for _, _, p in retro(copy, messages[5].stamp, (b"a",))] == [b"6", b"7", b"8", b"9"]


def test_eviction_records_and_floor_survive():
    router = Router(T0, num_shards=1, messages_per_shard=2)
    for i, topic in enumerate([b"a", b"b", b"c", b"d", b"e"]):
        router.publish(PUBLISHER, (topic,), b"x", T0 + 1 + i)
    snapshot = router.snapshot()
    records, floor = snapshot.evictions[0]
    assert floor == T0 + 1 and [t for t, _ in records] == [b"b", b"c"]
    copy = restored(router, T0 + SECOND, messages_per_shard=2)
    assert copy.shards[0].history.evictions() == (records, floor)
    assert retro(copy, T0, (b"never",)) is None  # folded into the floor: still NOT_FOUND
    assert retro(copy, T0 + 1, (b"never",)) == []


def test_a_snapshot_of_another_shard_count_is_refused_and_changes_nothing():
    router = Router(T0, num_shards=4)
    router.publish(PUBLISHER, (b"a",), b"x", T0 + 1)
    other = Router(T0 + SECOND, num_shards=2)
    with pytest.raises(ValueError, match="4 router shards"):
        other.restore(router.snapshot(), T0 + SECOND)
    assert other.buffered() == 0 and other.started == T0 + SECOND and other.gaps == ()


@pytest.mark.parametrize(
    "broken",
    [
        lambda s: HistorySnapshot(s.last + 1, s.last, s.gaps, s.messages, s.evictions),
        lambda s: HistorySnapshot(s.started, s.last, s.gaps, s.messages[::-1], s.evictions),
        lambda s: HistorySnapshot(s.started, s.last - 1, s.gaps, s.messages, s.evictions),
        lambda s: HistorySnapshot(
            s.started, s.last, s.gaps, [(*m[:3], (0, 0)) for m in s.messages], s.evictions
        ),
        lambda s: HistorySnapshot(
            s.started, s.last, s.gaps, [(*m[:3], (9,)) for m in s.messages], s.evictions
        ),
        lambda s: HistorySnapshot(
            s.started, s.last, s.gaps, [(*m[:3], ()) for m in s.messages], s.evictions
        ),
        lambda s: HistorySnapshot(
            s.started, s.last, ((s.last, s.started),), s.messages, s.evictions
        ),
        lambda s: HistorySnapshot(
            s.started, s.last, s.gaps, s.messages, [([(b"a", s.last + 1)], 0)] * 2
        ),
    ],
)
def test_an_inconsistent_snapshot_is_refused_and_changes_nothing(broken):
    router = Router(T0, num_shards=2)
    a, b = same_shard_topics(router, 2)
    router.publish(PUBLISHER, (a,), b"x", T0 + 1)
    router.publish(PUBLISHER, (b, a), b"y", T0 + 2)
    other = Router(T0 + SECOND, num_shards=2)
    with pytest.raises(ValueError):
        other.restore(broken(router.snapshot()), T0 + SECOND)
    assert other.buffered() == 0 and other.started == T0 + SECOND
    assert all(shard.history.evictions() == ([], 0) for shard in other.shards)


def test_only_a_new_router_is_restored_into():
    router = Router(T0, num_shards=2)
    snapshot = router.snapshot()
    busy = Router(T0, num_shards=2)
    busy.publish(PUBLISHER, (b"a",), b"x", T0 + 1)
    with pytest.raises(ValueError, match="new router"):
        busy.restore(snapshot, T0 + 2)
