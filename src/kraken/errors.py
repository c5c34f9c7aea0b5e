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
