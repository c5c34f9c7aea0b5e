"""The memcached dialect: a session's replies as the bytes of the original protocol.

Only encoding lives here (no state, no I/O): ``Session[bytes]`` with this dialect
is what the TCP transport runs. A message delivered to a subscriber of all its
topics is encoded once, on its first delivery, and the bytes are shared by every
other subscriber of the same poll or later ones (``Message.encoded``).
"""

from __future__ import annotations

from collections.abc import Sequence

from kraken.brokers.base import Polled
from kraken.errors import ProtocolError
from kraken.routing import Delivery, Message
from kraken.wire import encode_entry, encode_value, format_horizon
from kraken.wire.encode import END, NOT_FOUND, STORED

END_OF_POLL = b"\r\nEND\r\n"


def encode_deliveries(
    entries: list[Delivery], tail: bytes = b"\r\n", key: bytes = b"messages"
) -> bytes:
    """The ``VALUE messages`` of a poll answer, encoding each message at most once
    (``VALUE push`` for a push, with ``key``).

    ``tail`` ends the data block; passing ``b"\\r\\nEND\\r\\n"`` makes it the whole answer.
    """
    block = b"\r\n".join(
        [
            (d.encoded or _encode_message(d)) if d.__class__ is Message else _encode_partial(d)  # type: ignore[arg-type]
            for d in entries
        ]
    )
    return b"".join((b"VALUE %b 0 %d\r\n" % (key, len(block)), block, tail))


def _encode_message(message: Message) -> bytes:
    """A delivery of every topic of ``message``: encoded on first use, then cached."""
    encoded = message.encoded = encode_entry(message.topics, message.payload)
    return encoded


def _encode_partial(delivery: tuple[Message, tuple[bytes, ...]]) -> bytes:
    message, topics = delivery
    return encode_entry(topics, message.payload)


class MemcachedDialect:
    """Replies as bytes; the ``Dialect[bytes]`` of the TCP transport."""

    __slots__ = ("_version", "not_found", "stored")

    def __init__(self, version: str) -> None:
        self._version = b"VERSION %b\r\n" % version.encode()
        self.stored = STORED
        self.not_found = NOT_FOUND

    def error(self, error: ProtocolError) -> bytes:
        return error.reply

    def version(self) -> bytes:
        return self._version

    def messages(self, deliveries: list[Delivery]) -> bytes:
        if not deliveries:
            return END
        # encode_deliveries(deliveries, END_OF_POLL), written out: once per poll
        block = b"\r\n".join(
            [
                (d.encoded or _encode_message(d)) if d.__class__ is Message else _encode_partial(d)  # type: ignore[arg-type]
                for d in deliveries
            ]
        )
        return b"".join((b"VALUE messages 0 %d\r\n" % len(block), block, END_OF_POLL))

    def values(self, keys: Sequence[bytes], polled: Polled) -> bytes:
        entries, horizon = polled
        parts = []
        for key in keys:
            if key == b"messages":
                if entries:
                    parts.append(encode_deliveries(entries))
                    entries = []  # a second ``messages`` key finds the queue drained
            elif key == b"horizon" and horizon is not None:
                parts.append(encode_value(b"horizon", format_horizon(horizon)))
        parts.append(END)
        return b"".join(parts)

    def pushed(self, polled: Polled, stamps: bool) -> bytes:
        """``VALUE push 0 <bytes>``, the entries, then the ``VALUE horizon`` and ``END``
        of ``get messages horizon``: a push is that answer, sent unasked, under a key
        of its own so that a client tells it from the replies to its requests. With
        ``stamps``, a ``VALUE stamps`` before the horizon: each entry's stamp."""
        entries, horizon = polled
        parts = [encode_deliveries(entries, key=b"push")]
        if stamps:
            stamped = [
                format_horizon(d.stamp if d.__class__ is Message else d[0].stamp)  # type: ignore[index]
                for d in entries
            ]
            parts.append(encode_value(b"stamps", b" ".join(stamped)))
        parts.append(encode_value(b"horizon", format_horizon(horizon or 0)))
        parts.append(END)
        return b"".join(parts)
