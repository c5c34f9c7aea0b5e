"""Rendezvous hashing of topics over servers: the documented mapping, its test
vectors, and delivery over three real servers."""

from __future__ import annotations

import contextlib
import hashlib
import random

from kraken.client import Client, owner, weight
from kraken_testing import running_server

SERVERS = ["10.0.0.1:12355", "10.0.0.2:12355", "10.0.0.3:12355"]

# The test vectors of docs/client.md: (topic, owner among SERVERS, weight on SERVERS[0]).
VECTORS = [
    (b"task:42", "10.0.0.3:12355", 2355611563465923703),
    (b"project:7", "10.0.0.3:12355", 13868662720117275266),
    (b"user:alice", "10.0.0.1:12355", 9368256711073176152),
    (b"workspace:1", "10.0.0.2:12355", 9195660105604719721),
    (b"team:9", "10.0.0.1:12355", 3691655622553983336),
    (b"\xff\x00binary", "10.0.0.3:12355", 1069670349316128860),
]


def documented_weight(server: str, topic: bytes) -> int:
    """The formula as docs/client.md states it, written independently of the client."""
    return int.from_bytes(hashlib.sha256(server.encode() + b"\0" + topic).digest()[:8], "big")


def test_mapping_matches_the_documented_test_vectors():
    for topic, expected, first_weight in VECTORS:
        assert weight(SERVERS[0], topic) == first_weight == documented_weight(SERVERS[0], topic)
        assert owner(SERVERS, topic) == expected
        assert expected == max(SERVERS, key=lambda s: documented_weight(s, topic))


def test_adding_a_server_moves_only_about_a_quarter_of_the_topics():
    topics = [b"topic:%d" % i for i in range(4000)]
    before = {t: owner(SERVERS, t) for t in topics}
    after = {t: owner([*SERVERS, "10.0.0.4:12355"], t) for t in topics}
    moved = [t for t in topics if before[t] != after[t]]
    assert all(after[t] == "10.0.0.4:12355" for t in moved)  # only to the new server
    assert 0.2 < len(moved) / len(topics) < 0.3
    counts = {s: list(before.values()).count(s) for s in SERVERS}
    assert all(1200 < n < 1470 for n in counts.values()), counts


def test_three_servers_deliver_every_message_once_with_its_subscribed_topics():
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(running_server()) for _ in range(3)]
        addresses = [f"127.0.0.1:{s.port}" for s in servers]
        subscriber = stack.enter_context(contextlib.closing(Client(addresses)))
        publisher = stack.enter_context(contextlib.closing(Client(addresses)))
        topics = [f"shard:{i}" for i in range(30)]
        subscribed = set(topics[:20])
        subscriber.subscribe(sorted(subscribed))
        assert len({subscriber.owner(t) for t in subscribed}) == 3  # really spread
        rng = random.Random(7)
        sent = []
        for i in range(300):
            message_topics = rng.sample(topics, rng.randint(1, 3))
            sent.append((message_topics, b"%d" % i))
        publisher.publish_many(sent[:150])
        for message_topics, payload in sent[150:]:
            publisher.publish(message_topics, payload)
        # a message whose topics live on several servers arrives once from each of
        # them, listing that server's topics: parts never overlap and add up exactly
        received: dict[bytes, list[tuple[bytes, ...]]] = {}
        for message in subscriber.receive_messages():
            received.setdefault(message.payload, []).append(message.topics)
        for message_topics, payload in sent:
            matched = [t.encode() for t in message_topics if t in subscribed]
            parts = received.pop(payload, [])
            assert sorted(t for part in parts for t in part) == sorted(matched), payload
            owners = [{subscriber.owner(t) for t in part} for part in parts]
            assert all(len(o) == 1 for o in owners)  # a part comes from one server
            assert len({o.pop() for o in owners}) == len(parts)  # once per server
        assert received == {}  # nothing unexpected
        assert subscriber.receive_messages() == []
