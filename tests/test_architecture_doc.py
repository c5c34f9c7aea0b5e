"""The examples of docs/architecture.md run as written, over real TCP.

Each ``python`` block of the doc is executed; the transport example then serves
JSON lines beside the memcached listener of one server, and the broker example
is the broker of a server that memcached clients use.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kraken.config import Config
from kraken.server import KrakenServer
from kraken.server.hub import now_us
from kraken_testing import DEADLINE, ROOT, Wire

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs/architecture.md").read_text(), re.S)


def example(name: str) -> Any:
    for block in BLOCKS:
        if f"class {name}" in block:
            namespace: dict[str, Any] = {}
            exec(compile(block, f"docs/architecture.md ({name})", "exec"), namespace)
            return namespace[name]
    raise AssertionError(f"no example defines {name}")


class InLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(DEADLINE)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[InLoop]:
    running = InLoop()
    yield running
    running.close()


def test_the_examples_are_each_about_twenty_lines() -> None:
    assert len(BLOCKS) == 2
    for block in BLOCKS:
        code = [
            line
            for line in block.splitlines()
            if line.strip() and not line.startswith(("import", "from"))
        ]
        assert len(code) <= 30, block


def test_the_transport_example_serves_beside_tcp_over_the_same_broker(loop: InLoop) -> None:
    json_lines = example("JsonLines")
    server = KrakenServer(Config(tcp_server_port=0, admin_port=0))
    loop.call(server.start())

    async def listen() -> int:
        extra = await asyncio.get_running_loop().create_server(
            lambda: json_lines(server), "127.0.0.1", 0
        )
        port: int = extra.sockets[0].getsockname()[1]
        return port

    port = loop.call(listen())
    try:
        browser = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        reader = browser.makefile("rb")
        browser.sendall(b'{"op": "subscribe", "topics": ["news"]}')
        assert reader.readline() == b'"Stored"\n'
        tcp = Wire(server.port)
        tcp.publish("news", b"from tcp")
        browser.sendall(b'{"op": "poll"}')
        assert reader.readline() == b'"Delivered"\n'
        browser.sendall(b'{"op": "publish", "topics": ["news"], "payload": "from json"}')
        assert reader.readline() == b'"Stored"\n'
        tcp.subscribe("news")
        browser.sendall(b'{"op": "publish", "topics": ["news"], "payload": "again"}')
        assert reader.readline() == b'"Stored"\n'
        assert tcp.messages() == [(b"news", b"again")]
        browser.close()
    finally:
        loop.call(server.stop())


def test_the_broker_example_answers_subscribes_once_confirmed(loop: InLoop) -> None:
    confirming = example("ConfirmingBroker")
    config = Config(tcp_server_port=0, admin_port=0)
    broker = confirming.from_config(config, now_us())
    broker.delay = 0.2
    server = KrakenServer(config, broker=broker)
    loop.call(server.start())
    try:
        subscriber, publisher = Wire(server.port), Wire(server.port)
        subscriber.set("subscribe", b"a b")
        subscriber.send(b"version\r\n")
        assert not subscriber.closed(timeout=0.05)
        assert subscriber.buffer == b""  # held until the upstream confirms
        assert subscriber.line() == b"STORED\r\n"
        assert subscriber.line().startswith(b"VERSION ")
        assert broker.upstream == {b"a", b"b"}
        publisher.publish("a", b"hello")
        assert subscriber.messages() == [(b"a", b"hello")]
        subscriber.unsubscribe("a")
        assert broker.upstream == {b"b"}
        subscriber.close()
    finally:
        loop.call(server.stop())
