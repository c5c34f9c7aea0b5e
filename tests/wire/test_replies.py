"""ReplyParser, the clients' reader of server replies, against the wire contract.

Two tables drive the tests: good inputs with the replies they stand for, and bad
inputs with the ReplyError they raise. Each input is fed whole, one byte at a time,
split in two at every byte boundary, and followed by the first bytes of another
reply; every way must give the same replies. A hypothesis round trip encodes replies
with kraken.wire.encode and reads them back, however the bytes are cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.errors import ClientError, UnknownCommand
from kraken.wire import encode_block, encode_entry, encode_value, parse_publish_block
from kraken.wire.encode import END, NOT_FOUND, STORED
from kraken.wire.replies import (
    ErrorLine,
    NotFound,
    Reply,
    ReplyError,
    ReplyParser,
    Stored,
    Values,
    VersionReply,
)

# -- helpers ---------------------------------------------------------------------------


def feed(chunks: Iterable[bytes], parser: ReplyParser | None = None) -> list[Reply]:
    parser = parser or ReplyParser()
    replies: list[Reply] = []
    for chunk in chunks:
        replies += parser.feed(chunk)
    return replies


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def value(key: bytes, data: bytes) -> bytes:
    """``VALUE <key> 0 <bytes>\\r\\n<data>\\r\\n`` with the length counted here."""
    return b"VALUE %b 0 %d\r\n%b\r\n" % (key, len(data), data)


# A poll answer whose payloads hold CRLF, "END" and a whole entry head: only the
# lengths can tell where the block ends.
TRICKY_BLOCK = b"MESSAGE a 7\r\nx\r\nEND\r\nMESSAGE b c 13\r\nMESSAGE a 1\r\nx\r\nMESSAGE d 0\r\n"

# -- the table of good inputs ----------------------------------------------------------

GOOD = [
    pytest.param(b"", [], id="nothing"),
    pytest.param(b"STORED\r\n", [Stored()], id="stored"),
    pytest.param(b"NOT_FOUND\r\n", [NotFound()], id="not-found"),
    pytest.param(b"END\r\n", [Values({})], id="end-is-a-get-without-hits"),
    pytest.param(
        b"VALUE horizon 0 17\r\n1764300000.123456\r\nEND\r\n",
        [Values({b"horizon": b"1764300000.123456"})],
        id="value-one-key",
    ),
    pytest.param(
        b"VALUE horizon 0 8\r\n1.000000\r\nVALUE messages 0 16\r\nMESSAGE foo 1\r\nx\r\nEND\r\n",
        [Values({b"horizon": b"1.000000", b"messages": b"MESSAGE foo 1\r\nx"})],
        id="value-several-keys",
    ),
    pytest.param(b"VALUE k 17 1\r\nx\r\nEND\r\n", [Values({b"k": b"x"})], id="value-flags-ignored"),
    pytest.param(
        value(b"messages", TRICKY_BLOCK) + b"END\r\n",
        [Values({b"messages": TRICKY_BLOCK})],
        id="value-messages-with-crlf-and-end-in-payloads",
    ),
    pytest.param(
        b"VALUE messages 0 6\r\n\r\n\r\n\r\n\r\nEND\r\n",
        [Values({b"messages": b"\r\n\r\n\r\n"})],
        id="value-data-only-crlf-bytes",
    ),
    pytest.param(b"VALUE k 0 0\r\n\r\nEND\r\n", [Values({b"k": b""})], id="value-empty-data"),
    pytest.param(
        b"VALUE a 0 0\r\n\r\nVALUE b 0 0\r\n\r\nEND\r\n",
        [Values({b"a": b"", b"b": b""})],
        id="value-several-empty",
    ),
    pytest.param(
        value(b"bin", bytes(range(256))) + b"END\r\n",
        [Values({b"bin": bytes(range(256))})],
        id="value-every-byte",
    ),
    pytest.param(b"VERSION 1.2.3\r\n", [VersionReply("1.2.3")], id="version"),
    pytest.param(b"VERSION \r\n", [VersionReply("")], id="version-empty"),
    pytest.param(b"ERROR\r\n", [ErrorLine(b"ERROR")], id="error"),
    pytest.param(
        b"CLIENT_ERROR bad topic\r\n", [ErrorLine(b"CLIENT_ERROR bad topic")], id="client-error"
    ),
    pytest.param(
        b"SERVER_ERROR slow consumer\r\n",
        [ErrorLine(b"SERVER_ERROR slow consumer")],
        id="server-error",
    ),
    pytest.param(
        b"STORED\r\nEND\r\nVERSION x\r\nNOT_FOUND\r\nERROR\r\n",
        [Stored(), Values({}), VersionReply("x"), NotFound(), ErrorLine(b"ERROR")],
        id="several-replies-in-order",
    ),
    pytest.param(
        b"VALUE k 0 1\r\nx\r\nEND\r\nSTORED\r\nVALUE k 0 1\r\ny\r\nEND\r\n",
        [Values({b"k": b"x"}), Stored(), Values({b"k": b"y"})],
        id="get-answers-do-not-mix",
    ),
]

# -- the table of bad inputs -----------------------------------------------------------

BAD = [
    pytest.param(b"VALUE k 0\r\n", "bad VALUE line", id="value-line-too-short"),
    pytest.param(b"VALUE k 0 1 2\r\n", "bad VALUE line", id="value-line-too-long"),
    pytest.param(b"VALUE k 0 x\r\nx\r\nEND\r\n", "bad VALUE line", id="value-length-not-digits"),
    pytest.param(b"VALUE k 0 -1\r\n", "bad VALUE line", id="value-length-negative"),
    pytest.param(
        b"VALUE k 0 1\r\nx\r\nVALUE k 0\r\n", "bad VALUE line", id="second-value-line-bad"
    ),
    pytest.param(
        b"VALUE k 0 1\r\nxy\r\nEND\r\n",
        "value block not followed by CRLF",
        id="block-longer-than-said",
    ),
    pytest.param(
        b"VALUE k 0 3\r\nx\r\nEND\r\n",
        "value block not followed by CRLF",
        id="block-shorter-than-said",
    ),
    pytest.param(
        b"VALUE k 0 1\r\nx\nEND\r\n", "value block not followed by CRLF", id="block-then-lf"
    ),
    pytest.param(b"HELLO\r\n", "unexpected reply", id="unknown-line"),
    pytest.param(b"stored\r\n", "unexpected reply", id="lowercase"),
    pytest.param(b"\r\n", "unexpected reply", id="empty-line"),
    pytest.param(b"VERSION\r\n", "unexpected reply", id="version-without-space"),
    pytest.param(b"CLIENT_ERROR\r\n", "unexpected reply", id="client-error-without-reason"),
    pytest.param(b"STORED \r\n", "unexpected reply", id="stored-trailing-space"),
    pytest.param(b"STORED\r\nBOGUS\r\n", "unexpected reply", id="after-a-good-reply"),
    pytest.param(
        b"VALUE k 0 1\r\nx\r\nSTORED\r\n", "expected VALUE or END", id="stored-inside-get"
    ),
    pytest.param(
        b"VALUE k 0 1\r\nx\r\nSERVER_ERROR oops\r\n",
        "expected VALUE or END",
        id="error-inside-get",
    ),
    pytest.param(b"VALUE k 0 1\r\nx\r\ngarbage\r\n", "expected VALUE or END", id="garbage-in-get"),
    pytest.param(b"VALUE k 0 1\r\nx\r\n\r\n", "expected VALUE or END", id="empty-line-in-get"),
]

# The first bytes of a reply after each input: they must wait for the rest, whatever
# state the input left the parser in.
TRAILER, TRAILER_REST = b"VALUE messages 0 5\r\nab", b"cde\r\nEND\r\n"
TRAILER_REPLY = Values({b"messages": b"abcde"})


# -- good inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(("data", "replies"), GOOD)
def test_whole(data: bytes, replies: list[Reply]) -> None:
    assert ReplyParser().feed(data) == replies


@pytest.mark.parametrize(("data", "replies"), GOOD)
def test_one_byte_at_a_time(data: bytes, replies: list[Reply]) -> None:
    assert feed(bytewise(data)) == replies


@pytest.mark.parametrize(("data", "replies"), GOOD)
def test_split_at_every_boundary(data: bytes, replies: list[Reply]) -> None:
    for i in range(len(data) + 1):
        assert feed([data[:i], data[i:]]) == replies, f"split at {i}"


@pytest.mark.parametrize(("data", "replies"), GOOD)
def test_with_trailing_bytes_of_the_next_reply(data: bytes, replies: list[Reply]) -> None:
    parser = ReplyParser()
    assert parser.feed(data + TRAILER) == replies
    assert parser.feed(TRAILER_REST) == [TRAILER_REPLY]
    bytewise_parser = ReplyParser()
    assert feed(bytewise(data + TRAILER), bytewise_parser) == replies
    assert feed(bytewise(TRAILER_REST), bytewise_parser) == [TRAILER_REPLY]


def test_a_reply_is_returned_by_the_feed_that_completes_it() -> None:
    parser = ReplyParser()
    assert parser.feed(b"VALUE k 0 3\r\nab") == []
    assert parser.feed(b"c\r") == []
    assert parser.feed(b"\nEN") == []
    assert parser.feed(b"D\r\nSTO") == [Values({b"k": b"abc"})]
    assert parser.feed(b"RED\r\n") == [Stored()]


def test_error_reply_kind_and_reason() -> None:
    assert (ErrorLine(b"ERROR").kind, ErrorLine(b"ERROR").reason) == (b"ERROR", "")
    error = ErrorLine(b"CLIENT_ERROR data block of 9 bytes exceeds 8 bytes")
    assert (error.kind, error.reason) == (b"CLIENT_ERROR", "data block of 9 bytes exceeds 8 bytes")
    server = ErrorLine(b"SERVER_ERROR caf\xc3\xa9 \xff")
    assert (server.kind, server.reason) == (b"SERVER_ERROR", "caf\u00e9 \ufffd")


# -- bad inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_whole(data: bytes, message: str) -> None:
    with pytest.raises(ReplyError, match=message):
        ReplyParser().feed(data)


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_one_byte_at_a_time(data: bytes, message: str) -> None:
    with pytest.raises(ReplyError, match=message):
        feed(bytewise(data))


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_split_at_every_boundary(data: bytes, message: str) -> None:
    for i in range(len(data) + 1):
        with pytest.raises(ReplyError, match=message):
            feed([data[:i], data[i:]])


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_with_trailing_bytes_of_the_next_reply(data: bytes, message: str) -> None:
    with pytest.raises(ReplyError, match=message):
        feed([data + TRAILER, TRAILER_REST])


# -- round trip through the encoder ----------------------------------------------------

quick = settings(max_examples=200, deadline=None)

# memcached keys: no control bytes, no space
memcached_key = st.binary(min_size=1, max_size=12).map(
    lambda b: bytes(c if 0x21 <= c != 0x7F else 0x61 for c in b)
)
block_data = st.lists(
    st.one_of(st.binary(max_size=12), st.sampled_from([b"\r\n", b"END\r\n", b"VALUE k 0 1\r\n"])),
    max_size=5,
).map(b"".join)
topic = st.sampled_from([b"a", b"b", b"news", b"caf\xc3\xa9"])
entries = st.lists(
    st.tuples(st.lists(topic, min_size=1, max_size=3, unique=True).map(tuple), block_data),
    max_size=4,
)
# (reply, its bytes): the bytes as the server writes them, from kraken.wire.encode and errors
reply = st.one_of(
    st.just((Stored(), STORED)),
    st.just((NotFound(), NOT_FOUND)),
    st.dictionaries(memcached_key, block_data, max_size=3).map(
        lambda d: (Values(d), b"".join(encode_value(k, v) for k, v in d.items()) + END)
    ),
    entries.map(
        lambda es: (
            Values({b"messages": b"\r\n".join(encode_entry(t, p) for t, p in es)}),
            encode_block([encode_entry(t, p) for t, p in es]) + END,
        )
    ),
    st.just((ErrorLine(b"ERROR"), UnknownCommand().reply)),
    st.sampled_from(["bad topic", "bad data length", "data block of 9 bytes exceeds 8 bytes"]).map(
        lambda r: (ErrorLine(b"CLIENT_ERROR " + r.encode()), ClientError(r).reply)
    ),
    st.just((ErrorLine(b"SERVER_ERROR slow consumer"), b"SERVER_ERROR slow consumer\r\n")),
    st.just((VersionReply("0.1.0"), b"VERSION 0.1.0\r\n")),
)


def cut(whole: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(whole) + 1) for p in points), len(whole)]
    return [whole[a:b] for a, b in pairwise(bounds)]


@quick
@given(st.lists(reply, max_size=5), st.lists(st.integers(min_value=0), max_size=20))
def test_encoded_replies_cut_anywhere_parse_back(pairs, points):
    replies = [r for r, _ in pairs]
    whole = b"".join(b for _, b in pairs)
    assert ReplyParser().feed(whole) == replies
    assert feed(cut(whole, points)) == replies


@quick
@given(entries)
def test_a_poll_answer_parses_back_to_its_entries(es):
    (answer,) = ReplyParser().feed(encode_block([encode_entry(t, p) for t, p in es]) + END)
    assert isinstance(answer, Values)
    assert list(parse_publish_block(answer.values[b"messages"])) == es
