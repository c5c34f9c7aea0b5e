"""The admin HTTP API against a real server: clients on the Kraken port over TCP,
the API over HTTP, both on loopback.

Each test runs a KrakenServer and its AdminServer in a background thread's event
loop of this process, so it can read the server's state and count its log; the
commands that use the API end to end are in test_cli.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from kraken import __version__
from kraken.config import Config
from kraken.errors import ERROR_KINDS
from kraken.server import KrakenServer
from kraken.server.admin import AdminServer
from kraken.wire import Rejected, RequestParser
from kraken_testing import DEADLINE, Wire, wait_until

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
kraken_log = logging.getLogger("kraken")


def get_level() -> str:
    level = kraken_log.getEffectiveLevel()
    return next(name for name, number in LEVELS.items() if number == level)


def set_level(name: str) -> None:
    kraken_log.setLevel(LEVELS[name])


class Running:
    """A KrakenServer and its AdminServer in an event loop on a background thread."""

    def __init__(self, **options: Any) -> None:
        config = Config(
            listen_ip="127.0.0.1", tcp_server_port=0, admin_ip="127.0.0.1", admin_port=0, **options
        )
        self.shutdown_requested = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = KrakenServer(config)
        self.admin = AdminServer(
            self.server,
            get_log_level=get_level,
            set_log_level=set_level,
            request_shutdown=self._request_shutdown,
        )
        self.run(self.server.start())
        self.run(self.admin.start())
        self.token = config.admin_token
        self.wires: list[Wire] = []
        self.drains: list[float] = []  # the drain of each shutdown requested

    def _request_shutdown(self, drain: float) -> None:
        self.drains.append(drain)
        self.shutdown_requested.set()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(DEADLINE)

    def close(self) -> None:
        for wire in self.wires:
            wire.close()
        self.run(self.admin.stop())
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()

    def wire(self) -> Wire:
        wire = Wire(self.server.port)
        self.wires.append(wire)
        return wire

    def http(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any, str]:
        """(status, body parsed as JSON unless it is text, content type) of one request."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin.port}{path}", data=data, method=method
        )
        token = self.token if token is None else token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:  # as `kraken` sends it; urllib would say form-urlencoded
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=DEADLINE) as response:
                status, raw, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, kind = error.code, error.read(), error.headers
        content_type = kind.get("Content-Type", "")
        text = raw.decode()
        return status, json.loads(text) if "json" in content_type else text, content_type

    def get(self, path: str) -> Any:
        status, body, _ = self.http("GET", path)
        assert status == 200, (path, status, body)
        return body

    def metrics(self) -> dict[str, float]:
        """Samples by name, labels appended as name{label="value"}."""
        samples = {}
        for family in text_string_to_metric_families(self.get("/metrics")):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


@contextlib.contextmanager
def running(**options: Any) -> Iterator[Running]:
    saved = kraken_log.level
    kraken_log.setLevel(logging.INFO)
    running = Running(**options)
    try:
        yield running
    finally:
        running.close()
        kraken_log.setLevel(saved)


@pytest.fixture
def kraken() -> Iterator[Running]:
    with running() as r:
        yield r


def peer(wire: Wire) -> str:
    host, port = wire.sock.getsockname()
    return f"{host}:{port}"


def alice_and_bob(kraken: Running) -> tuple[Wire, Wire]:
    """alice subscribes to news, sports and caf\\xe9 and polls once; bob, on news,
    publishes three messages, one of them after alice's poll."""
    alice, bob = kraken.wire(), kraken.wire()
    alice.subscribe("news", "sports")
    alice.set("subscribe", b"caf\xe9").expect(b"STORED\r\n")
    bob.subscribe("news")
    bob.publish("news", b"one")
    bob.publish("sports", b"two")
    assert alice.messages() == [(b"news", b"one"), (b"sports", b"two")]
    bob.publish("news", b"three")
    return alice, bob


def test_health_is_ok(kraken: Running) -> None:
    status, body, content_type = kraken.http("GET", "/health")
    assert (status, body) == (200, {"status": "ok"})
    assert content_type.startswith("application/json")


def test_status_counts_clients_topics_subscriptions_and_queued_messages(kraken: Running) -> None:
    alice_and_bob(kraken)
    status = kraken.get("/status")
    assert status["uptime_seconds"] >= 0
    assert isinstance(status["pid"], int)
    assert status["version"] == __version__
    del status["uptime_seconds"], status["pid"], status["version"]
    assert status.pop("bytes_received") > 0 and status.pop("bytes_sent") > 0
    config = kraken.server.config
    assert status == {
        "listen": f"127.0.0.1:{kraken.server.port}",
        "clients": 2,
        "draining": False,
        "topics": 3,
        "subscriptions": 4,
        "queued_messages": 1,
        "log_level": "info",
        # counters since start
        "connections_accepted": 2,
        "published": 3,
        "deliveries": 3,  # each to alice: the publisher's own queue never gets one
        "slow_consumers": 0,
        # how near the limits: alice's queue holds b"three"
        "max_tcp_clients": config.max_tcp_clients,
        "queued_bytes": 5,
        "largest_queue_messages": 1,
        "largest_queue_bytes": 5,
        "unsent_bytes": 0,  # every reply taken by the sockets
        "largest_unsent_bytes": 0,
        "max_queued_messages": config.max_queued_messages,
        "max_queued_bytes": config.max_queued_bytes,
    }


def test_queues_list_each_client_with_its_queue_and_last_poll(kraken: Running) -> None:
    alice, bob = alice_and_bob(kraken)
    queues = {q["peer"]: q for q in kraken.get("/queues")}
    assert set(queues) == {peer(alice), peer(bob)}
    a, b = queues[peer(alice)], queues[peer(bob)]
    assert (a["queued"], a["received"], a["subscriptions"]) == (1, 2, 3)
    assert (b["queued"], b["received"], b["subscriptions"]) == (0, 0, 1)
    assert 0 <= a["since_last_poll_seconds"] < DEADLINE
    assert b["since_last_poll_seconds"] is None
    assert 0 <= a["connected_seconds"] < DEADLINE
    assert a["id"] != b["id"]


def test_queue_topics_are_sorted_and_undecodable_bytes_escaped(kraken: Running) -> None:
    alice, _ = alice_and_bob(kraken)
    alice_id = next(q["id"] for q in kraken.get("/queues") if q["peer"] == peer(alice))
    assert kraken.get(f"/queues/{alice_id}/topics") == {
        "id": alice_id,
        "topics": ["caf\\xe9", "news", "sports"],
    }


def test_queue_topics_of_an_unknown_client_is_404_and_of_a_non_integer_400(
    kraken: Running,
) -> None:
    status, body, _ = kraken.http("GET", "/queues/999/topics")
    assert (status, body) == (404, {"error": "no connected client 999"})
    status, body, _ = kraken.http("GET", "/queues/abc/topics")
    assert status == 400
    assert "integer" in body["error"]


def test_topics_are_listed_most_subscribers_first_then_by_topic(kraken: Running) -> None:
    alice_and_bob(kraken)
    assert kraken.get("/topics") == [
        {"topic": "news", "subscribers": 2},
        {"topic": "caf\\xe9", "subscribers": 1},
        {"topic": "sports", "subscribers": 1},
    ]


def test_unknown_path_and_wrong_method_are_json_errors(kraken: Running) -> None:
    assert kraken.http("GET", "/nope")[:2] == (404, {"error": "not found"})
    assert kraken.http("DELETE", "/health")[:2] == (405, {"error": "method not allowed"})


def test_put_log_level_sets_the_kraken_logger_level(kraken: Running) -> None:
    assert kraken.get("/log_level") == {"level": "info"}
    assert kraken.http("PUT", "/log_level", {"level": "debug"})[:2] == (200, {"level": "debug"})
    assert kraken_log.level == logging.DEBUG
    assert kraken.get("/log_level") == {"level": "debug"}
    assert kraken.http("PUT", "/log_level", {"level": "warn"})[:2] == (200, {"level": "warn"})
    assert kraken_log.level == logging.WARNING


UNKNOWN_LEVEL = "level must be one of debug, info, warn, error (or warning)"
NOT_AN_OBJECT = 'body is JSON but not an object: send {"level": "debug"}'


@pytest.mark.parametrize(
    ("body", "wanted"),
    [
        ({"level": "loud"}, UNKNOWN_LEVEL),
        ({"level": 10}, UNKNOWN_LEVEL),
        ({}, UNKNOWN_LEVEL),
        (["debug"], NOT_AN_OBJECT),
        ("debug", NOT_AN_OBJECT),
    ],
)
def test_put_log_level_rejects_anything_but_a_known_level(
    kraken: Running, body: Any, wanted: str
) -> None:
    status, reply, _ = kraken.http("PUT", "/log_level", body)
    assert (status, reply) == (400, {"error": wanted})
    assert kraken_log.level == logging.INFO


def test_put_log_level_reads_warning_as_warn(kraken: Running) -> None:
    assert kraken.http("PUT", "/log_level", {"level": "warning"})[:2] == (200, {"level": "warn"})
    assert kraken_log.level == logging.WARNING


def test_shutdown_answers_202_then_requests_the_shutdown(kraken: Running) -> None:
    assert not kraken.shutdown_requested.is_set()
    status, body, _ = kraken.http("POST", "/shutdown", {})
    assert (status, body) == (202, {"status": "shutting down", "drain_seconds": 5.0})
    assert kraken.shutdown_requested.wait(DEADLINE)
    assert kraken.drains == [5.0]  # shutdown_drain_seconds, the default


@pytest.mark.parametrize("drain", [0, 2.5])
def test_shutdown_takes_the_drain_given(kraken: Running, drain: float) -> None:
    status, body, _ = kraken.http("POST", "/shutdown", {"drain": drain})
    assert (status, body) == (202, {"status": "shutting down", "drain_seconds": drain})
    assert kraken.shutdown_requested.wait(DEADLINE)
    assert kraken.drains == [drain]


@pytest.mark.parametrize("drain", [-1, "5", True, [], 1e309])
def test_shutdown_refuses_a_drain_that_is_no_number_of_seconds(kraken: Running, drain: object):
    status, body, _ = kraken.http("POST", "/shutdown", {"drain": drain})
    assert (status, body) == (400, {"error": "drain must be a number of seconds, 0 or more"})
    assert not kraken.shutdown_requested.is_set()


def test_metrics_count_messages_bytes_and_protocol_errors_by_kind(kraken: Running) -> None:
    _, bob = alice_and_bob(kraken)
    bob.request(b"bogus\r\n", b"ERROR\r\n")
    bob.set("subscribe", b"bad\x01topic").expect(b"CLIENT_ERROR bad topic\r\n")
    bob.set("frobnicate", b"").expect(b"CLIENT_ERROR unknown command frobnicate\r\n")
    bob.set("retro_subscribe", b"12x\r\nnews").expect(b"CLIENT_ERROR bad horizon\r\n")
    broken = kraken.wire()
    broken.request(b"set subscribe 0 0 many\r\n", b"CLIENT_ERROR bad data length\r\n")
    assert broken.closed()
    wait_until(
        lambda: kraken.metrics()['kraken_disconnects_total{reason="framing_error"}'] == 1, "close"
    )
    bob.send(b"quit\r\n")
    assert bob.closed()
    wait_until(
        lambda: kraken.metrics()['kraken_disconnects_total{reason="client_quit"}'] == 1, "quit"
    )

    m = kraken.metrics()
    assert m["kraken_published_messages_total"] == 3
    assert m["kraken_deliveries_total"] == 3
    assert m["kraken_connections"] == 1
    assert m["kraken_connections_accepted_total"] == 3
    assert m["kraken_topics"] == 3
    assert m["kraken_subscriptions"] == 3
    assert m["kraken_queued_messages"] == 1
    assert m["kraken_buffered_messages"] == 3
    assert m["kraken_retro_requests_total"] == 0
    assert m["kraken_bytes_received_total"] == kraken.server.bytes_received > 0
    assert m["kraken_bytes_sent_total"] == kraken.server.bytes_sent > 0
    assert m["kraken_uptime_seconds"] >= 0
    errors = {kind: m[f'kraken_protocol_errors_total{{kind="{kind}"}}'] for kind in ERROR_KINDS}
    assert errors == {
        "unknown_command": 1,
        "bad_topic": 1,
        "bad_horizon": 1,
        "bad_publish_block": 0,
        "unknown_set_command": 1,
        "bad_push_option": 0,
        "framing": 1,
        "forbidden": 0,
        "too_many_subscriptions": 0,
        "too_many_topics": 0,
        "server_error": 0,
        "other": 0,
    }
    assert m['kraken_disconnects_total{reason="slow_consumer"}'] == 0
    if sys.platform == "linux":  # the process collector reads /proc
        assert m["process_open_fds"] > 0


def test_metrics_use_the_prometheus_text_content_type(kraken: Running) -> None:
    status, text, content_type = kraken.http("GET", "/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE_LATEST)
    assert "# TYPE kraken_published_messages_total counter" in text


def test_metrics_count_retro_subscribes_and_not_found(kraken: Running) -> None:
    client = kraken.wire()
    horizon = client.horizon()
    client.set("retro_subscribe", horizon + b"\r\nnews").expect(b"STORED\r\n")
    client.set("retro_subscribe", b"1\r\nnews").expect(b"NOT_FOUND\r\n")
    m = kraken.metrics()
    assert (m["kraken_retro_requests_total"], m["kraken_retro_not_found_total"]) == (2, 1)


def test_metrics_count_a_slow_consumer_disconnect() -> None:
    with running(max_queued_messages=2) as kraken:
        slow, publisher = kraken.wire(), kraken.wire()
        slow.subscribe("sc")
        for i in range(3):
            publisher.publish("sc", b"%d" % i)
        assert slow.line() == b"SERVER_ERROR slow consumer\r\n"

        def counted() -> bool:
            return kraken.metrics()['kraken_disconnects_total{reason="slow_consumer"}'] == 1

        wait_until(counted, "the slow consumer's disconnect")


def test_metrics_count_an_idle_timeout_disconnect() -> None:
    with running(client_idle_timeout=0.2) as kraken:
        idle = kraken.wire()
        assert idle.closed()

        def counted() -> bool:
            return kraken.metrics()['kraken_disconnects_total{reason="idle_timeout"}'] == 1

        wait_until(counted, "the idle client's disconnect")
        assert kraken.get("/queues") == []


@pytest.mark.parametrize("path", ["/health", "/metrics", "/status", "/nope"])
def test_with_a_token_requests_without_it_or_with_a_wrong_one_are_401(path: str) -> None:
    with running(admin_token="s3cret") as kraken:
        for wrong in ("", "guess", "S3CRET"):
            kraken.token = wrong
            status, body, _ = kraken.http("GET", path)
            assert (status, body) == (401, {"error": "missing or wrong bearer token"})
        kraken.token = "s3cret"
        assert kraken.http("GET", path)[0] == (404 if path == "/nope" else 200)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"bogus\r\n", "unknown_command"),
        (b"set subscribe 0 0 3\r\na\x01b\r\n", "bad_topic"),
        (b"set retro_subscribe 0 0 7\r\n12x\r\nab\r\n", "bad_horizon"),
        (b"set publish 0 0 7\r\nMESSAGE\r\n", "bad_publish_block"),
        (b"set frobnicate 0 0 0\r\n\r\n", "unknown_set_command"),
        (b"set subscribe 0 0 1\r\nabc\r\n", "framing"),
        (b"set subscribe 0\r\n", "framing"),
        (b"set subscribe 0 0 many\r\n", "framing"),
        (b"x" * 8200, "framing"),
        (b"set subscribe 0 0 99999999999\r\n", "framing"),
    ],
)
def test_each_rejected_request_has_a_short_kind_of_its_error_class(data: bytes, kind: str) -> None:
    (rejected,) = RequestParser().feed(data)
    assert isinstance(rejected, Rejected)
    assert rejected.error.kind == kind
    assert kind in ERROR_KINDS


def test_distinct_unknown_commands_do_not_grow_the_error_counter(kraken: Running) -> None:
    """The error counter is keyed by kind: a client inventing command names adds no key."""
    wire = kraken.wire()
    for i in range(500):
        wire.set(f"verb{i}", b"", noreply=True)
        wire.send(b"verb%d\r\n" % i)
    for _ in range(500):
        wire.expect(b"ERROR\r\n")
    assert dict(kraken.server.errors) == {"unknown_set_command": 500, "unknown_command": 500}


def test_a_reset_connection_is_counted_apart_from_a_clean_close(kraken: Running) -> None:
    clean, reset = kraken.wire(), kraken.wire()
    clean.subscribe("a")
    reset.subscribe("b")
    clean.close()
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN
    reset.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.close()
    wait_until(lambda: kraken.metrics()["kraken_connections"] == 0, "both closes")
    m = kraken.metrics()
    assert m['kraken_disconnects_total{reason="client_closed"}'] == 1
    assert m['kraken_disconnects_total{reason="connection_reset"}'] == 1
