"""A proxy node (``kraken run --upstream HOST:PORT``) in front of a node, as real
processes over loopback TCP, some through a forwarder the test can cut.

The proxy serves its clients the whole contract; it is one client to its
upstream, subscribed once to each topic its clients hold; a publish is fanned
out locally at once and sent upstream once; a lost link resumes from the last
pushed horizon, and when the upstream no longer has that history the proxy's
clients of those topics are told (``SERVER_ERROR state lost``) and their resume
is ``NOT_FOUND``, never a silent gap.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pymemcache.client.base import Client as Memcache

from client.proxy import Proxy
from kraken_testing import (
    DEADLINE,
    ServerProcess,
    Wire,
    free_port,
    kraken,
    running_server,
    wait_until,
)


class Forwarder(Proxy):
    """The tests' cuttable TCP relay (``tests/client/proxy.py``), cut and restored as a
    link: ``cut`` closes every connection through it and refuses new ones."""

    def cut(self) -> None:
        self.refusing = True
        super().cut()

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def admin_get(server: ServerProcess, path: str) -> object:
    # the admin port was 0 (a free one): the log names it
    port = int(server.output().split("admin API listening on 127.0.0.1:")[1].split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE) as answer:
        return json.load(answer)


def link_up(proxy: ServerProcess, times: int = 1) -> None:
    wait_until(
        lambda: (
            proxy.output().count("upstream link to ") >= times
            and f"up (connection {times})" in proxy.output()
        ),
        f"the proxy's upstream link up (connection {times})",
    )


@contextmanager
def cluster(
    *options: str, through_forwarder: bool = False
) -> Iterator[tuple[ServerProcess, ServerProcess, Forwarder | None]]:
    with running_server() as node:
        forwarder = Forwarder(node.port) if through_forwarder else None
        target = forwarder.port if forwarder is not None else node.port
        try:
            with running_server("--upstream", f"127.0.0.1:{target}", *options) as proxy:
                link_up(proxy)
                yield node, proxy, forwarder
        finally:
            if forwarder is not None:
                forwarder.close()


def collect(wire: Wire, n: int) -> list[tuple[bytes, bytes]]:
    """Poll until ``n`` messages came (or the deadline passed); all that came."""
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + DEADLINE
    while len(got) < n and time.monotonic() < deadline:
        got += wire.messages()
        time.sleep(0.01)
    return got


def held_upstream(node: ServerProcess, topic: str) -> int:
    """How many of the node's clients hold ``topic``."""
    topics = admin_get(node, "/topics")
    assert isinstance(topics, list)
    return next((t["subscribers"] for t in topics if t["topic"] == topic), 0)


def test_messages_cross_the_proxy_both_ways_once_each_and_never_back_to_their_publisher() -> None:
    with cluster() as (node, proxy, _):
        on_proxy, on_node = proxy.wire(), node.wire()
        on_proxy.subscribe("a")
        on_node.subscribe("a")
        wait_until(lambda: held_upstream(node, "a") == 2, "the proxy holding a upstream")
        pub_node, pub_proxy = node.wire(), proxy.wire()
        pub_node.subscribe("a")  # a publisher subscribed too gets the others', not its own
        pub_proxy.subscribe("a")
        wait_until(lambda: held_upstream(node, "a") == 3, "pub_node's subscription")
        pub_node.publish("a", b"from the node")
        pub_proxy.publish("a", b"from the proxy")
        expected = {(b"a", b"from the node"), (b"a", b"from the proxy")}
        for wire in (on_proxy, on_node):
            # each once (their order: docs/cluster.md)
            assert sorted(collect(wire, 2)) == sorted(expected)
            assert wire.messages() == []
        assert pub_node.messages() == [(b"a", b"from the proxy")]
        time.sleep(0.2)  # an echo from upstream would have come by now
        assert pub_proxy.messages() == [(b"a", b"from the node")]
        assert on_proxy.messages() == []


def test_a_topic_held_by_many_clients_of_the_proxy_is_one_subscription_upstream() -> None:
    with cluster("--upstream-linger", "0.5") as (node, proxy, _):
        clients = [proxy.wire() for _ in range(50)]
        for client in clients:
            client.subscribe("shared")
        wait_until(lambda: held_upstream(node, "shared") == 1, "one upstream subscription")
        time.sleep(0.3)
        assert held_upstream(node, "shared") == 1
        status = admin_get(node, "/status")
        assert isinstance(status, dict) and status["clients"] == 1  # the link, alone
        publisher = node.wire()
        publisher.publish("shared", b"to fifty")
        for client in clients:
            wait_until(lambda c=client: c.messages() == [(b"shared", b"to fifty")], "delivery")
        for client in clients:
            client.unsubscribe("shared")
        time.sleep(0.2)  # lingering: still held
        assert held_upstream(node, "shared") == 1
        wait_until(lambda: held_upstream(node, "shared") == 0, "the linger over", timeout=15)


def test_retroactivity_through_the_proxy_is_exact_or_not_found() -> None:
    with cluster() as (node, proxy, _):
        holder = proxy.wire()
        holder.subscribe("held")
        wait_until(lambda: held_upstream(node, "held") == 1, "held upstream")
        time.sleep(0.1)
        horizon = proxy.wire().horizon()
        publisher = node.wire()
        publisher.publish("held", b"1")
        publisher.publish("fresh", b"2")
        wait_until(lambda: holder.messages() == [(b"held", b"1")], "the push")
        late = proxy.wire()
        late.set("retro_subscribe", horizon + b"\r\nheld").expect(b"STORED\r\n")
        assert late.messages() == [(b"held", b"1")]
        # never held here since that horizon: what was published upstream never came
        fresh = proxy.wire()
        fresh.set("retro_subscribe", horizon + b"\r\nfresh").expect(b"NOT_FOUND\r\n")
        wait_until(lambda: held_upstream(node, "fresh") == 1, "fresh held from now on")
        publisher.publish("fresh", b"3")
        wait_until(lambda: fresh.messages() == [(b"fresh", b"3")], "fresh subscribed all the same")


def test_a_publish_through_a_proxy_without_its_upstream_is_a_server_error() -> None:
    with cluster(through_forwarder=True) as (_, proxy, forwarder):
        assert forwarder is not None
        forwarder.cut()
        wait_until(
            lambda: "upstream link to " in proxy.output() and " lost (" in proxy.output(), "lost"
        )
        publisher = proxy.wire()
        publisher.set("publish", b"MESSAGE a 1\r\nx")
        assert publisher.line() == b"SERVER_ERROR upstream unreachable\r\n"
        assert publisher.is_open()


def test_a_cut_link_resumes_without_a_gap() -> None:
    with cluster(through_forwarder=True) as (node, proxy, forwarder):
        assert forwarder is not None
        subscriber = proxy.wire()
        subscriber.subscribe("t")
        wait_until(lambda: held_upstream(node, "t") == 1, "held")
        publisher = node.wire()
        publisher.publish("t", b"before")
        wait_until(lambda: subscriber.messages() == [(b"t", b"before")], "before")
        forwarder.cut()
        wait_until(lambda: held_upstream(node, "t") == 0, "the node saw the link go")
        for i in range(3):
            publisher.publish("t", b"during %d" % i)
        forwarder.restore()
        link_up(proxy, 2)
        assert collect(subscriber, 3) == [(b"t", b"during %d" % i) for i in range(3)]
        assert subscriber.is_open()
        assert "resumed 1 topic(s), nothing lost" in proxy.output()


def test_when_the_upstream_lost_the_gap_the_proxys_clients_are_told() -> None:
    # the node restarts: its history starts again, so the link cannot resume
    port = free_port()
    node = ServerProcess(port=port)
    try:
        with running_server("--upstream", f"127.0.0.1:{port}") as proxy:
            link_up(proxy)
            subscriber = proxy.wire()
            subscriber.subscribe("t")
            bystander = proxy.wire()
            bystander.subscribe("other")
            wait_until(lambda: held_upstream(node, "t") == 1, "held")
            horizon = subscriber.horizon()
            node.stop()
            node = ServerProcess(port=port)
            link_up(proxy, 2)
            assert subscriber.closed()
            assert subscriber.buffer.startswith(b"SERVER_ERROR state lost: ")
            resumed = proxy.wire()
            resumed.set("retro_subscribe", horizon + b"\r\nt").expect(b"NOT_FOUND\r\n")
            assert bystander.closed()  # every topic held lost its history, "other" too
    finally:
        node.stop()


def test_an_original_protocol_client_cannot_tell_the_proxy_from_a_node() -> None:
    with cluster() as (node, proxy, _):
        memcache = Memcache(("127.0.0.1", proxy.port), default_noreply=False)
        assert memcache.set("subscribe", b"news") is True
        wait_until(lambda: held_upstream(node, "news") == 1, "held")
        Wire(node.port).publish("news", b"hello")
        wait_until(lambda: memcache.get("messages") == b"MESSAGE news 5\r\nhello", "delivered")
        assert memcache.set("publish", b"MESSAGE news 3\r\nbye") is True
        memcache.close()


def test_status_and_metrics_show_the_link() -> None:
    with cluster(through_forwarder=True) as (node, proxy, forwarder):
        assert forwarder is not None
        subscriber = proxy.wire()
        subscriber.subscribe("t")
        wait_until(lambda: held_upstream(node, "t") == 1, "held")
        node.wire().publish("t", b"in")
        proxy.wire().publish("t", b"out")
        assert sorted(collect(subscriber, 2)) == [(b"t", b"in"), (b"t", b"out")]
        status = admin_get(proxy, "/status")
        assert isinstance(status, dict)
        link = status["upstream"]
        assert link["address"] == f"127.0.0.1:{forwarder.port}"
        assert (link["state"], link["connects"], link["topics_held"]) == ("up", 1, 1)
        assert (link["messages_in"], link["messages_out"]) == (1, 1)
        port = int(proxy.output().split("admin API listening on 127.0.0.1:")[1].split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE) as r:
            metrics = r.read().decode()
        assert "kraken_upstream_up 1.0" in metrics
        assert "kraken_upstream_messages_in_total 1.0" in metrics
        shown = kraken("status", "--admin-port", str(port)).stdout
        assert f"upstream: 127.0.0.1:{forwarder.port} up for " in shown
        assert "topics: 1 wanted, 1 held since before any gap; messages in 1, out 1" in shown
        forwarder.cut()
        wait_until(lambda: admin_get(proxy, "/status")["upstream"]["state"] == "connecting", "down")  # type: ignore[index]
        assert "upstream" not in admin_get(node, "/status")  # type: ignore[operator]


def test_an_upstream_that_is_the_server_itself_is_refused_at_start() -> None:
    port = free_port()
    result = kraken(
        "run",
        "--tcp-server-port",
        str(port),
        "--admin-port",
        "0",
        "--upstream",
        f"localhost:{port}",
    )
    assert result.returncode == 2
    assert f"upstream localhost:{port} is this server itself" in result.stderr
    result = kraken("run", "--tcp-server-port", str(port), "--upstream", "nowhere")
    assert result.returncode == 2
    assert "upstream must be HOST:PORT, got 'nowhere'" in result.stderr


def test_a_link_refused_by_a_full_node_keeps_trying_and_comes_up_once_there_is_room() -> None:
    # review: a node that took the connection and refused it (max_tcp_clients) left
    # the link waiting for good, since the close came before the wait began
    with running_server("--max-tcp-clients", "1") as node:
        while True:  # the one slot (the start's probe may hold it a moment)
            taken = node.wire()
            taken.send(b"version\r\n")
            if taken.line().startswith(b"VERSION "):
                break
            taken.close()
            time.sleep(0.05)
        with running_server("--upstream", f"127.0.0.1:{node.port}") as proxy:
            wait_until(lambda: "refused push mode: Too many clients" in proxy.output(), "refused")
            time.sleep(1.0)
            refusals = proxy.output().count("refused push mode")
            assert refusals < 10, f"{refusals} tries in about a second: no backoff"
            taken.close()
            link_up(proxy)


def test_a_resumed_link_does_not_bring_back_the_proxys_own_publishes() -> None:
    # review: the node leaves a message out of a replay only for the connection that
    # published it, and the resumed link is a new one
    with cluster(through_forwarder=True) as (node, proxy, forwarder):
        assert forwarder is not None
        subscriber = proxy.wire()
        subscriber.subscribe("t")
        wait_until(lambda: held_upstream(node, "t") == 1, "held")
        proxy.wire().publish("t", b"from the proxy")
        assert collect(subscriber, 1) == [(b"t", b"from the proxy")]
        forwarder.cut()
        forwarder.restore()
        link_up(proxy, 2)
        node.wire().publish("t", b"after")
        assert collect(subscriber, 1) == [(b"t", b"after")]
        time.sleep(0.2)
        assert subscriber.messages() == []


def test_topics_the_upstream_refuses_to_hold_close_their_clients_saying_why() -> None:
    with (
        running_server("--max-subscriptions-per-client", "2") as node,
        running_server("--upstream", f"127.0.0.1:{node.port}") as proxy,
    ):
        link_up(proxy)
        clients = [proxy.wire() for _ in range(3)]
        for client, topic in zip(clients, ("a", "b", "c"), strict=True):
            client.subscribe(topic)
            time.sleep(0.1)  # in this order upstream
        assert clients[2].closed()
        assert clients[2].buffer.startswith(
            b"SERVER_ERROR upstream refused the subscription: CLIENT_ERROR too many subscriptions"
        )
        assert clients[0].is_open() and clients[1].is_open()
        node.wire().publish("a", b"held")
        assert collect(clients[0], 1) == [(b"a", b"held")]


def test_a_run_of_publishes_larger_than_a_request_reaches_the_node_in_pieces() -> None:
    # review: three 40 KB publishes pipelined to a proxy were joined into one
    # 120 KB request, past the node's max_request_bytes: the node closed the link
    # (here 4 KB each, under a 10 KB limit: small enough to come in one read)
    limit = ("--max-request-bytes", "10000")
    with (
        running_server(*limit) as node,
        running_server("--upstream", f"127.0.0.1:{node.port}", *limit) as proxy,
    ):
        link_up(proxy)
        on_node = node.wire()
        on_node.subscribe("big")
        payloads = [bytes([65 + i]) * 4000 for i in range(3)]
        entries = [b"MESSAGE big 4000\r\n" + p for p in payloads]
        publisher = proxy.wire()
        publisher.send(b"".join(b"set publish 0 0 %d\r\n%b\r\n" % (len(e), e) for e in entries))
        assert [publisher.line() for _ in range(3)] == [b"STORED\r\n"] * 3
        assert collect(on_node, 3) == [(b"big", p) for p in payloads]
        assert "framing error" not in node.output()


def test_chunks_keep_each_forwarded_request_within_the_limit() -> None:
    from kraken.brokers.upstream import ENTRY_OVERHEAD, _chunks

    entries = [((b"t",), b"x" * 100) for _ in range(10)]
    each = 100 + 1 + 1 + ENTRY_OVERHEAD
    chunks = _chunks(entries, 3 * each)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [e for c in chunks for e in c] == entries
    assert _chunks(entries[:1], 10) == [tuple(entries[:1])]  # one entry alone always goes


def test_a_malformed_push_from_upstream_drops_the_link_and_the_proxy_serves_on() -> None:
    # a peer that is no well-behaved node: push mode accepted, then a push whose block
    # and horizon are garbage. The proxy must not crash, nor deliver any of it
    listener = socket.create_server(("127.0.0.1", 0))
    connections = []

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            connections.append(sock)
            with suppress(OSError):
                sock.recv(65536)  # set push, and the first requests
                sock.sendall(
                    b"STORED\r\nVALUE push 0 5\r\nxxxxx\r\nVALUE horizon 0 3\r\nabc\r\nEND\r\n"
                )

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        with running_server("--upstream", f"127.0.0.1:{port}") as proxy:
            wait_until(lambda: "sent a push that is no push" in proxy.output(), "refused")
            wait_until(lambda: len(connections) >= 2, "a reconnect")
            client = proxy.wire()
            client.subscribe("t")
            client.send(b"version\r\n")
            assert client.line().startswith(b"VERSION ")
            assert client.messages() == []
            assert "Traceback" not in proxy.output()
    finally:
        listener.close()
        for sock in connections:
            sock.close()
