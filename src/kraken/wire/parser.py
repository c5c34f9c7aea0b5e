"""Bytes in, requests out: the sans-I/O parser of the Kraken protocol.

Rule 1: nothing here touches a socket, an event loop or a clock.
Rule 2: whatever bytes it is fed, ``feed`` returns requests and raises nothing.
A request with bad content becomes a ``Rejected`` carrying its error reply; a
framing error becomes a ``Rejected`` whose error closes the connection, after
which the parser ignores every further byte. This holds by construction: an
exception inside ``feed`` (a bug: ``tests/fuzz`` hunts for them) becomes a closing
``Rejected(ParserFailure)`` after the requests completed before it.

Request lines end in CRLF; a bare LF is accepted too, as memcached does. A data
block must be followed by CRLF exactly: the first byte after the block that is
not that CRLF is a framing error at once, rather than a wait for more bytes.
The receive buffer remembers how far it already searched for a line end, so a
line arriving a byte at a time costs linear time, and a large data block is
gathered in pieces and joined once. ``waiting`` and ``incomplete`` say what a
request still lacks, for the transport's debug log and its request timeout.

``max_batch`` bounds the requests one ``feed`` returns: the complete requests
past it stay buffered (``more``) for the next ``feed``, an empty one included.
A transport gives each connection one batch per turn of its event loop, so that
a client pipelining millions of tiny requests in one read does not hold up the
others (one read can hold 256 KiB: 131,072 empty lines).
"""

from __future__ import annotations

import re
import sys

from kraken.errors import (
    BadHorizon,
    BadPublishBlock,
    BadPushOption,
    BadTopic,
    ClientError,
    FramingError,
    ServerError,
    TooManyTopics,
    UnknownCommand,
    UnknownSetCommand,
)
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

MAX_TOPIC_BYTES = 250
MAX_ECHOED = 40  # bytes of a client's input an error reply repeats, at most
# Space separates topics; every other byte up to 0x20, and DEL, is invalid in one.
_BAD_TOPIC_BYTE = re.compile(rb"[\x00-\x1f\x7f]")
_HORIZON = re.compile(rb"([0-9]{1,12})(?:\.([0-9]{1,6}))?")
_TOKEN = re.compile(rb"[^ ]+")


class ParserFailure(FramingError):
    """An exception inside ``RequestParser.feed``: a bug of the parser, not the client's
    fault. It closes the connection like any framing error (where the next request
    starts is no longer known), replies ``SERVER_ERROR``, is counted as a server error,
    and keeps the exception as its ``__cause__`` (traceback included) for the log."""

    kind = ServerError.kind

    def __init__(self, cause: BaseException) -> None:
        super().__init__("internal error: request parser failed")
        self.__cause__ = cause

    @property
    def reply(self) -> bytes:
        return b"SERVER_ERROR " + self.reason.encode() + b"\r\n"


def parse_topics(data: bytes, unique: bool = False) -> Topics:
    """Topics separated by spaces; empty tokens are ignored.

    With ``unique`` a repeated topic is listed once (a published entry lists each
    matched topic once); subscribing twice is harmless, so others skip that work.
    """
    if _BAD_TOPIC_BYTE.search(data) is not None:
        raise BadTopic()
    # every other whitespace byte was refused above: split() splits on spaces only
    topics = data.split()
    # only a list that long can hold a topic that long (and one of spaces holds none)
    if len(data) > MAX_TOPIC_BYTES and topics and max(map(len, topics)) > MAX_TOPIC_BYTES:
        raise BadTopic()
    if unique and len(topics) > 1:
        return tuple(dict.fromkeys(topics))
    return tuple(topics)


def parse_horizon(data: bytes) -> int:
    """A horizon in seconds (``1764300000`` or ``1764300000.123456``) as microseconds."""
    match = _HORIZON.fullmatch(data)
    if match is None:
        raise BadHorizon()
    seconds, fraction = match.groups()
    micros = int(fraction.ljust(6, b"0")) if fraction else 0
    return int(seconds) * 1_000_000 + micros


# More significant digits than this in a length is more than any block can hold; and
# int() refuses over 4,300 digits (ValueError), so such a length never reaches it.
MAX_LENGTH_DIGITS = 20

# An entry head as the server usually gets it: valid topics of at most 250 bytes, each
# followed by spaces, then the length. Any other head takes the exact path below.
FAST_HEAD = 4096  # bytes of an entry head up to which the expression reads it
_ENTRY_HEAD = re.compile(rb"MESSAGE ((?:[^\x00-\x20\x7f]{1,250} +)*)([0-9]{1,20})\r\n")


def _names_over(names: bytes, most: int) -> bool:
    """True when the space-separated ``names`` hold more than ``most`` tokens (repeats
    counted), found without splitting them all: an 8 MiB head of ``a a a ...`` would
    be 4 million bytes objects (857 MiB at the peak) before any limit was checked."""
    if names.count(b" ") < most:
        return False
    # stops at the token past the limit: never more than that many matches made
    return any(n >= most for n, _ in enumerate(_TOKEN.finditer(names)))


def _too_many_named(most: int) -> TooManyTopics:
    return TooManyTopics(
        f"too many topics: more than {most} named in one message (repeats counted) exceeds "
        f"max_topics_per_message {most}"
    )


def parse_publish_block(
    block: bytes, max_topics: int = sys.maxsize
) -> tuple[tuple[Topics, bytes], ...]:
    """Entries ``MESSAGE <topic>... <length>\\r\\n<payload>``, separated by CRLF,
    as (topics, payload) pairs (plain tuples: a block makes one per message).

    All or nothing: any malformed entry rejects the whole block. The length
    decides where a payload ends; the last entry may lack its CRLF. An entry
    naming more than ``max_topics`` topics, repeats counted, is ``TooManyTopics``.
    """
    entries = []
    pos = 0
    end = len(block)
    head_at = _ENTRY_HEAD.match
    while pos < end:
        eol = block.find(b"\r\n", pos)
        # the expression only on a short head: its repeated group keeps state for
        # each topic it passes (an 8 MiB head of 4 million took 800 MiB)
        match = head_at(block, pos, eol + 2) if 0 <= eol - pos <= FAST_HEAD else None
        if match is not None:
            names, length = match.groups()
            if len(names) > max_topics and _names_over(names, max_topics):
                raise _too_many_named(max_topics)
            topics = tuple(names.split())
            if len(topics) > 1:
                topics = tuple(dict.fromkeys(topics))
            start = match.end()
        else:
            if eol < 0 or not block.startswith(b"MESSAGE ", pos):
                raise BadPublishBlock()
            head = block[pos + 8 : eol]
            cut = head.rfind(b" ")
            if cut > max_topics and _names_over(head[:cut], max_topics):
                raise _too_many_named(max_topics)
            topics = parse_topics(head[:cut], True) if cut > 0 else ()  # a bad topic wins
            length = head[cut + 1 :]
            if not length.isdigit():
                raise BadPublishBlock()
            if len(length) > MAX_LENGTH_DIGITS:  # past the block's end, unless zeros pad it
                length = length.lstrip(b"0") or b"0"
                if len(length) > MAX_LENGTH_DIGITS:
                    raise BadPublishBlock()
            start = eol + 2
        pos = start + int(length)
        if pos > end:
            raise BadPublishBlock()
        entries.append((topics, block[start:pos]))
        if pos < end:
            if block[pos : pos + 2] != b"\r\n":
                raise BadPublishBlock()
            pos += 2
            if pos == end:
                break
    return tuple(entries)


def _decode_set(command: bytes, block: bytes, noreply: bool, max_topics: int) -> Request:
    """The request a ``set <command>`` with this data block stands for."""
    try:
        if command == b"publish":
            return Publish(parse_publish_block(block, max_topics), noreply)
        if command == b"subscribe":
            return Subscribe(parse_topics(block), noreply)
        if command == b"unsubscribe":
            return Unsubscribe(parse_topics(block), noreply)
        if command == b"register":
            return Register(noreply)
        if command == b"push":
            return _decode_push(block, noreply)
        if command == b"retro_subscribe":
            horizon, crlf, topics = block.partition(b"\r\n")
            if not crlf:
                raise BadHorizon()
            return RetroSubscribe(parse_horizon(horizon), parse_topics(topics), noreply)
        # echoed, so capped: a reply (and a log line) never grows with what a client sent
        name = command[:MAX_ECHOED].decode("ascii", "backslashreplace")
        more = "..." if len(command) > MAX_ECHOED else ""
        raise UnknownSetCommand(f"unknown command {name}{more}")
    except ClientError as error:
        return Rejected(error, noreply)


PUSH_OPTIONS = (b"stamps",)


def _decode_push(block: bytes, noreply: bool) -> Push:
    """``set push``'s data block: options separated by spaces (none: an empty block)."""
    options = block.split()
    for option in options:
        if option not in PUSH_OPTIONS:
            name = option[:MAX_ECHOED].decode("ascii", "backslashreplace")
            raise BadPushOption(f"unknown push option {name} (known: stamps)")
    return Push(noreply, b"stamps" in options)


_NO_PARTS: list[bytes] = []  # the parts of every parser between data blocks: never appended to


class RequestParser:
    """Feed it received bytes; it returns the complete requests they finish."""

    __slots__ = (
        "_buffer",
        "_closed",
        "_command",
        "_max_batch",
        "_max_line",
        "_max_request",
        "_max_topics",
        "_more",
        "_need",
        "_need_block",
        "_noreply",
        "_parts",
        "_scanned",
    )

    def __init__(
        self,
        max_line_bytes: int = 8192,
        max_request_bytes: int = 8 << 20,
        max_batch: int = 0,
        max_topics_per_message: int = 0,
    ) -> None:
        """``max_batch``: how much one ``feed`` returns, at most, counted in requests,
        except that a ``get`` counts its keys and a publish its messages (0: no limit);
        ``max_topics_per_message``: the topics a published message may name, repeats
        counted (0: no limit; the session counts the distinct ones too)."""
        self._max_line = max_line_bytes
        self._max_request = max_request_bytes
        self._max_batch = max_batch or sys.maxsize
        self._max_topics = max_topics_per_message or sys.maxsize
        self._more = False  # feed stopped at max_batch: the buffer may hold more requests
        self._buffer = b""
        self._scanned = 0  # bytes of _buffer known to hold no LF
        # pieces of a data block still arriving: a list of its own while one is
        self._parts: list[bytes] = _NO_PARTS
        # bytes still missing from _parts before parsing again: up to the byte after the
        # block (checked to be CR at once), then its LF
        self._need = 0
        self._need_block = 0  # size of the awaited data block
        self._command = b""  # set command whose data block is awaited, or b""
        self._noreply = False
        self._closed = False

    @property
    def idle(self) -> bool:
        """True between requests: nothing buffered, no data block awaited, not closed."""
        return not (self._buffer or self._command or self._closed)

    @property
    def more(self) -> bool:
        """True when the last ``feed`` stopped at ``max_batch``: feed again (``b""``
        will do) for the requests buffered after it."""
        return self._more

    @property
    def closed(self) -> bool:
        """True after a framing error: nothing more will be parsed."""
        return self._closed

    @property
    def waiting(self) -> str | None:
        """The data block still awaited, as "2 more bytes of a 27-byte set publish data
        block" (or "the \\r\\n after ..." once its bytes are in); None when no data block
        is awaited: idle, closed, or inside a request line."""
        command = self._command
        if not command:
            return None
        size = self._need_block
        have = sum(map(len, self._parts))  # every byte of the block so far (see _parse)
        name = command[:40].decode("ascii", "backslashreplace")
        name += "..." if len(command) > 40 else ""
        block = f"{size}-byte set {name} data block"
        if have < size:
            missing = size - have
            return f"{missing} more byte{'' if missing == 1 else 's'} of a {block}"
        return ("the \\r\\n" if have == size else "the \\n") + f" after a {block}"

    @property
    def incomplete(self) -> str | None:
        """What the request begun still lacks: ``waiting``, or "the end of a request line
        (12 bytes so far)"; None when idle or closed."""
        if self._closed:
            return None
        waiting = self.waiting
        if waiting is None and self._buffer:
            return f"the end of a request line ({len(self._buffer)} bytes so far)"
        return waiting

    def feed(self, data: bytes) -> list[Request]:
        """The requests ``data`` completes, in order. Raises nothing: see ``ParserFailure``."""
        if self._closed:
            return []
        requests: list[Request] = []
        self._more = False
        try:  # free on 3.11+ while nothing raises
            if self._need:
                self._parts.append(data)
                self._need -= len(data)
                if self._need > 0:
                    return requests
                self._need = 0
                buffer = b"".join(self._parts)
                self._parts = _NO_PARTS
            else:
                buffer = self._buffer + data if self._buffer else data
            pos = self._parse(buffer, requests)
            self._buffer = buffer[pos:] if pos < len(buffer) and not self._closed else b""
        except Exception as error:  # a bug: keep the requests before it, then close
            if requests and isinstance(last := requests[-1], Rejected) and last.error.closes:
                requests.pop()  # a framing error came first: the bug is the news
            self._crash(requests, error)
        return requests

    def _crash(self, requests: list[Request], error: Exception) -> None:
        requests.append(Rejected(ParserFailure(error)))
        self.discard()

    def discard(self) -> None:
        """Drop what is buffered and parse nothing more (the connection is gone)."""
        self._closed = True
        self._more = False
        self._command = b""
        self._buffer = b""
        self._parts = _NO_PARTS
        self._need = 0

    def _fail(self, requests: list[Request], reason: str) -> int:
        requests.append(Rejected(FramingError(reason)))
        self._closed = True
        self._command = b""
        return 0

    def _parse(self, buf: bytes, requests: list[Request]) -> int:
        """Parse complete requests from ``buf``; return where the unparsed rest starts."""
        pos = 0
        end = len(buf)
        max_line = self._max_line
        max_batch = self._max_batch
        weight = 0  # requests, a get's keys and a publish's messages, parsed in this feed
        while pos < end:
            if self._command:
                block_end = pos + self._need_block
                if block_end + 2 > end:
                    if block_end < end:  # the byte after the block is in: a CR, or an error
                        if buf[block_end] != 13:
                            return self._fail(requests, self._bad_chunk())
                        self._need = 1
                    else:
                        self._need = block_end + 1 - end
                    self._parts = [buf[pos:]]
                    return end
                if buf[block_end : block_end + 2] != b"\r\n":
                    return self._fail(requests, self._bad_chunk())
                request = _decode_set(
                    self._command, buf[pos:block_end], self._noreply, self._max_topics
                )
                requests.append(request)
                weight += max(1, len(request.entries)) if request.__class__ is Publish else 1
                self._command = b""
                pos = block_end + 2
                continue
            if weight >= max_batch:  # between two requests: the rest waits
                self._more = True
                return pos
            eol = buf.find(b"\n", pos + self._scanned)
            if eol < 0:
                waiting = end - pos
                if waiting > max_line and not (waiting == max_line + 1 and buf[-1] == 13):
                    return self._fail(requests, f"request line longer than {max_line} bytes")
                self._scanned = waiting
                return pos
            self._scanned = 0
            line_end = eol - 1 if eol > pos and buf[eol - 1] == 13 else eol
            if line_end - pos > max_line:
                return self._fail(requests, f"request line longer than {max_line} bytes")
            line = buf[pos:line_end]
            pos = eol + 1
            if line == b"get messages":
                requests.append(Get((b"messages",)))
                weight += 1
            elif line.startswith(b"set ") or line == b"set":
                if not self._start_set(line, requests):
                    return 0
            else:
                request = _decode_line(line)
                requests.append(request)
                weight += len(request.keys) if request.__class__ is Get else 1
        return pos

    def _bad_chunk(self) -> str:
        return f"bad data chunk: a {self._need_block}-byte data block must be followed by \\r\\n"

    def _start_set(self, line: bytes, requests: list[Request]) -> bool:
        fields = line.split()
        if len(fields) == 6 and fields[5] == b"noreply":
            self._noreply = True
        elif len(fields) == 5:
            self._noreply = False
        else:
            self._fail(requests, "bad command line format")
            return False
        size = fields[4]
        if not size.isdigit():
            self._fail(requests, "bad data length")
            return False
        if len(size) > MAX_LENGTH_DIGITS:  # int() refuses over 4,300 digits
            size = size.lstrip(b"0") or b"0"
            if len(size) > MAX_LENGTH_DIGITS:
                digits = len(size)
                self._fail(
                    requests,
                    f"data block with a {digits}-digit length exceeds {self._max_request} bytes",
                )
                return False
        n = int(size)
        if n > self._max_request:
            self._fail(requests, f"data block of {n} bytes exceeds {self._max_request} bytes")
            return False
        self._command = fields[1]
        self._need_block = n
        return True


def _decode_line(line: bytes) -> Request:
    """A request line other than ``set``."""
    words = line.split()
    if not words:
        return Rejected(UnknownCommand())
    verb = words[0]
    if verb == b"get":
        if len(words) == 1:
            return Rejected(UnknownCommand())
        return Get(tuple(words[1:]))
    if verb == b"version":
        return Version()
    if verb == b"quit":
        return Quit()
    return Rejected(UnknownCommand())
