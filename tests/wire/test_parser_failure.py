"""``feed`` raises nothing, whatever goes wrong inside it (issue 11, defect 4).

A bug inside the parser is injected by making a helper it calls raise. The requests
completed before the failure in the same ``feed`` are still returned, in order, then a
closing ``Rejected(ParserFailure)`` that carries the exception for the server's log;
after it the parser takes nothing more, as after any framing error.
"""

from __future__ import annotations

import pytest

import kraken.wire.parser as parser_module
from kraken.errors import FramingError, ServerError
from kraken.wire import Get, Publish, Rejected, RequestParser, Subscribe, Version
from kraken.wire.parser import ParserFailure

PUBLISH = b"set publish 0 0 17\r\nMESSAGE calm 1\r\nx\r\n"
BOOM = b"set subscribe 0 0 4\r\nboom\r\n"


def failing_topics(data: bytes, unique: bool = False) -> tuple[bytes, ...]:
    if b"boom" in data:
        raise RuntimeError("injected fault")
    return tuple(data.split())


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parser_module, "parse_topics", failing_topics)


def test_a_parser_failure_keeps_the_requests_before_it(broken: None) -> None:
    parser = RequestParser()
    got = parser.feed(b"version\r\n" + PUBLISH + BOOM + b"get messages\r\n")
    assert got[:2] == [Version(), Publish((((b"calm",), b"x"),))]
    assert got[2:] == [Rejected(ParserFailure(RuntimeError()))]
    assert parser.closed and not parser.idle
    assert parser.waiting is None and parser.incomplete is None
    assert parser.feed(b"version\r\n") == []


def test_the_failure_is_a_closing_server_error_holding_its_exception(broken: None) -> None:
    (rejected,) = RequestParser().feed(BOOM)
    assert isinstance(rejected, Rejected)
    error = rejected.error
    assert isinstance(error, FramingError) and error.closes  # the session closes on it
    assert error.reply == b"SERVER_ERROR internal error: request parser failed\r\n"
    assert error.kind == ServerError.kind  # counted as the server's fault, not the client's
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error.__cause__) == "injected fault"
    assert error.__cause__.__traceback__ is not None  # what the server logs


def test_a_failure_in_a_later_read_keeps_what_earlier_reads_completed(broken: None) -> None:
    parser = RequestParser()
    assert parser.feed(b"set subscribe 0 0 4\r\ncalm\r\nset subscribe 0 0 4\r\nbo") == [
        Subscribe((b"calm",))
    ]
    assert parser.waiting == "2 more bytes of a 4-byte set subscribe data block"
    assert parser.feed(b"om\r") == []  # the block is gathered in parts
    assert parser.feed(b"\nversion\r\n") == [Rejected(ParserFailure(RuntimeError()))]
    assert parser.closed and parser.feed(b"version\r\n") == []


def test_a_failure_on_a_request_line_is_caught_too(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_line(line: bytes) -> object:
        raise MemoryError

    monkeypatch.setattr(parser_module, "_decode_line", failing_line)
    parser = RequestParser()
    assert parser.feed(b"get messages\r\nversion\r\nget messages\r\n") == [
        Get((b"messages",)),
        Rejected(ParserFailure(MemoryError())),
    ]


def test_a_failure_after_a_framing_error_replaces_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only one closing Rejected ever comes out, and it is last."""
    fail = parser_module.RequestParser._fail

    def fail_then_raise(self: RequestParser, requests: list[object], reason: str) -> int:
        fail(self, requests, reason)  # type: ignore[arg-type]
        raise RuntimeError("injected fault")

    monkeypatch.setattr(parser_module.RequestParser, "_fail", fail_then_raise)
    got = RequestParser().feed(b"version\r\nset publish 0 0 x\r\n")
    assert got == [Version(), Rejected(ParserFailure(RuntimeError()))]


def test_the_promise_holds_without_injection() -> None:
    """The two inputs of the defect, fixed in the helpers, and no ParserFailure."""
    parser = RequestParser()
    got = parser.feed(PUBLISH + b"set subscribe 0 0 251\r\n" + b" " * 251 + b"\r\n")
    assert got == [Publish((((b"calm",), b"x"),)), Subscribe(())]
    got = RequestParser().feed(PUBLISH + b"set publish 0 0 " + b"9" * 4301 + b"\r\n")
    assert got[0] == Publish((((b"calm",), b"x"),))
    assert type(got[1].error) is FramingError  # type: ignore[union-attr]
