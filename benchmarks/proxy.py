"""What a proxy hop costs: added latency at idle, and upstream traffic per message.

One node and one proxy in front of it (``kraken run --upstream``), each a child
process on loopback. A publisher on the node publishes one small message every
``--interval`` seconds to a topic held by a subscriber on the node and by
``--local`` subscribers on the proxy, all in push mode (``set push stamps``
is not needed: the receipt time is taken when a push arrives). The figures:

- the latency of each message to the node's subscriber and to a proxy's, from
  the publish's write; their difference at p50 and p99 is the hop's added
  latency (target: at most 2 ms);
- the node's deliveries per message published: however many subscribers the
  proxy has, the proxy is one client to the node (target: exactly 1, plus the
  node's own subscriber).

    python -m benchmarks.proxy [--messages 500] [--interval 0.01] [--local 500]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time
import urllib.request
from collections.abc import Iterable

from benchmarks.servers import ServerProcess, start_kraken

TOPIC = b"hop"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def expect(sock: socket.socket, wanted: bytes) -> None:
    got = b""
    while len(got) < len(wanted):
        chunk = sock.recv(len(wanted) - len(got))
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    if got != wanted:
        raise AssertionError(f"expected {wanted!r}, got {got!r}")


def pusher(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(b"set subscribe 0 0 %d\r\n%b\r\nset push 0 0 0\r\n\r\n" % (len(TOPIC), TOPIC))
    expect(sock, b"STORED\r\nSTORED\r\n")
    sock.setblocking(False)
    return sock


def admin_port(server: ServerProcess) -> int:
    out = server.output()
    return int(out.split("admin API listening on 127.0.0.1:")[1].split()[0])


def status(server: ServerProcess) -> dict[str, object]:
    url = f"http://127.0.0.1:{admin_port(server)}/status"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)  # type: ignore[no-any-return]


ENTRY = b"MESSAGE %b 1\r\nx" % TOPIC


def arrivals(
    socks: Iterable[socket.socket],
    received: dict[socket.socket, list[float]],
    tails: dict[socket.socket, bytes],
) -> None:
    """Note the arrival time of each message come (a push may carry several, and an
    entry may span two reads: the end of the last read is kept)."""
    for sock in socks:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            continue
        if data:
            now = time.perf_counter()
            seen = tails.get(sock, b"") + data
            received[sock].extend([now] * seen.count(ENTRY))
            tails[sock] = seen[-(len(ENTRY) - 1) :] if not seen.endswith(ENTRY) else b""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def run(messages: int, interval: float, local: int) -> dict[str, float]:
    node = start_kraken(name="node")
    proxy = start_kraken("--upstream", f"127.0.0.1:{node.port}", name="proxy")
    try:
        deadline = time.monotonic() + 10
        while "up (connection 1)" not in proxy.output():
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy's link did not come up")
            time.sleep(0.01)
        on_node = pusher(node.port)
        on_proxy = [pusher(proxy.port) for _ in range(local)]
        deadline = time.monotonic() + 10
        while status(proxy)["upstream"]["topics_held"] != 1:  # type: ignore[index]
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not hold the topic upstream")
            time.sleep(0.01)
        before = status(node)
        publisher = connect(node.port)
        watched = [on_node, on_proxy[0]]
        received: dict[socket.socket, list[float]] = {s: [] for s in watched}
        tails: dict[socket.socket, bytes] = {}
        sent: list[float] = []
        request = b"set publish 0 0 %d noreply\r\n%b\r\n" % (len(ENTRY), ENTRY)
        for _ in range(messages):
            sent.append(time.perf_counter())
            publisher.sendall(request)
            due = sent[-1] + interval
            while time.perf_counter() < due:
                arrivals(watched, received, tails)
        until = time.monotonic() + 5
        while any(len(r) < messages for r in received.values()) and time.monotonic() < until:
            arrivals(watched, received, tails)
        after = status(node)
        for sock in [publisher, on_node, *on_proxy]:
            sock.close()
    finally:
        proxy.stop()
        node.stop()
    if any(len(r) != messages for r in received.values()):
        raise RuntimeError(f"missing pushes: {[len(r) for r in received.values()]}")
    direct = [r - s for r, s in zip(received[on_node], sent, strict=True)]
    hopped = [r - s for r, s in zip(received[on_proxy[0]], sent, strict=True)]
    added = [h - d for h, d in zip(hopped, direct, strict=True)]
    deliveries = int(after["deliveries"]) - int(before["deliveries"])  # type: ignore[call-overload]
    return {
        "messages": messages,
        "proxy subscribers": local,
        "direct p50 ms": 1000 * statistics.median(direct),
        "direct p99 ms": 1000 * percentile(direct, 0.99),
        "through the proxy p50 ms": 1000 * statistics.median(hopped),
        "through the proxy p99 ms": 1000 * percentile(hopped, 0.99),
        "added by the hop p50 ms": 1000 * statistics.median(added),
        "added by the hop p99 ms": 1000 * percentile(added, 0.99),
        "node deliveries per message (its subscriber + the link)": deliveries / messages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between publishes")
    parser.add_argument("--local", type=int, default=500, help="subscribers on the proxy")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    figures = run(args.messages, args.interval, args.local)
    width = max(map(len, figures))
    for name, value in figures.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{name:<{width}}  {shown}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
