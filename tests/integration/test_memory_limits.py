"""What one request, or one publisher, may make the server hold (issue 11, defect 1).

Each limit on a real server over TCP: the subscriptions of one connection
(``max_subscriptions_per_client``), the topics of one message
(``max_topics_per_message``) and the bytes of the retro buffer
(``max_buffered_bytes_per_router_shard``). A refused request changes nothing;
the figures are read from ``/metrics``, as an operator would.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.parser import text_string_to_metric_families

from kraken.routing.history import TOPIC_BYTES
from kraken_testing import DEADLINE, ServerProcess, free_port, running_server, wait_until


@contextmanager
def server_with_metrics(*options: str) -> Iterator[tuple[ServerProcess, int]]:
    admin = free_port()
    with running_server(*options, "--admin-port", str(admin)) as server:
        yield server, admin


def metrics(admin: int) -> dict[str, float]:
    """Every sample of ``/metrics`` by name, a labelled one as ``name{value}``."""
    url = f"http://127.0.0.1:{admin}/metrics"
    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = ",".join(sample.labels.values())
            samples[f"{sample.name}{{{label}}}" if label else sample.name] = sample.value
    return samples


def admin_ready(admin: int) -> None:
    def answers() -> bool:
        try:
            metrics(admin)
            return True
        except OSError:
            return False

    wait_until(answers, "the admin API")


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


def topic_list(prefix: str, n: int) -> bytes:
    return b" ".join(b"%s%d" % (prefix.encode(), i) for i in range(n))


def test_a_subscribe_past_max_subscriptions_per_client_subscribes_none_of_its_topics():
    with server_with_metrics("--max-subscriptions-per-client", "10000") as (server, admin):
        admin_ready(admin)
        subscriber, publisher = server.wire(), server.wire()
        subscriber.subscribe("keep0", "keep1", "keep2", "keep3", "keep4")
        subscriber.set("subscribe", topic_list("t", 20_000))
        assert subscriber.line() == (
            b"CLIENT_ERROR too many subscriptions: 5 held + 20000 new exceeds "
            b"max_subscriptions_per_client 10000\r\n"
        )
        figures = metrics(admin)
        assert figures["kraken_subscriptions"] == 5
        assert figures["kraken_topics"] == 5
        assert figures["kraken_protocol_errors_total{too_many_subscriptions}"] == 1
        publisher.publish("t7", b"not subscribed")
        publisher.publish("keep1", b"subscribed")
        assert subscriber.messages() == [(b"keep1", b"subscribed")]
        # up to the limit exactly is fine
        subscriber.set("subscribe", topic_list("t", 9_995)).expect(b"STORED\r\n")
        assert metrics(admin)["kraken_subscriptions"] == 10_000
        subscriber.set("subscribe", b"keep0 t9995").expect(
            b"CLIENT_ERROR too many subscriptions: 10000 held + 1 new exceeds "
            b"max_subscriptions_per_client 10000\r\n"
        )
        assert subscriber.is_open()


def test_one_huge_subscribe_is_refused_on_the_defaults():
    """The issue's reproduction: an 8 MiB subscribe naming about 940,000 distinct topics
    answered STORED and kept 334 MiB. Now it is refused and nothing is kept."""
    with server_with_metrics() as (server, admin):
        admin_ready(admin)
        wire = server.wire()
        before = rss_mib(server.process.pid)
        block = topic_list("", 940_000)
        assert len(block) <= 8 * 1024 * 1024
        for _ in range(2):  # the second used to take the server past 400 MiB
            wire.set("subscribe", block)
            assert wire.line() == (
                b"CLIENT_ERROR too many subscriptions: 0 held + 940000 new exceeds "
                b"max_subscriptions_per_client 10000\r\n"
            )
        assert metrics(admin)["kraken_subscriptions"] == 0
        assert wire.is_open()
        # a generous margin: it was +350 MiB, it is about +10 once the request is freed
        wait_until(lambda: rss_mib(server.process.pid) < before + 100, "the refused requests freed")


def test_a_publish_with_too_many_topics_in_a_message_is_refused_whole():
    with server_with_metrics("--max-topics-per-message", "1000") as (server, admin):
        admin_ready(admin)
        subscriber, publisher = server.wire(), server.wire()
        subscriber.subscribe("t5", "other")
        wide = b"MESSAGE %s 1\r\nW" % topic_list("t", 1001)
        block = b"MESSAGE other 1\r\nA\r\n" + wide  # a good entry, then one too wide
        publisher.set("publish", b"MESSAGE other 6\r\nbefore")
        publisher.set("publish", block)
        publisher.set("publish", b"MESSAGE t5 5\r\nafter")
        assert publisher.line() == b"STORED\r\n"
        assert publisher.line() == (
            b"CLIENT_ERROR too many topics: more than 1000 named in one message (repeats "
            b"counted) exceeds max_topics_per_message 1000\r\n"
        )
        assert publisher.line() == b"STORED\r\n"
        # nobody gets any entry of the refused block, not even the good one
        assert subscriber.messages() == [(b"other", b"before"), (b"t5", b"after")]
        figures = metrics(admin)
        assert figures["kraken_protocol_errors_total{too_many_topics}"] == 1
        assert figures["kraken_published_messages_total"] == 2
        # exactly the limit is accepted
        publisher.set("publish", b"MESSAGE %s 1\r\nE" % topic_list("t", 1000))
        assert publisher.line() == b"STORED\r\n"
        assert subscriber.messages() == [(b"t5", b"E")]


def test_the_retro_buffer_is_bounded_in_bytes_and_NOT_FOUND_stays_exact():
    size = 16 * 1024
    charge = size + TOPIC_BYTES
    bound = 1024 * 1024  # 63 messages of 16 KiB on one topic
    kept = bound // charge
    options = (
        "--num-router-shards",
        "1",
        "--max-buffered-bytes-per-router-shard",
        str(bound),
    )
    with server_with_metrics(*options) as (server, admin):
        admin_ready(admin)
        publisher = server.wire()
        start = publisher.horizon()
        publisher.publish("quiet", b"q")
        horizons = []
        for i in range(100):
            horizons.append(publisher.horizon())  # the horizon before message i
            publisher.publish("big", b"%03d" % i + b"." * (size - 3))
        figures = metrics(admin)
        assert figures["kraken_buffered_messages"] == kept
        assert figures["kraken_buffered_bytes"] == kept * charge <= bound
        assert figures["kraken_buffer_evicted_for_bytes_total"] == 101 - kept
        first_kept = 100 - kept
        # a horizon before an evicted message on the topic: NOT_FOUND, never a gap
        for horizon in (start, horizons[first_kept - 1]):
            late = server.wire()
            late.set("retro_subscribe", horizon + b"\r\nbig").expect(b"NOT_FOUND\r\n")
            assert late.messages() == []
        # the oldest horizon the buffer still covers: exactly the messages since
        resumed = server.wire()
        resumed.set("retro_subscribe", horizons[first_kept] + b"\r\nbig").expect(b"STORED\r\n")
        got = resumed.messages()
        assert [payload[:3] for _, payload in got] == [b"%03d" % i for i in range(first_kept, 100)]
        assert all(len(payload) == size for _, payload in got)
        # per topic: the small message before the horizon went too; a topic that lost
        # nothing is complete
        quiet = server.wire()
        quiet.set("retro_subscribe", start + b"\r\nquiet").expect(b"NOT_FOUND\r\n")
        never = server.wire()
        never.set("retro_subscribe", start + b"\r\nnever").expect(b"STORED\r\n")


def vmhwm_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) // 1024


def test_one_topic_repeated_to_fill_a_block_is_refused_before_it_takes_memory():
    # hostile run 2: "MESSAGE a a a ... (4,194,294 times) 1" was STORED, the server's
    # peak 41 -> 857 MiB: max_topics_per_message counted distinct topics only, after
    # splitting every repeat into an object of its own
    with running_server() as server:
        publisher = server.wire()
        publisher.send(b"version\r\n")
        assert publisher.line().startswith(b"VERSION ")
        peak = vmhwm_mib(server.process.pid)
        names = b"a " * ((8 * 1024 * 1024 - 32) // 2)
        publisher.set("publish", b"MESSAGE " + names + b"1\r\nx")
        assert publisher.line() == (
            b"CLIENT_ERROR too many topics: more than 10000 named in one message (repeats "
            b"counted) exceeds max_topics_per_message 10000\r\n"
        )
        grown = vmhwm_mib(server.process.pid) - peak
        assert grown < 60, f"the peak grew by {grown} MiB for one refused 8 MiB request"
        publisher.publish("a", b"still served")  # the connection stays
