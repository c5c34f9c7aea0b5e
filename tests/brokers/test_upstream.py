"""The proxy's broker (``UpstreamBroker``) against a scripted link: the order of what
it sends upstream, and what it makes of each reply, step by step.

The link here only records requests and hands back the replies the test gives, in
order, as the real one does; ``tests/integration/test_proxy.py`` runs the broker
with its real link over real nodes.
"""

from __future__ import annotations

from typing import Any

from kraken.brokers.upstream import UpstreamBroker
from kraken.routing import Router
from kraken.wire import Get, Subscribe, Unsubscribe
from kraken.wire.replies import Reply, Stored, Values

T0 = 1_800_000_000_000_000


class ScriptedLink:
    connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []

    def send(self, request: Any, on_reply: Any = None) -> None:
        self.sent.append((request, on_reply))

    def status(self) -> dict[str, object]:
        return {}

    def answer(self, reply: Reply) -> Any:
        """Answer the oldest request waiting; which it was."""
        request, on_reply = self.sent.pop(0)
        if on_reply is not None:
            on_reply(reply)
        return request


def broker_and_link(linger: int = 0) -> tuple[UpstreamBroker, ScriptedLink]:
    now = [T0]

    def clock() -> int:
        now[0] += 1
        return now[0]

    broker = UpstreamBroker(
        Router(T0, num_shards=2, messages_per_shard=100), 100, 1 << 20, linger, clock
    )
    link = ScriptedLink()
    broker.attach(link)  # type: ignore[arg-type]
    return broker, link


HORIZON = Values({b"horizon": b"1800000000.000001"})


def test_a_subscribe_answered_after_an_unsubscribe_that_followed_it_does_not_count() -> None:
    # the linger ran out while the first subscribe was on its way, and the topic was
    # wanted again: upstream, the topic is not held between the unsubscribe and the
    # second subscribe, so only the second one's answer may start its history
    broker, link = broker_and_link(linger=0)
    first = broker.connect(lambda: None)
    broker.subscribe(first, (b"t",), T0 + 10)
    broker.unsubscribe(first, (b"t",))
    broker.expire(T0 + 20)
    second = broker.connect(lambda: None)
    broker.subscribe(second, (b"t",), T0 + 30)
    kinds = [type(request) for request, _ in link.sent]
    assert kinds == [Subscribe, Get, Unsubscribe, Subscribe, Get]
    assert link.answer(Stored()) == Subscribe((b"t",))  # the first subscribe
    assert b"t" not in broker.held_since  # an unsubscribe followed it
    link.answer(HORIZON)
    assert link.answer(Stored()) == Unsubscribe((b"t",))
    assert b"t" not in broker.held_since
    link.answer(Stored())  # the second subscribe
    assert b"t" in broker.held_since
