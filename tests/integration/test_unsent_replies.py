"""Replies a client does not read count against its limit (issue 11, defect 2).

A client that polls but never reads its replies pinned them in the server's
write buffer: 8 such clients with 40 MB each took the server from 96 to 466 MB of
RSS, none of it counted against ``max_queued_bytes`` or shown in ``/status``.
Now the bytes written but not yet taken by a client's socket count, with the
payload bytes queued for it, against ``max_queued_bytes``: past it the client is
a slow consumer. ``/status`` and ``/metrics`` show the bytes waiting.

Each test runs a real server and clients over loopback TCP. A client that does not
read has a small receive buffer; the kernel still takes some MB of replies (the
server's send buffer grows to 4 MB), so the tests poll until the server holds
some itself, as ``/status`` says.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kraken_testing import DEADLINE, ServerProcess, Wire, free_port, running_server, wait_until

MIB = 1 << 20
POLL = b"get messages\r\n"
SLOW_CONSUMER = b"SERVER_ERROR slow consumer\r\n"


class Admin:
    def __init__(self, port: int) -> None:
        self.port = port

    def get(self, path: str) -> bytes:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            body: bytes = response.read()
            return body

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.get("/status"))
        return answer

    def metrics(self) -> dict[str, float]:
        samples = {}
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


def server_with_admin(*options: str) -> tuple[Any, Admin]:
    admin = free_port()
    # a retro buffer of a few messages: the payloads the tests publish are not kept
    server = running_server(
        "--admin-port", str(admin), "--messages-stored-per-router-shard", "2", *options
    )
    return server, Admin(admin)


def not_reading(port: int) -> Wire:
    """A connection that takes replies slowly: a receive buffer of a few KB."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE)
    sock.connect(("127.0.0.1", port))
    wire = Wire.__new__(Wire)
    wire.sock, wire.buffer = sock, b""
    return wire


def read_to_the_end(wire: Wire) -> bytes:
    """Everything the server sends until it closes (a bytearray: MB of replies)."""
    data = bytearray(wire.buffer)
    wire.sock.settimeout(DEADLINE)
    while chunk := wire.sock.recv(1 << 20):
        data += chunk
    return bytes(data)


def fill_the_kernel(victim: Wire, publisher: Wire, admin: Admin, topic: str) -> None:
    """Publish to ``topic`` and have ``victim`` poll, never reading, until the kernel
    takes no more of its replies: the server holds a few KB of them (fewer than its
    write buffer's high-water mark: it still reads the victim's polls)."""
    before = admin.status()["unsent_bytes"]  # held for other clients
    chunk = b"k" * (32 * 1024)
    for _ in range(1000):  # the kernel takes some MB first
        publisher.publish(topic, chunk)
        victim.send(POLL)
        wait_until(lambda: admin.status()["queued_bytes"] == 0, "the poll to be answered")
        if admin.status()["unsent_bytes"] > before:
            return
    raise AssertionError("the kernel took every reply")


def back_up(victim: Wire, publisher: Wire, admin: Admin, topic: str, at_least: int) -> int:
    """Have the server hold more than ``at_least`` bytes of replies to ``victim`` that
    its socket has not taken: fill the kernel, then poll a reply of that size. The
    bytes it holds. (The other clients' unsent bytes must not change meanwhile.)"""
    fill_the_kernel(victim, publisher, admin, topic)
    before = admin.status()["unsent_bytes"]
    publisher.publish(topic, b"x" * (at_least + 64 * 1024))
    victim.send(POLL)
    wait_until(
        lambda: admin.status()["unsent_bytes"] > before + at_least, "the reply to wait unread"
    )
    unsent: int = admin.status()["unsent_bytes"] - before
    return unsent


def test_unsent_replies_and_queued_bytes_together_past_max_queued_bytes_make_a_slow_consumer():
    limit = 2 * MIB
    server_context, admin = server_with_admin("--max-queued-bytes", str(limit))
    with server_context as server:
        victim = not_reading(server.port)
        victim.subscribe("flood")
        reader = server.wire()
        reader.subscribe("calm")
        publisher = server.wire()
        unsent = back_up(victim, publisher, admin, "flood", limit // 2)
        assert reader.is_open()
        # surfaced while under the limit
        status = admin.status()
        assert limit >= status["unsent_bytes"] >= unsent > limit // 2
        assert status["slow_consumers"] == 0
        assert admin.metrics()["kraken_unsent_bytes"] >= unsent
        # now the queue fills: alone it stays well within the limit, with the unsent
        # bytes not
        published = 0
        while admin.status()["slow_consumers"] == 0:
            assert published < limit // 2, "not closed with its queue at half the limit"
            publisher.publish("flood", b"y" * 64 * 1024)
            published += 64 * 1024
        metrics = admin.metrics()
        assert metrics['kraken_disconnects_total{reason="slow_consumer"}'] == 1
        assert admin.status()["queued_bytes"] == 0  # its queue is dropped
        # the victim gets everything written before, then the error line, then EOF
        assert read_to_the_end(victim).endswith(b"\r\nEND\r\n" + SLOW_CONSUMER)
        wait_until(lambda: admin.status()["unsent_bytes"] == 0, "the unsent bytes to go")
        # the others are served on
        publisher.publish("calm", b"after")
        assert reader.messages() == [(b"calm", b"after")]
    assert "max_queued_bytes less any replies its transport has not sent yet" in server.output()


def test_a_reply_that_takes_a_client_past_the_limit_makes_it_a_slow_consumer_at_once():
    limit = 1 * MIB
    server_context, admin = server_with_admin("--max-queued-bytes", str(limit))
    with server_context as server:
        victim = not_reading(server.port)
        victim.subscribe("flood")
        publisher = server.wire()
        fill_the_kernel(victim, publisher, admin, "flood")
        for _ in range(16):  # a queue exactly at the limit: still fine
            publisher.publish("flood", b"z" * (limit // 16))
        assert admin.status()["slow_consumers"] == 0
        victim.send(POLL)  # its answer, MESSAGE lines and all, is past the limit
        wait_until(lambda: admin.status()["slow_consumers"] == 1, "the victim to be closed")
        # the server holds about the limit for it, until the victim reads or the close
        # grace ends
        assert admin.status()["largest_unsent_bytes"] <= limit + 64 * 1024
        assert read_to_the_end(victim).endswith(SLOW_CONSUMER)
    log = server.output()
    assert "WARNING kraken.server: client" in log
    assert "bytes of replies not taken by its socket" in log


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_eight_clients_that_poll_and_never_read_hold_at_most_their_limit():
    """The issue's case: 8 clients polling and never reading took 370 MB. Each may now
    hold its limit (unsent and queued together), not twice it, and not longer than
    it takes to be closed."""
    limit = 8 * MIB
    clients = 8
    server_context, admin = server_with_admin("--max-queued-bytes", str(limit))
    with server_context as server:
        assert isinstance(server, ServerProcess)
        publisher = server.wire()
        victims = []
        for i in range(clients):
            victim = not_reading(server.port)
            victim.subscribe(f"v{i}")
            victims.append(victim)
        before = rss(server.process.pid)
        peak = before
        for i, victim in enumerate(victims):
            back_up(victim, publisher, admin, f"v{i}", limit // 2)
            peak = max(peak, rss(server.process.pid))
        assert admin.status()["slow_consumers"] == 0
        # then 3/4 of the limit queued for each: within the limit alone, not with what
        # it has not read
        for i in range(clients):
            for _ in range(3):
                publisher.publish(f"v{i}", b"w" * (limit // 4))
                peak = max(peak, rss(server.process.pid))
        wait_until(lambda: admin.status()["slow_consumers"] == clients, "every victim closed")
        status = admin.status()
        assert status["queued_bytes"] == 0  # the slow consumers' queues are dropped
        assert status["unsent_bytes"] <= clients * (limit + 64 * 1024)
        peak = max(peak, rss(server.process.pid))
        # generous: the limit for each, twice over (a reply is built, then written)
        assert peak - before < clients * limit * 2 + 64 * MIB, (before, peak)
        for victim in victims:
            victim.close()
