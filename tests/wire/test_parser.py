"""RequestParser against the wire contract (/work/shared/spec/protocol.md).

Two tables drive every test: good inputs with the requests they stand for, and bad
inputs with the Rejected they get. Each input is fed whole, one byte at a time, split
in two at every byte boundary, and followed by the first bytes of another request;
every way must give the same requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from kraken.errors import (
    BadHorizon,
    BadPublishBlock,
    BadPushOption,
    BadTopic,
    FramingError,
    UnknownCommand,
    UnknownSetCommand,
)
from kraken.wire import (
    Entry,
    Get,
    Publish,
    Push,
    Quit,
    Register,
    Rejected,
    Request,
    RequestParser,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
    parse_topics,
)

# -- helpers ---------------------------------------------------------------------------


def set_request(command: bytes, block: bytes, noreply: bool = False) -> bytes:
    """``set <command> 0 0 <bytes>[ noreply]\\r\\n<block>\\r\\n`` with the length filled in."""
    tail = b" noreply" if noreply else b""
    return b"set %b 0 0 %d%b\r\n%b\r\n" % (command, len(block), tail, block)


def feed(chunks: Iterable[bytes], **limits: int) -> tuple[RequestParser, list[Request]]:
    parser = RequestParser(**limits)
    requests: list[Request] = []
    for chunk in chunks:
        requests += parser.feed(chunk)
    return parser, requests


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


ERROR = Rejected(UnknownCommand())
BAD_TOPIC = Rejected(BadTopic())
BAD_TOPIC_NOREPLY = Rejected(BadTopic(), noreply=True)
BAD_HORIZON = Rejected(BadHorizon())
BAD_BLOCK = Rejected(BadPublishBlock())
BAD_FORMAT = Rejected(FramingError("bad command line format"))
BAD_LENGTH = Rejected(FramingError("bad data length"))


def bad_chunk(size: int) -> Rejected:
    """The framing error of a ``size``-byte data block not followed by CRLF."""
    return Rejected(
        FramingError(f"bad data chunk: a {size}-byte data block must be followed by \\r\\n")
    )


H = 1_764_300_000  # a horizon in seconds
T250 = b"t" * 250  # the longest valid topic

# -- the table of good inputs ----------------------------------------------------------

GOOD = [
    # register: the data block is ignored
    pytest.param(b"set register 0 0 0\r\n\r\n", [Register()], id="register"),
    pytest.param(b"set register 0 0 5\r\nhello\r\n", [Register()], id="register-block-ignored"),
    pytest.param(b"set register 0 0 0 noreply\r\n\r\n", [Register(True)], id="register-noreply"),
    pytest.param(b"set register 1 99 0\r\n\r\n", [Register()], id="register-flags-exptime-ignored"),
    # push (Part 2): the data block is ignored
    pytest.param(b"set push 0 0 0\r\n\r\n", [Push()], id="push"),
    pytest.param(b"set push 0 0 0 noreply\r\n\r\n", [Push(True)], id="push-noreply"),
    pytest.param(b"set push 0 0 6\r\nstamps\r\n", [Push(stamps=True)], id="push-stamps"),
    pytest.param(b"set push 0 0 9\r\n stamps  \r\n", [Push(stamps=True)], id="push-stamps-spaced"),
    # subscribe
    pytest.param(b"set subscribe 0 0 3\r\nfoo\r\n", [Subscribe((b"foo",))], id="subscribe-one"),
    pytest.param(
        b"set subscribe 0 0 11\r\nfoo bar baz\r\n",
        [Subscribe((b"foo", b"bar", b"baz"))],
        id="subscribe-several",
    ),
    pytest.param(
        b"set subscribe 0 0 12\r\n  foo   bar \r\n",
        [Subscribe((b"foo", b"bar"))],
        id="subscribe-repeated-and-trailing-spaces-ignored",
    ),
    pytest.param(
        b"set subscribe 0 0 11\r\nfoo bar foo\r\n",
        [Subscribe((b"foo", b"bar", b"foo"))],  # the router makes a repeat harmless
        id="subscribe-repeated-topic-kept",
    ),
    pytest.param(b"set subscribe 0 0 0\r\n\r\n", [Subscribe(())], id="subscribe-empty-block"),
    pytest.param(b"set subscribe 0 0 3\r\n   \r\n", [Subscribe(())], id="subscribe-only-spaces"),
    # more spaces than a topic may have bytes: still no topic (was a ValueError from max())
    pytest.param(set_request(b"subscribe", b" " * 251), [Subscribe(())], id="subscribe-251-spaces"),
    pytest.param(
        set_request(b"unsubscribe", b" " * 251), [Unsubscribe(())], id="unsubscribe-251-spaces"
    ),
    pytest.param(
        set_request(b"retro_subscribe", b"1764300000\r\n" + b" " * 251),
        [RetroSubscribe(H * 1_000_000, ())],
        id="retro-251-spaces",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE " + b" " * 251 + b" 1\r\nx"),
        [Publish((Entry((), b"x"),))],
        id="publish-entry-251-spaces-for-topics",
    ),
    pytest.param(set_request(b"subscribe", T250), [Subscribe((T250,))], id="subscribe-250-bytes"),
    pytest.param(
        set_request(b"subscribe", b"\x21\x7e\x80\xff ab\xc3\xa9"),
        [Subscribe((b"\x21\x7e\x80\xff", b"ab\xc3\xa9"))],
        id="subscribe-extreme-valid-bytes",
    ),
    pytest.param(
        b"set subscribe 0 0 3 noreply\r\nfoo\r\n",
        [Subscribe((b"foo",), True)],
        id="subscribe-noreply",
    ),
    # retro_subscribe: integer and decimal horizons
    pytest.param(
        b"set retro_subscribe 0 0 19\r\n1764300000\r\nfoo bar\r\n",
        [RetroSubscribe(H * 1_000_000, (b"foo", b"bar"))],
        id="retro-integer",
    ),
    *[
        pytest.param(
            set_request(b"retro_subscribe", b"%d.%b\r\nfoo" % (H, digits)),
            [RetroSubscribe(H * 1_000_000 + micros, (b"foo",))],
            id=f"retro-{len(digits)}-fractional-digits",
        )
        for digits, micros in [
            (b"1", 100_000),
            (b"12", 120_000),
            (b"123", 123_000),
            (b"1234", 123_400),
            (b"12345", 123_450),
            (b"123456", 123_456),
            (b"000001", 1),
        ]
    ],
    pytest.param(
        set_request(b"retro_subscribe", b"0\r\nfoo"),
        [RetroSubscribe(0, (b"foo",))],
        id="retro-zero",
    ),
    pytest.param(
        set_request(b"retro_subscribe", b"999999999999.999999\r\nfoo"),
        [RetroSubscribe(999_999_999_999_999_999, (b"foo",))],
        id="retro-12-digits",
    ),
    pytest.param(
        set_request(b"retro_subscribe", b"1764300000\r\n"),
        [RetroSubscribe(H * 1_000_000, ())],
        id="retro-no-topic",
    ),
    pytest.param(
        set_request(b"retro_subscribe", b"1764300000\r\n a  b "),
        [RetroSubscribe(H * 1_000_000, (b"a", b"b"))],
        id="retro-repeated-spaces",
    ),
    pytest.param(
        set_request(b"retro_subscribe", b"1764300000.5\r\nfoo", noreply=True),
        [RetroSubscribe(H * 1_000_000 + 500_000, (b"foo",), True)],
        id="retro-noreply",
    ),
    # unsubscribe
    pytest.param(
        b"set unsubscribe 0 0 3\r\nfoo\r\n", [Unsubscribe((b"foo",))], id="unsubscribe-one"
    ),
    pytest.param(
        b"set unsubscribe 0 0 8\r\nfoo  bar\r\n",
        [Unsubscribe((b"foo", b"bar"))],
        id="unsubscribe-several",
    ),
    pytest.param(b"set unsubscribe 0 0 0\r\n\r\n", [Unsubscribe(())], id="unsubscribe-empty"),
    pytest.param(
        b"set unsubscribe 0 0 3 noreply\r\nfoo\r\n",
        [Unsubscribe((b"foo",), True)],
        id="unsubscribe-noreply",
    ),
    # publish
    pytest.param(
        b"set publish 0 0 20\r\nMESSAGE foo 5\r\nhello\r\n",
        [Publish((Entry((b"foo",), b"hello"),))],
        id="publish-one-entry",
    ),
    pytest.param(
        b"set publish 0 0 22\r\nMESSAGE foo 5\r\nhello\r\n\r\n",
        [Publish((Entry((b"foo",), b"hello"),))],
        id="publish-last-entry-with-its-crlf",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a 1\r\nx\r\nMESSAGE b c 2\r\nyz\r\nMESSAGE c 0\r\n"),
        [
            Publish(
                (
                    Entry((b"a",), b"x"),
                    Entry((b"b", b"c"), b"yz"),
                    Entry((b"c",), b""),
                )
            )
        ],
        id="publish-several-entries",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a 0\r\n\r\nMESSAGE b 1\r\nx"),
        [Publish((Entry((b"a",), b""), Entry((b"b",), b"x")))],
        id="publish-empty-payload-then-entry",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE c a b 1\r\nx"),
        [Publish((Entry((b"c", b"a", b"b"), b"x"),))],
        id="publish-topics-keep-their-order",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a 8\r\n\r\n\x00\xff\r\n\r\n"),
        [Publish((Entry((b"a",), b"\r\n\x00\xff\r\n\r\n"),))],
        id="publish-payload-with-crlf-and-binary",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a 14\r\nMESSAGE b 1\r\nx"),
        [Publish((Entry((b"a",), b"MESSAGE b 1\r\nx"),))],
        id="publish-length-decides-where-payload-ends",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a 3\r\nabc\r\nMESSAGE b 3\r\ndef"),
        [Publish((Entry((b"a",), b"abc"), Entry((b"b",), b"def")))],
        id="publish-last-entry-without-crlf",
    ),
    pytest.param(b"set publish 0 0 0\r\n\r\n", [Publish(())], id="publish-empty-block"),
    pytest.param(
        b"set publish 0 0 16\r\nMESSAGE 3\r\nabc\r\n\r\n",
        [Publish((Entry((), b"abc"),))],
        id="publish-entry-with-no-topic",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE  3\r\nabc"),
        [Publish((Entry((), b"abc"),))],
        id="publish-entry-with-no-topic-two-spaces",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a   b  1\r\nx"),
        [Publish((Entry((b"a", b"b"), b"x"),))],
        id="publish-repeated-spaces-between-topics",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE " + T250 + b" 1\r\nx"),
        [Publish((Entry((T250,), b"x"),))],
        id="publish-250-byte-topic",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a 1\r\nx", noreply=True),
        [Publish((Entry((b"a",), b"x"),), True)],
        id="publish-noreply",
    ),
    # get
    pytest.param(b"get messages\r\n", [Get((b"messages",))], id="get-messages"),
    pytest.param(b"get horizon\r\n", [Get((b"horizon",))], id="get-horizon"),
    pytest.param(
        b"get messages horizon\r\n",
        [Get((b"messages", b"horizon"))],
        id="get-messages-horizon",
    ),
    pytest.param(
        b"get nothing messages\r\n", [Get((b"nothing", b"messages"))], id="get-unknown-key"
    ),
    pytest.param(b"get  messages \r\n", [Get((b"messages",))], id="get-extra-spaces"),
    # version, quit
    pytest.param(b"version\r\n", [Version()], id="version"),
    pytest.param(b"quit\r\n", [Quit()], id="quit"),
    # bare LF ends a request line
    pytest.param(b"get messages\n", [Get((b"messages",))], id="bare-lf-get"),
    pytest.param(b"get horizon\n", [Get((b"horizon",))], id="bare-lf-get-horizon"),
    pytest.param(b"version\n", [Version()], id="bare-lf-version"),
    pytest.param(b"quit\n", [Quit()], id="bare-lf-quit"),
    pytest.param(b"set subscribe 0 0 3\nfoo\r\n", [Subscribe((b"foo",))], id="bare-lf-set-line"),
    # lengths padded with zeros past what int() takes (4,300 digits) are their value
    pytest.param(
        b"set subscribe 0 0 " + b"0" * 5000 + b"3\r\nfoo\r\n",
        [Subscribe((b"foo",))],
        id="data-length-zero-padded-to-5001-digits",
    ),
    pytest.param(
        set_request(b"publish", b"MESSAGE a " + b"0" * 5000 + b"1\r\nx"),
        [Publish((Entry((b"a",), b"x"),))],
        id="publish-length-zero-padded-to-5001-digits",
    ),
    # pipelined requests come out in order
    pytest.param(
        b"set register 0 0 0\r\n\r\n"
        b"set subscribe 0 0 3\r\nfoo\r\n"
        b"set publish 0 0 17\r\nMESSAGE foo 2\r\nhi\r\n"
        b"get messages horizon\r\n"
        b"version\r\n"
        b"quit\r\n",
        [
            Register(),
            Subscribe((b"foo",)),
            Publish((Entry((b"foo",), b"hi"),)),
            Get((b"messages", b"horizon")),
            Version(),
            Quit(),
        ],
        id="pipelined",
    ),
]

# -- the table of bad inputs: (bytes, expected requests, closes, parser limits) ---------

SMALL = {"max_line_bytes": 32, "max_request_bytes": 64}
DIGITS_5000 = "data block with a 5000-digit length exceeds 8388608 bytes"
SET_LINE_32 = b"set subscribe 000000 0 3 noreply"  # flags are ignored, so they can pad
SET_LINE_33 = b"set subscribe 0000000 0 3 noreply"


def row(
    data: bytes, expected: list[Request], closes: bool, id: str, **limits: int
) -> Any:  # a pytest ParameterSet
    return pytest.param(data, expected, closes, limits, id=id)


BAD_TOPICS = [
    *[(f"byte-{byte:#04x}", b"a%cb" % byte) for byte in [*range(0x20), 0x7F]],
    ("251-bytes", b"x" * 251),
    ("251-bytes-after-good-one", b"ok " + b"x" * 251),
    ("251-bytes-before-good-one", b"x" * 251 + b" ok"),
    ("del-after-good-one", b"ok bad\x7f"),
]


def with_topic(command: bytes, topics: bytes, noreply: bool = False) -> bytes:
    """A ``set <command>`` request carrying ``topics`` where its topics go."""
    if command == b"publish":
        block = b"MESSAGE " + topics + b" 1\r\nx"
    elif command == b"retro_subscribe":
        block = b"1764300000\r\n" + topics
    else:
        block = topics
    return set_request(command, block, noreply)


# Inputs right at a limit: accepted.
AT_LIMITS = [
    row(b"get " + b"k" * 28 + b"\r\n", [Get((b"k" * 28,))], False, "line-32-crlf", **SMALL),
    row(b"get " + b"k" * 28 + b"\n", [Get((b"k" * 28,))], False, "line-32-bare-lf", **SMALL),
    row(
        SET_LINE_32 + b"\r\nabc\r\n",
        [Subscribe((b"abc",), True)],
        False,
        "set-line-32",
        **SMALL,
    ),
    row(set_request(b"register", b"x" * 64), [Register()], False, "block-of-max-bytes", **SMALL),
]

BAD = [
    # unknown request lines: ERROR, connection stays open
    row(b"bogus\r\n", [ERROR], False, "unknown-command-word"),
    row(b"bogus command here\r\n", [ERROR], False, "unknown-command-word-with-args"),
    row(b"\r\n", [ERROR], False, "empty-line"),
    row(b"SET register 0 0 0\r\n", [ERROR], False, "uppercase-set"),
    row(b"bogus\n", [ERROR], False, "unknown-command-bare-lf"),
    row(b"get\r\n", [ERROR], False, "get-without-key"),
    row(b"get \r\n", [ERROR], False, "get-without-key-trailing-space"),
    row(b"bogus\r\nversion\r\n", [ERROR, Version()], False, "later-requests-still-parsed"),
    # set push with an option this server does not know: refused, connection kept
    row(
        b"set push 0 0 12\r\nstamps speed\r\n",
        [Rejected(BadPushOption("unknown push option speed (known: stamps)"))],
        False,
        "push-unknown-option",
    ),
    # set of an unknown command with a well-formed block
    row(
        b"set frobnicate 0 0 3\r\nabc\r\n",
        [Rejected(UnknownSetCommand("unknown command frobnicate"))],
        False,
        "unknown-set-command",
    ),
    row(
        b"set frobnicate 0 0 3 noreply\r\nabc\r\n",
        [Rejected(UnknownSetCommand("unknown command frobnicate"), noreply=True)],
        False,
        "unknown-set-command-noreply",
    ),
    row(
        b"set get 0 0 0\r\n\r\n",
        [Rejected(UnknownSetCommand("unknown command get"))],
        False,
        "set-of-a-get-key",
    ),
    # bad horizons
    *[
        row(set_request(b"retro_subscribe", block), [BAD_HORIZON], False, f"horizon-{name}")
        for name, block in [
            ("plus-sign", b"+1764300000\r\nfoo"),
            ("minus-sign", b"-1764300000\r\nfoo"),
            ("exponent", b"1.7643e9\r\nfoo"),
            ("exponent-integer", b"1764300000e0\r\nfoo"),
            ("leading-space", b" 1764300000\r\nfoo"),
            ("trailing-space", b"1764300000 \r\nfoo"),
            ("inner-space", b"17643 00000\r\nfoo"),
            ("13-digits", b"1234567890123\r\nfoo"),
            ("7-fractional-digits", b"1764300000.1234567\r\nfoo"),
            ("dot-without-fraction", b"1764300000.\r\nfoo"),
            ("fraction-without-integer", b".5\r\nfoo"),
            ("two-dots", b"1.2.3\r\nfoo"),
            ("comma", b"1764300000,5\r\nfoo"),
            ("hex", b"0x10\r\nfoo"),
            ("letters", b"now\r\nfoo"),
            ("non-ascii-digit", "١٢٣".encode() + b"\r\nfoo"),
            ("empty", b"\r\nfoo"),
            ("empty-block", b""),
            ("no-crlf-in-block", b"1764300000 foo"),
            ("no-crlf-horizon-only", b"1764300000"),
            ("bare-lf-in-block", b"1764300000\nfoo"),
        ]
    ],
    row(
        set_request(b"retro_subscribe", b"1764300000", noreply=True),
        [Rejected(BadHorizon(), noreply=True)],
        False,
        "horizon-bad-noreply",
    ),
    # malformed publish blocks
    *[
        row(set_request(b"publish", block), [BAD_BLOCK], False, f"publish-{name}")
        for name, block in [
            ("not-message", b"PUBLISH a 1\r\nx"),
            ("lowercase-message", b"message a 1\r\nx"),
            ("message-without-space", b"MESSAGEa 1\r\nx"),
            ("message-alone", b"MESSAGE\r\nx"),
            ("leading-space", b" MESSAGE a 1\r\nx"),
            ("leading-crlf", b"\r\nMESSAGE a 1\r\nx"),
            ("missing-length", b"MESSAGE a\r\nx"),
            ("missing-length-and-topic", b"MESSAGE \r\nx"),
            ("space-after-length", b"MESSAGE a 1 \r\nx"),
            ("non-numeric-length", b"MESSAGE a x\r\nx"),
            ("negative-length", b"MESSAGE a -1\r\nx"),
            ("plus-length", b"MESSAGE a +1\r\nx"),
            ("decimal-length", b"MESSAGE a 1.0\r\nx"),
            ("length-longer-than-payload", b"MESSAGE a 5\r\nabc"),
            ("length-shorter-than-payload", b"MESSAGE a 2\r\nabc"),
            ("no-crlf-after-header", b"MESSAGE a 3"),
            ("bare-lf-after-header", b"MESSAGE a 3\nabc"),
            ("trailing-garbage-after-crlf", b"MESSAGE a 3\r\nabc\r\ngarbage"),
            ("trailing-garbage-after-payload", b"MESSAGE a 3\r\nabcgarbage"),
            ("trailing-cr", b"MESSAGE a 3\r\nabc\r"),
            ("extra-crlf-at-end", b"MESSAGE a 3\r\nabc\r\n\r\n"),
            ("good-entry-then-bad-one", b"MESSAGE a 1\r\nx\r\nMESSAGE b 5\r\nab"),
            ("good-entry-then-garbage", b"MESSAGE a 2\r\nok\r\nPUBLISH a 1\r\nx"),
            ("only-crlf", b"\r\n"),
            ("only-garbage", b"garbage"),
        ]
    ],
    row(
        set_request(b"publish", b"MESSAGE a 9\r\nx", noreply=True),
        [Rejected(BadPublishBlock(), noreply=True)],
        False,
        "publish-bad-block-noreply",
    ),
    # bad topic wins over bad publish block
    *[
        row(set_request(b"publish", block), [BAD_TOPIC], False, f"bad-topic-wins-{name}")
        for name, block in [
            ("length-longer", b"MESSAGE bad\x01 5\r\nabc"),
            ("length-shorter", b"MESSAGE bad\x01 1\r\nabc"),
            ("251-bytes-length-longer", b"MESSAGE " + b"x" * 251 + b" 9\r\nabc"),
            ("in-later-entry", b"MESSAGE ok 1\r\nx\r\nMESSAGE ok b\x7fd 9\r\nx"),
            ("non-numeric-length", b"MESSAGE bad\x01 x\r\nabc"),
        ]
    ],
    # bad topics in every command that takes topics
    *[
        row(with_topic(command, topics), [BAD_TOPIC], False, f"{command.decode()}-{name}")
        for command in [b"subscribe", b"unsubscribe", b"retro_subscribe", b"publish"]
        for name, topics in BAD_TOPICS
    ],
    *[
        row(
            with_topic(command, b"a\x01b", noreply=True),
            [BAD_TOPIC_NOREPLY],
            False,
            f"{command.decode()}-bad-topic-noreply",
        )
        for command in [b"subscribe", b"unsubscribe", b"retro_subscribe", b"publish"]
    ],
    # framing errors: the parser closes
    row(b"set\r\n", [BAD_FORMAT], True, "set-alone"),
    row(b"set subscribe 0 0\r\nfoo\r\n", [BAD_FORMAT], True, "set-line-4-fields"),
    row(b"set subscribe 0 0 3 noreply x\r\nfoo\r\n", [BAD_FORMAT], True, "set-line-7-fields"),
    row(b"set subscribe 0 0 3 norepy\r\nfoo\r\n", [BAD_FORMAT], True, "set-line-6th-not-noreply"),
    row(b"set subscribe 0 0 x\r\nfoo\r\n", [BAD_LENGTH], True, "bytes-not-a-number"),
    row(b"set subscribe 0 0 -1\r\nfoo\r\n", [BAD_LENGTH], True, "bytes-negative"),
    row(b"set subscribe 0 0 +3\r\nfoo\r\n", [BAD_LENGTH], True, "bytes-plus-sign"),
    row(b"set subscribe 0 0 3.0\r\nfoo\r\n", [BAD_LENGTH], True, "bytes-decimal"),
    row(
        b"set subscribe 0 0 3 noreply\r\nfooXY", [bad_chunk(3)], True, "block-not-followed-by-crlf"
    ),
    row(b"set subscribe 0 0 2\r\nfoo\r\n", [bad_chunk(2)], True, "block-longer-than-bytes"),
    row(b"set subscribe 0 0 4\r\nfoo\r\nget", [bad_chunk(4)], True, "block-shorter-than-bytes"),
    row(b"set subscribe 0 0 3\r\nfoo\nversion\r\n", [bad_chunk(3)], True, "block-followed-by-lf"),
    # the byte after the block decides at once: no wait for a second one
    row(b"set subscribe 0 0 6\ntopicA\n", [bad_chunk(6)], True, "block-followed-by-lf-alone"),
    row(b"set subscribe 0 0 3\r\nfoox", [bad_chunk(3)], True, "block-followed-by-other-byte"),
    row(b"set subscribe 0 0 3\r\nfoo\rx", [bad_chunk(3)], True, "block-followed-by-cr-other"),
    row(b"set subscribe 0 0 3\r\nfoo\r\r", [bad_chunk(3)], True, "block-followed-by-cr-cr"),
    row(b"set register 0 0 0\r\nx", [bad_chunk(0)], True, "empty-block-followed-by-byte"),
    row(
        b"version\r\nset publish 0 0 16\r\nMESSAGE a 1\r\nx\r\n\n",
        [Version(), bad_chunk(16)],
        True,
        "requests-before-a-bad-chunk-kept",
    ),
    row(
        b"get messages\r\nset subscribe 0 0\r\nversion\r\n",
        [Get((b"messages",)), BAD_FORMAT],
        True,
        "requests-before-framing-error-kept",
    ),
    # request line length, around max_line_bytes = 32
    row(
        b"get " + b"k" * 29 + b"\r\n",
        [Rejected(FramingError("request line longer than 32 bytes"))],
        True,
        "line-33-crlf",
        **SMALL,
    ),
    row(
        b"get " + b"k" * 29 + b"\n",
        [Rejected(FramingError("request line longer than 32 bytes"))],
        True,
        "line-33-bare-lf",
        **SMALL,
    ),
    row(
        b"get " + b"k" * 29,
        [Rejected(FramingError("request line longer than 32 bytes"))],
        True,
        "line-33-without-crlf",
        **SMALL,
    ),
    row(
        b"get " + b"k" * 28 + b"\rx",
        [Rejected(FramingError("request line longer than 32 bytes"))],
        True,
        "line-32-then-cr-then-other-byte",
        **SMALL,
    ),
    row(
        SET_LINE_33 + b"\r\nabc\r\n",
        [Rejected(FramingError("request line longer than 32 bytes"))],
        True,
        "set-line-33",
        **SMALL,
    ),
    # data block size, around max_request_bytes = 64
    row(
        b"set publish 0 0 65\r\n",
        [Rejected(FramingError("data block of 65 bytes exceeds 64 bytes"))],
        True,
        "block-over-max-bytes-rejected-before-it-arrives",
        **SMALL,
    ),
    row(
        b"set publish 0 0 8388609\r\n",
        [Rejected(FramingError("data block of 8388609 bytes exceeds 8388608 bytes"))],
        True,
        "block-over-default-max-bytes",
    ),
    # lengths longer than int() takes (4,300 digits): an error, not a ValueError
    row(
        b"version\r\nset subscribe 0 0 " + b"9" * 5000 + b"\r\n",
        [Version(), Rejected(FramingError(DIGITS_5000))],
        True,
        "data-length-of-5000-digits",
    ),
    row(
        b"set subscribe 0 0 " + b"9" * 20 + b"\r\n",
        [Rejected(FramingError(f"data block of {'9' * 20} bytes exceeds 8388608 bytes"))],
        True,
        "data-length-of-20-digits-is-echoed",
    ),
    row(
        b"set subscribe 0 0 000" + b"1" + b"0" * 20 + b"\r\n",
        [Rejected(FramingError("data block with a 21-digit length exceeds 8388608 bytes"))],
        True,
        "data-length-of-21-digits-is-not",
    ),
    row(
        set_request(b"publish", b"MESSAGE a " + b"9" * 5000 + b"\r\nx"),
        [BAD_BLOCK],
        False,
        "publish-length-of-5000-digits",
    ),
    row(
        set_request(b"publish", b"MESSAGE a 1\r\nx\r\nMESSAGE b " + b"1" * 21 + b"\r\nx"),
        [BAD_BLOCK],
        False,
        "publish-length-of-21-digits",
    ),
]

# -- whole, byte by byte, in two pieces, with trailing bytes --------------------------

BOTH = [
    *[pytest.param(*p.values, False, {}, id=p.id) for p in GOOD],
    *AT_LIMITS,
    *BAD,
]

# Complete requests whose every proper prefix is fed after a case, then the rest.
FOLLOWERS = [
    (b"set subscribe 0 0 3\r\nfoo\r\n", Subscribe((b"foo",))),
    (b"get messages\r\n", Get((b"messages",))),
]


@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BOTH)
def test_fed_whole(data, expected, closes, limits):
    parser, requests = feed([data], **limits)
    assert requests == expected
    assert parser.closed is closes


@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BOTH)
def test_fed_one_byte_at_a_time(data, expected, closes, limits):
    parser, requests = feed(bytewise(data), **limits)
    assert requests == expected
    assert parser.closed is closes


@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BOTH)
def test_fed_in_two_pieces_split_at_every_byte(data, expected, closes, limits):
    for cut in range(len(data) + 1):
        parser, requests = feed([data[:cut], data[cut:]], **limits)
        assert requests == expected, f"split at {cut}"
        assert parser.closed is closes


@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BOTH)
def test_trailing_partial_request_waits_for_its_rest(data, expected, closes, limits):
    for follower, request in FOLLOWERS:
        for cut in range(len(follower)):
            parser = RequestParser(**limits)
            assert parser.feed(data + follower[:cut]) == expected, f"prefix {follower[:cut]!r}"
            # After a closing error nothing more is parsed; otherwise the rest completes it.
            assert parser.feed(follower[cut:]) == ([] if closes else [request])


@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BOTH)
def test_every_result_is_a_request(data, expected, closes, limits):
    _, requests = feed(bytewise(data), **limits)
    assert all(isinstance(request, Request) for request in requests)


@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BAD)
def test_rejected_error_says_whether_it_closes(data, expected, closes, limits):
    _, requests = feed([data], **limits)
    rejected = [r for r in requests if isinstance(r, Rejected)]
    assert rejected
    assert [r.error.closes for r in rejected] == [False] * (len(rejected) - 1) + [closes]


# -- the rules spelled out ---------------------------------------------------------------


def test_after_a_closing_error_feed_returns_nothing():
    parser = RequestParser()
    assert parser.feed(b"set subscribe 0 0 x\r\n") == [BAD_LENGTH]
    assert parser.closed
    assert parser.feed(b"version\r\n") == []
    assert parser.feed(b"set subscribe 0 0 3\r\nfoo\r\n") == []
    assert parser.feed(b"") == []


def test_error_replies_are_the_contract_lines():
    assert ERROR.error.reply == b"ERROR\r\n"
    assert BAD_TOPIC.error.reply == b"CLIENT_ERROR bad topic\r\n"
    assert BAD_HORIZON.error.reply == b"CLIENT_ERROR bad horizon\r\n"
    assert BAD_BLOCK.error.reply == b"CLIENT_ERROR bad publish block\r\n"
    assert BAD_FORMAT.error.reply == b"CLIENT_ERROR bad command line format\r\n"
    unknown = Rejected(UnknownSetCommand("unknown command frobnicate"))
    assert unknown.error.reply == b"CLIENT_ERROR unknown command frobnicate\r\n"


@pytest.mark.parametrize(
    "data",
    [
        b"set frobnicate 0 0 1 noreply\r\nx\r\n",
        b"set subscribe 0 0 4 noreply\r\na\x01bc\r\n",
        b"set unsubscribe 0 0 4 noreply\r\na\x01bc\r\n",
        b"set retro_subscribe 0 0 4 noreply\r\n-1\r\n\r\n",
        b"set publish 0 0 3 noreply\r\nbad\r\n",
    ],
)
def test_rejected_set_carries_noreply_of_its_line(data):
    [rejected] = RequestParser().feed(data)
    assert isinstance(rejected, Rejected)
    assert rejected.noreply is True
    assert rejected.error.closes is False


def test_unknown_command_keeps_parsing_later_requests():
    parser = RequestParser()
    assert parser.feed(b"bogus\r\nget\r\nset subscribe 0 0 3\r\nfoo\r\n") == [
        ERROR,
        ERROR,
        Subscribe((b"foo",)),
    ]
    assert not parser.closed
    assert parser.feed(b"version\r\n") == [Version()]


def test_padded_set_lines_have_the_lengths_their_names_say():
    assert (len(SET_LINE_32), len(SET_LINE_33)) == (32, 33)


def test_line_of_exactly_max_line_bytes_is_accepted():
    line = b"get " + b"k" * (8192 - 4)
    assert len(line) == 8192
    assert RequestParser().feed(line + b"\r\n") == [Get((b"k" * 8188,))]


def test_line_one_byte_over_max_line_bytes_is_rejected():
    line = b"get " + b"k" * (8192 - 3)
    too_long = Rejected(FramingError("request line longer than 8192 bytes"))
    parser = RequestParser()
    assert parser.feed(line + b"\r\n") == [too_long]
    assert parser.closed


def test_line_of_exactly_max_line_bytes_waits_for_its_end():
    parser = RequestParser(max_line_bytes=32)
    line = b"get " + b"k" * 28
    assert parser.feed(line) == []
    assert parser.feed(b"\r") == []
    assert not parser.closed
    assert parser.feed(b"\n") == [Get((b"k" * 28,))]


def test_line_without_end_over_max_line_bytes_is_rejected_as_soon_as_it_is_too_long():
    parser = RequestParser(max_line_bytes=8192)
    assert parser.feed(b"x" * 8192) == []
    assert not parser.closed
    assert parser.feed(b"x") == [Rejected(FramingError("request line longer than 8192 bytes"))]
    assert parser.closed


def test_block_of_exactly_max_request_bytes_is_accepted():
    parser = RequestParser(max_request_bytes=1000)
    block = b"MESSAGE a 985\r\n" + b"p" * 985
    assert len(block) == 1000
    assert parser.feed(set_request(b"publish", block)) == [Publish((Entry((b"a",), b"p" * 985),))]


def test_block_over_max_request_bytes_is_rejected_before_its_bytes_arrive():
    parser = RequestParser(max_request_bytes=1000)
    assert parser.feed(b"set publish 0 0 1001\r\n") == [
        Rejected(FramingError("data block of 1001 bytes exceeds 1000 bytes"))
    ]
    assert parser.closed
    assert parser.feed(b"p" * 1001 + b"\r\n") == []


def test_large_block_in_many_pieces_is_one_request():
    payload = bytes(range(256)) * 4096  # 1 MiB, CRLF included
    block = b"MESSAGE big 1048576\r\n" + payload
    data = set_request(b"publish", block) + b"version\r\n"
    parser = RequestParser()
    requests: list[Request] = []
    for i in range(0, len(data), 4093):
        requests += parser.feed(data[i : i + 4093])
    assert requests == [Publish((Entry((b"big",), payload),)), Version()]


def test_block_arriving_with_next_request_in_one_feed():
    parser = RequestParser()
    assert parser.feed(b"set subscribe 0 0 3\r\n") == []
    assert parser.feed(b"fo") == []
    assert parser.feed(b"o\r\nversion\r\nget mess") == [Subscribe((b"foo",)), Version()]
    assert parser.feed(b"ages\r\n") == [Get((b"messages",))]


def test_feeding_nothing_returns_nothing():
    parser = RequestParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"get") == []
    assert parser.feed(b"") == []
    assert parser.feed(b" messages\r\n") == [Get((b"messages",))]


# -- a data block must be followed by CRLF: a missing CR is answered at once ------------


def test_block_followed_by_bare_lf_is_rejected_without_waiting_for_another_byte():
    """``printf 'set subscribe 0 0 6\\ntopicA\\n'`` used to get no reply at all."""
    parser = RequestParser()
    assert parser.feed(b"set subscribe 0 0 6\ntopicA") == []
    assert parser.feed(b"\n") == [bad_chunk(6)]
    assert parser.closed
    assert bad_chunk(6).error.reply == (
        b"CLIENT_ERROR bad data chunk: a 6-byte data block must be followed by \\r\\n\r\n"
    )


def test_cr_after_block_waits_for_its_lf_and_any_other_byte_is_rejected():
    parser = RequestParser()
    assert parser.feed(b"set subscribe 0 0 3\r\nfoo\r") == []
    assert not parser.closed
    assert parser.feed(b"\r") == [bad_chunk(3)]
    parser = RequestParser()
    assert parser.feed(b"set subscribe 0 0 3\r\nfoo\r") == []
    assert parser.feed(b"\n") == [Subscribe((b"foo",))]
    assert parser.idle


def test_large_block_whose_crlf_is_split_is_one_request():
    payload = b"p" * 100_000
    data = set_request(b"publish", b"MESSAGE a 100000\r\n" + payload)
    cr = len(data) - 2
    for chunks in ([data[:cr], data[cr : cr + 1], data[cr + 1 :]], [data[: cr + 1], data[-1:]]):
        assert feed(chunks)[1] == [Publish((Entry((b"a",), payload),))]


# -- what an incomplete request still lacks ------------------------------------------------


def test_waiting_and_incomplete_say_what_a_data_block_still_lacks():
    parser = RequestParser()
    assert (parser.waiting, parser.incomplete) == (None, None)
    parser.feed(b"set publish 0 0 27\r\n")
    block = "27-byte set publish data block"
    assert parser.waiting == parser.incomplete == f"27 more bytes of a {block}"
    parser.feed(b"MESSAGE topicA 9\r\nhi ther")
    assert parser.waiting == parser.incomplete == f"2 more bytes of a {block}"
    parser.feed(b"e!")
    assert parser.waiting == f"the \\r\\n after a {block}"
    parser.feed(b"\r")
    assert parser.waiting == f"the \\n after a {block}"
    assert parser.feed(b"\n") == [Publish((Entry((b"topicA",), b"hi there!"),))]
    assert (parser.waiting, parser.incomplete) == (None, None)


def test_waiting_counts_every_byte_however_the_block_arrives():
    data = set_request(b"subscribe", b"abcdefghij")
    head = len(b"set subscribe 0 0 10\r\n")
    for i, byte in enumerate(bytewise(data)[:-2]):
        parser = RequestParser()
        parser.feed(data[:i])
        # fed in one piece up to i, then the next byte alone: pieces and joins agree
        parser.feed(byte)
        have = i + 1 - head
        if have < 0:
            assert parser.waiting is None
        elif have < 10:
            more = f"{10 - have} more byte{'' if have == 9 else 's'}"
            assert parser.waiting == f"{more} of a 10-byte set subscribe data block"
        else:
            assert parser.waiting == "the \\r\\n after a 10-byte set subscribe data block"


def test_incomplete_also_names_a_request_line_without_its_end_and_waiting_does_not():
    parser = RequestParser()
    parser.feed(b"get mess")
    assert parser.waiting is None
    assert parser.incomplete == "the end of a request line (8 bytes so far)"
    parser.feed(b"ages\r")
    assert parser.incomplete == "the end of a request line (13 bytes so far)"
    assert parser.feed(b"\n") == [Get((b"messages",))]
    assert parser.incomplete is None


def test_after_a_framing_error_nothing_is_awaited():
    parser = RequestParser()
    parser.feed(b"set subscribe 0 0 3\r\nfoo\n")
    assert parser.closed
    assert (parser.waiting, parser.incomplete) == (None, None)


def test_waiting_shows_a_long_or_binary_command_name_shortened_and_escaped():
    parser = RequestParser()
    parser.feed(b"set " + b"\xff" + b"n" * 100 + b" 0 0 5\r\nab")
    assert parser.waiting == f"3 more bytes of a 5-byte set \\xff{'n' * 39}... data block"
    assert parser.waiting.isascii()


# -- inputs that used to raise (issue 11) ----------------------------------------------------


def test_a_topic_list_of_only_spaces_is_no_topic():
    """``max()`` of no topic raised ValueError for a list of over 250 spaces."""
    assert parse_topics(b" " * 251) == ()
    assert parse_topics(b" " * 10_000, unique=True) == ()
    with pytest.raises(BadTopic):
        parse_topics(b" " * 250 + b"x" * 251)


def test_an_all_spaces_subscribe_is_stored_like_an_empty_one_and_keeps_earlier_requests():
    parser = RequestParser()
    data = set_request(b"publish", b"MESSAGE a 1\r\nx") + set_request(b"subscribe", b" " * 251)
    assert parser.feed(data) == [Publish((Entry((b"a",), b"x"),)), Subscribe(())]
    assert parser.idle


def test_a_data_length_past_what_int_takes_is_a_framing_error_and_keeps_earlier_requests():
    parser = RequestParser()
    data = b"version\r\nset subscribe 0 0 " + b"9" * 4301 + b"\r\n"
    assert parser.feed(data) == [
        Version(),
        Rejected(FramingError("data block with a 4301-digit length exceeds 8388608 bytes")),
    ]
    assert parser.closed


def test_an_unknown_set_command_is_echoed_capped():
    name = b"x" * 8000
    (rejected,) = RequestParser().feed(b"set " + name + b" 0 0 1\r\nz\r\n")
    assert isinstance(rejected, Rejected)
    assert rejected.error.reply == b"CLIENT_ERROR unknown command " + b"x" * 40 + b"...\r\n"
    (short,) = RequestParser().feed(b"set frob 0 0 1\r\nz\r\n")
    assert short.error.reply == b"CLIENT_ERROR unknown command frob\r\n"  # type: ignore[union-attr]


# -- max_batch: at most so many requests per feed, the rest kept -----------------------


def weight(request: Request) -> int:
    """What a request counts against ``max_batch``: a get its keys, a publish its
    messages (at least 1), any other request 1."""
    if isinstance(request, Get):
        return len(request.keys)
    if isinstance(request, Publish):
        return max(1, len(request.entries))
    return 1


def feed_in_batches(chunks: Iterable[bytes], max_batch: int, **limits: int) -> list[Request]:
    """Every request, feeding ``b""`` while the parser says it holds ``more``; checks
    that each feed stops as soon as its requests weigh ``max_batch``, not before."""
    parser = RequestParser(max_batch=max_batch, **limits)
    requests: list[Request] = []
    for chunk in chunks:
        batch = parser.feed(chunk)
        while True:
            weights = [weight(r) for r in batch]
            assert sum(weights[:-1]) < max_batch  # the last one may take it past
            requests += batch
            if not parser.more:
                break
            assert sum(weights) >= max_batch  # stopped only at the limit
            batch = parser.feed(b"")
    return requests


@pytest.mark.parametrize("max_batch", [1, 2])
@pytest.mark.parametrize(("data", "expected", "closes", "limits"), BOTH)
def test_fed_in_batches_gives_the_same_requests(data, expected, closes, limits, max_batch):
    twice = data + data if not closes else data  # a second copy, to cross a batch's end
    _, whole = feed([twice], **limits)
    assert feed_in_batches([twice], max_batch, **limits) == whole
    assert feed_in_batches(bytewise(twice), max_batch, **limits) == whole


def test_a_feed_stops_at_max_batch_and_an_empty_feed_goes_on():
    parser = RequestParser(max_batch=3)
    data = b"version\r\n" * 7 + set_request(b"subscribe", b"a b") + b"get mess"
    assert parser.feed(data) == [Version()] * 3
    assert parser.more and not parser.idle
    assert parser.feed(b"") == [Version()] * 3
    assert parser.feed(b"") == [Version(), Subscribe((b"a", b"b"))]
    assert not parser.more
    assert parser.incomplete == "the end of a request line (8 bytes so far)"
    assert parser.feed(b"ages\r\n") == [Get((b"messages",))]
    assert parser.idle and not parser.more


def test_bytes_fed_while_more_is_held_are_parsed_after_what_was_held():
    parser = RequestParser(max_batch=2)
    assert parser.feed(b"version\r\n" * 3) == [Version()] * 2
    assert parser.more
    assert parser.feed(b"quit\r\n") == [Version(), Quit()]
    assert not parser.more


def test_a_data_block_counts_as_one_request_however_large():
    block = b"MESSAGE t 100000\r\n" + b"x" * 100_000
    parser = RequestParser(max_batch=1)
    requests = parser.feed(set_request(b"publish", block) + b"version\r\n")
    assert [type(r) for r in requests] == [Publish]
    assert parser.feed(b"") == [Version()]


def test_a_closing_error_past_the_batch_still_closes_and_keeps_what_came_before():
    parser = RequestParser(max_batch=2)
    assert parser.feed(b"version\r\n" * 3 + b"set x\r\nversion\r\n") == [Version()] * 2
    assert parser.feed(b"") == [Version(), BAD_FORMAT]
    assert parser.closed and not parser.more
    assert parser.feed(b"") == []


def test_a_get_counts_its_keys_and_a_publish_its_messages_against_the_batch() -> None:
    # a get of 1,000 keys weighs as much as 1,000 requests: one such get a turn
    parser = RequestParser(max_batch=1024)
    many = b"get " + b" ".join([b"horizon"] * 1000) + b"\r\n"
    assert len(parser.feed(many * 3)) == 2  # 1,000, then 2,000: past 1,024
    assert parser.more
    assert len(parser.feed(b"")) == 1
    block = b"\r\n".join([b"MESSAGE t 1\r\nx"] * 600)
    publish = set_request(b"publish", block)
    assert [len(r.entries) for r in parser.feed(publish * 3)] == [600, 600]  # type: ignore[union-attr]
    assert parser.more and len(parser.feed(b"")) == 1


def test_a_message_naming_more_topics_than_allowed_is_refused_before_they_are_split() -> None:
    parser = RequestParser(max_topics_per_message=3)
    for names in (b"a a a a", b"a b c d", b"a  b  c  d"):
        block = b"MESSAGE " + names + b" 1\r\nx"
        (refused,) = parser.feed(set_request(b"publish", block))
        assert isinstance(refused, Rejected)
        assert refused.error.reply == (
            b"CLIENT_ERROR too many topics: more than 3 named in one message (repeats counted) "
            b"exceeds max_topics_per_message 3\r\n"
        )
    # three, however many spaces; and the exact path (a topic past 250 bytes is bad anyway)
    (ok,) = parser.feed(set_request(b"publish", b"MESSAGE  a   b  c  1\r\nx"))
    assert ok == Publish((((b"a", b"b", b"c"), b"x"),))
