"""The in-memory broker's own bookkeeping: its ring of open queues."""

from __future__ import annotations

from kraken.brokers import LocalBroker
from kraken.routing import ClientQueue, Router

T0 = 1_800_000_000_000_000


def test_open_queues_are_counted_once_and_a_second_disconnect_changes_nothing() -> None:
    broker = LocalBroker(Router(T0), 100, 1 << 20)
    a, b, c = (broker.connect(lambda: None) for _ in range(3))
    broker.subscribe(b, (b"t",), T0)
    broker.publish(a, [((b"t",), b"12345")], lambda: T0 + 1)
    assert broker.stats().clients == 3
    assert (broker.stats().queued_messages, broker.stats().queued_bytes) == (1, 5)
    broker.disconnect(b)
    broker.disconnect(b)
    broker.disconnect(ClientQueue(99, 1, 1))  # not handed out by a broker: ignored
    assert broker.stats().clients == 2
    assert (broker.stats().queued_messages, broker.stats().queued_bytes) == (0, 0)
    assert list(broker.queues()) == [c, a]
    broker.disconnect(a)
    broker.disconnect(c)
    assert broker.stats().clients == 0 and list(broker.queues()) == []
