"""The error tree of Kraken.

Every bad request is a typed error that carries the reply line the client gets
and whether the connection survives it. The parser never raises anything but
these; the server turns them into bytes and, for framing errors, a close.

    KrakenError
    └── ProtocolError            a request the server cannot honour
        ├── UnknownCommand       ``ERROR``; the connection stays open
        ├── ClientError          ``CLIENT_ERROR <reason>``; the connection stays open
        └── FramingError         ``CLIENT_ERROR <reason>``; the byte stream cannot be
                                 trusted any more, so the connection is closed
"""

from __future__ import annotations


class KrakenError(Exception):
    """Base class of every error Kraken raises on purpose."""


class ProtocolError(KrakenError):
    """A request that gets an error reply instead of being carried out."""

    closes: bool = False

    @property
    def reply(self) -> bytes:
        raise NotImplementedError


class UnknownCommand(ProtocolError):
    """A request line whose first word is not a command (``ERROR``)."""

    @property
    def reply(self) -> bytes:
        return b"ERROR\r\n"


class ClientError(ProtocolError):
    """A well-framed request with bad content; nothing of it takes effect."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def reply(self) -> bytes:
        return b"CLIENT_ERROR " + self.reason.encode("ascii", "backslashreplace") + b"\r\n"


class FramingError(ClientError):
    """The stream lost its framing: reply, then close the connection."""

    closes = True


# -- raised by the clients ----------------------------------------------------------
#
#   KrakenError
#   ├── ProtocolError
#   │   └── ErrorReply         the server answered ERROR, CLIENT_ERROR or SERVER_ERROR
#   ├── RegistrationTooOld     NOT_FOUND: the server can no longer replay since the horizon
#   ├── ConnectionLost         no server answered within the bounded wait
#   │   └── SlowConsumer       the server dropped this client for not polling fast enough
#   └── StateLost              messages were missed for good: reload from the datastore


class ErrorReply(ProtocolError):
    """The server answered a request with an error line."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line.decode("utf-8", "replace"))
        self.line = line

    @property
    def reply(self) -> bytes:
        return self.line + b"\r\n"


class RegistrationTooOld(KrakenError):
    """``NOT_FOUND``: messages since the horizon are no longer all in the server's buffer."""


class ConnectionLost(KrakenError):
    """The server could not be reached within the client's bounded wait."""


class SlowConsumer(ConnectionLost):
    """The server closed the connection because the client's queue overflowed."""


class StateLost(KrakenError):
    """Messages were missed and cannot be replayed; ``topics`` need a reload.

    Raised by the listening helpers when no ``on_state_lost`` callback is set.
    """

    def __init__(self, server: str, topics: frozenset[bytes]) -> None:
        super().__init__(f"messages on {len(topics)} topics from {server} were lost")
        self.server = server
        self.topics = topics
