"""Bytes in, replies out: the sans-I/O reader of server replies, for clients.

Rule: no socket, no event loop, no clock. ``feed`` returns the complete replies
the bytes finish, in order; the protocol answers every request with exactly one
reply (``noreply`` requests aside), so a client matches them up by counting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Stored:
    pass


@dataclass(frozen=True, slots=True)
class NotFound:
    pass


@dataclass(frozen=True, slots=True)
class Values:
    """The answer to ``get``: key -> data block, for the keys that hit."""

    values: dict[bytes, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VersionReply:
    version: str


@dataclass(frozen=True, slots=True)
class ErrorLine:
    """``ERROR``, ``CLIENT_ERROR <reason>`` or ``SERVER_ERROR <reason>``: the whole line."""

    line: bytes

    @property
    def kind(self) -> bytes:
        return self.line.split(b" ", 1)[0]

    @property
    def reason(self) -> str:
        return self.line.partition(b" ")[2].decode("utf-8", "replace")


Reply = Stored | NotFound | Values | VersionReply | ErrorLine


class ReplyError(ValueError):
    """The server sent bytes that are not a reply of this protocol."""


class ReplyParser:
    __slots__ = ("_buffer", "_need", "_values")

    def __init__(self) -> None:
        self._buffer = b""
        self._values: dict[bytes, bytes] | None = None  # a get answer being read
        self._need: tuple[bytes, int] | None = None  # (key, size) of a value block awaited

    def feed(self, data: bytes) -> list[Reply]:
        """The replies ``data`` completes; ReplyError on bytes that make no sense."""
        buffer = self._buffer + data if self._buffer else data
        replies: list[Reply] = []
        pos = 0
        while True:
            if self._need is not None:
                key, size = self._need
                end = pos + size
                if len(buffer) < end + 2:
                    break
                if buffer[end : end + 2] != b"\r\n":
                    raise ReplyError("value block not followed by CRLF")
                assert self._values is not None
                self._values[key] = buffer[pos:end]
                self._need = None
                pos = end + 2
                continue
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                break
            line = buffer[pos:eol]
            pos = eol + 2
            reply = self._line(line)
            if reply is not None:
                replies.append(reply)
        self._buffer = buffer[pos:]
        return replies

    def _line(self, line: bytes) -> Reply | None:
        if self._values is not None:
            if line == b"END":
                values, self._values = self._values, None
                return Values(values)
            if line.startswith(b"VALUE "):
                fields = line.split(b" ")
                # a length of more than 20 digits is no block (and int() refuses 4,300)
                if len(fields) != 4 or not fields[3].isdigit() or len(fields[3]) > 20:
                    raise ReplyError(f"bad VALUE line {line[:80]!r}")
                self._need = (fields[1], int(fields[3]))
                return None
            raise ReplyError(f"expected VALUE or END, got {line!r}")
        if line == b"STORED":
            return Stored()
        if line == b"NOT_FOUND":
            return NotFound()
        if line == b"END":
            return Values({})
        if line.startswith(b"VALUE "):
            self._values = {}
            return self._line(line)
        if line.startswith(b"VERSION "):
            return VersionReply(line[8:].decode("ascii", "replace"))
        if line == b"ERROR" or line.startswith((b"CLIENT_ERROR ", b"SERVER_ERROR ")):
            return ErrorLine(line)
        raise ReplyError(f"unexpected reply {line!r}")
