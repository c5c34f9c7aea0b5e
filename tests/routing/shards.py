"""Topics picked by the shard they hash to, for tests of cross-shard routing."""

from __future__ import annotations

from kraken.routing import Router


def distinct_shard_topics(router: Router, n: int) -> list[bytes]:
    """n topics that all live on different shards."""
    found: dict[int, bytes] = {}
    i = 0
    while len(found) < n:
        topic = b"topic%d" % i
        found.setdefault(id(router.shard_of(topic)), topic)
        i += 1
    topics = list(found.values())
    assert len({id(router.shard_of(t)) for t in topics}) == n
    return topics


def same_shard_topics(router: Router, n: int, avoid: bytes | None = None) -> list[bytes]:
    """n topics that all live on one shard (not the shard of ``avoid``)."""
    by_shard: dict[int, list[bytes]] = {}
    i = 0
    while True:
        topic = b"same%d" % i
        i += 1
        shard = router.shard_of(topic)
        if avoid is not None and shard is router.shard_of(avoid):
            continue
        group = by_shard.setdefault(id(shard), [])
        group.append(topic)
        if len(group) == n:
            return group
