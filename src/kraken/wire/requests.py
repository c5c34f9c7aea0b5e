"""The requests of the Kraken protocol, as values.

The parser turns bytes into these; the encoder turns them back into bytes (for
clients). Topics and payloads are bytes. Horizons are integer microseconds
since the Unix epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kraken.errors import ProtocolError
from kraken.types import Topics


@dataclass(frozen=True, slots=True)
class Register:
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class Subscribe:
    topics: Topics
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class RetroSubscribe:
    horizon: int
    topics: Topics
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topics: Topics
    noreply: bool = False


class Entry(NamedTuple):
    """One message of a publish block: the topics it goes to and its payload.

    What clients build. The server's parser makes plain (topics, payload) tuples,
    which compare equal to these: a block makes one per message, and a plain tuple
    is about ten times cheaper to create than a named one (a measured hot spot).
    """

    topics: Topics
    payload: bytes


@dataclass(frozen=True, slots=True)
class Publish:
    entries: tuple[tuple[Topics, bytes], ...]  # Entry or plain (topics, payload) pairs
    noreply: bool = False


@dataclass(frozen=True, slots=True)
class Push:
    """``set push``: from now on, messages are written to the client as they are
    queued (a protocol addition; see docs/protocol.md, "Push"). ``stamps``: each
    message with its stamp too (the option ``stamps`` in the data block)."""

    noreply: bool = False
    stamps: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Version:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request that was framed well enough to skip but gets an error reply.

    When ``error.closes`` is true nothing follows it: the parser stops.
    """

    error: ProtocolError
    noreply: bool = False

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Rejected)
            and type(other.error) is type(self.error)
            and other.error.reply == self.error.reply
            and other.noreply == self.noreply
        )

    def __hash__(self) -> int:
        return hash((type(self.error), self.error.reply, self.noreply))


Request = (
    Register
    | Subscribe
    | RetroSubscribe
    | Unsubscribe
    | Publish
    | Push
    | Get
    | Version
    | Quit
    | Rejected
)


_SHOWN_TOPICS = 8  # topics a description lists before it counts the rest
_SHOWN_ENTRIES = 4  # publish entries likewise


def _topics_text(topics: Topics) -> str:
    shown = " ".join(t.decode("utf-8", "backslashreplace") for t in topics[:_SHOWN_TOPICS])
    more = len(topics) - _SHOWN_TOPICS
    return f"{shown} (+{more} more)" if more > 0 else shown


def describe(request: Request) -> str:
    """A request as a log line shows it, close to its wire form: ``set subscribe a b``,
    ``set publish: 2 messages (a 9 bytes; b c 3 bytes)``, ``get messages``."""
    match request:
        case Subscribe(topics) | Unsubscribe(topics):
            text = f"set {type(request).__name__.lower()} {_topics_text(topics)}"
        case RetroSubscribe(horizon, topics):
            seconds, micros = divmod(horizon, 1_000_000)
            text = f"set retro_subscribe {seconds}.{micros:06d} {_topics_text(topics)}"
        case Register():
            text = "set register"
        case Push(_, stamps):
            text = "set push stamps" if stamps else "set push"
        case Publish(entries):
            parts = [
                f"{_topics_text(topics)} {len(payload)} bytes"
                for topics, payload in entries[:_SHOWN_ENTRIES]
            ]
            more = len(entries) - _SHOWN_ENTRIES
            if more > 0:
                parts.append(f"+{more} more")
            n = len(entries)
            text = f"set publish: {n} message{'' if n == 1 else 's'} ({'; '.join(parts)})"
        case Get(keys):
            text = "get " + " ".join(k.decode("utf-8", "backslashreplace") for k in keys)
        case Version():
            text = "version"
        case Quit():
            text = "quit"
        case Rejected(error):
            text = "refused: " + error.reply.decode("utf-8", "backslashreplace").rstrip()
    return text + " noreply" if getattr(request, "noreply", False) else text
