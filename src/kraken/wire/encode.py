"""Replies and requests to bytes.

The server encodes replies here; clients encode requests here. The message
block of a poll answer has the same layout as a publish block, so one parser
(``parse_publish_block``) reads both back.
"""

from __future__ import annotations

from collections.abc import Iterable

from kraken.types import Topics
from kraken.wire.requests import (
    Get,
    Publish,
    Push,
    Quit,
    Register,
    Rejected,
    Request,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
)

STORED = b"STORED\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
END = b"END\r\n"
ERROR = b"ERROR\r\n"
CRLF = b"\r\n"


def encode_entry(topics: Topics, payload: bytes) -> bytes:
    """``MESSAGE <topics> <length>\\r\\n<payload>``: one entry of a block, without its CRLF."""
    return (
        b"MESSAGE %b %d\r\n%b" % (b" ".join(topics), len(payload), payload)
        if topics
        else (b"MESSAGE %d\r\n%b" % (len(payload), payload))
    )


def encode_value(key: bytes, data: bytes) -> bytes:
    """One ``VALUE`` of a ``get`` answer (the final ``END`` is added by the caller)."""
    return b"VALUE %b 0 %d\r\n%b\r\n" % (key, len(data), data)


def encode_block(entries: list[bytes]) -> bytes:
    """The ``VALUE messages`` of a poll answer from encoded entries."""
    block = CRLF.join(entries)
    return b"".join((b"VALUE messages 0 %d\r\n" % len(block), block, CRLF))


def format_horizon(micros: int) -> bytes:
    """Microseconds as seconds with six decimals, the form ``retro_subscribe`` takes."""
    seconds, fraction = divmod(micros, 1_000_000)
    return b"%d.%06d" % (seconds, fraction)


def _set(command: bytes, block: bytes, noreply: bool) -> bytes:
    tail = b" noreply" if noreply else b""
    return b"set %b 0 0 %d%b\r\n%b\r\n" % (command, len(block), tail, block)


def encode_publish_block(entries: Iterable[tuple[Topics, bytes]]) -> bytes:
    return CRLF.join(encode_entry(topics, payload) for topics, payload in entries)


def encode_request(request: Request) -> bytes:
    """The bytes a client sends for ``request`` (``Rejected`` has no encoding)."""
    match request:
        case Get(keys):
            return b"get " + b" ".join(keys) + CRLF
        case Subscribe(topics, noreply):
            return _set(b"subscribe", b" ".join(topics), noreply)
        case Unsubscribe(topics, noreply):
            return _set(b"unsubscribe", b" ".join(topics), noreply)
        case RetroSubscribe(horizon, topics, noreply):
            block = format_horizon(horizon) + CRLF + b" ".join(topics)
            return _set(b"retro_subscribe", block, noreply)
        case Publish(entries, noreply):
            return _set(b"publish", encode_publish_block(entries), noreply)
        case Register(noreply):
            return _set(b"register", b"", noreply)
        case Push(noreply, stamps):
            return _set(b"push", b"stamps" if stamps else b"", noreply)
        case Version():
            return b"version\r\n"
        case Quit():
            return b"quit\r\n"
        case Rejected():
            raise ValueError("a rejected request has no encoding")
    raise TypeError(f"not a request: {request!r}")
