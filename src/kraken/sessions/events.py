"""The event dialect: a session's replies as values, for protocols that are not
memcached (a WebSocket's JSON, tests of the session itself).

``Stored``, ``NotFound`` and ``VersionReply`` are the reply values clients
already parse (``kraken.wire.replies``); a failure keeps its error's kind and
text; delivered messages keep their topics and payloads, with the horizon when
the poll asked for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kraken.brokers.base import Polled
from kraken.errors import ProtocolError
from kraken.routing import Delivery, Message
from kraken.types import Topics
from kraken.wire.replies import NotFound, Stored, VersionReply


@dataclass(frozen=True, slots=True)
class Failed:
    """An error reply: its error's ``kind`` and the reply line, without CRLF."""

    kind: str
    line: bytes


@dataclass(frozen=True, slots=True)
class Delivered:
    """The answer to a poll: (topics, payload) pairs, oldest first, and the horizon
    when it was asked for."""

    messages: tuple[tuple[Topics, bytes], ...]
    horizon: int | None = None


Event = Stored | NotFound | VersionReply | Failed | Delivered


def delivered(deliveries: list[Delivery]) -> tuple[tuple[Topics, bytes], ...]:
    """Deliveries as (topics matched, payload) pairs."""
    return tuple(
        (d.topics, d.payload) if isinstance(d, Message) else (d[1], d[0].payload)
        for d in deliveries
    )


class EventDialect:
    """Replies as ``Event`` values; the ``Dialect[Event]`` of non-memcached sessions."""

    __slots__ = ("_version", "not_found", "stored")

    def __init__(self, version: str) -> None:
        self._version = VersionReply(version)
        self.stored: Event = Stored()
        self.not_found: Event = NotFound()

    def error(self, error: ProtocolError) -> Event:
        return Failed(error.kind, error.reply.rstrip(b"\r\n"))

    def version(self) -> Event:
        return self._version

    def messages(self, deliveries: list[Delivery]) -> Event:
        return Delivered(delivered(deliveries))

    def values(self, keys: Sequence[bytes], polled: Polled) -> Event:
        entries, horizon = polled
        return Delivered(delivered(entries) if b"messages" in keys else (), horizon)

    def pushed(self, polled: Polled, stamps: bool) -> Event:
        entries, horizon = polled
        return Delivered(delivered(entries), horizon)
