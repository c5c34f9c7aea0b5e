"""The encoder against literal bytes from the wire contract.

One table of (request, bytes) drives both directions: encode_request must give the
bytes, and the parser must read the bytes back as the request.
"""

from __future__ import annotations

import pytest

from kraken.errors import BadTopic, ClientError
from kraken.wire import (
    Entry,
    Get,
    Publish,
    Push,
    Quit,
    Register,
    Rejected,
    RequestParser,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
    encode_block,
    encode_entry,
    encode_request,
    encode_value,
    format_horizon,
    parse_horizon,
    parse_publish_block,
)
from kraken.wire.encode import encode_publish_block

REQUESTS = [
    pytest.param(Register(), b"set register 0 0 0\r\n\r\n", id="register"),
    pytest.param(Register(True), b"set register 0 0 0 noreply\r\n\r\n", id="register-noreply"),
    pytest.param(Push(), b"set push 0 0 0\r\n\r\n", id="push"),
    pytest.param(Push(stamps=True), b"set push 0 0 6\r\nstamps\r\n", id="push-stamps"),
    pytest.param(Subscribe((b"foo",)), b"set subscribe 0 0 3\r\nfoo\r\n", id="subscribe"),
    pytest.param(
        Subscribe((b"foo", b"bar")),
        b"set subscribe 0 0 7\r\nfoo bar\r\n",
        id="subscribe-several",
    ),
    pytest.param(Subscribe(()), b"set subscribe 0 0 0\r\n\r\n", id="subscribe-nothing"),
    pytest.param(
        Subscribe((b"foo",), True),
        b"set subscribe 0 0 3 noreply\r\nfoo\r\n",
        id="subscribe-noreply",
    ),
    pytest.param(
        Unsubscribe((b"foo", b"bar")),
        b"set unsubscribe 0 0 7\r\nfoo bar\r\n",
        id="unsubscribe",
    ),
    pytest.param(
        Unsubscribe((b"foo",), True),
        b"set unsubscribe 0 0 3 noreply\r\nfoo\r\n",
        id="unsubscribe-noreply",
    ),
    pytest.param(
        RetroSubscribe(1_764_300_000_123_456, (b"foo", b"bar")),
        b"set retro_subscribe 0 0 26\r\n1764300000.123456\r\nfoo bar\r\n",
        id="retro-subscribe",
    ),
    pytest.param(
        RetroSubscribe(1_764_300_000_000_000, (b"foo",), True),
        b"set retro_subscribe 0 0 22 noreply\r\n1764300000.000000\r\nfoo\r\n",
        id="retro-subscribe-whole-second-noreply",
    ),
    pytest.param(
        RetroSubscribe(1_764_300_000_000_000, ()),
        b"set retro_subscribe 0 0 19\r\n1764300000.000000\r\n\r\n",
        id="retro-subscribe-no-topic",
    ),
    pytest.param(
        Publish((Entry((b"foo",), b"hello"),)),
        b"set publish 0 0 20\r\nMESSAGE foo 5\r\nhello\r\n",
        id="publish-one",
    ),
    pytest.param(
        Publish((Entry((b"a", b"b"), b"x\r\ny"), Entry((b"c",), b""))),
        b"set publish 0 0 34\r\nMESSAGE a b 4\r\nx\r\ny\r\nMESSAGE c 0\r\n\r\n",
        id="publish-several",
    ),
    pytest.param(
        Publish((Entry((), b"abc"),)),
        b"set publish 0 0 14\r\nMESSAGE 3\r\nabc\r\n",
        id="publish-no-topic",
    ),
    pytest.param(Publish(()), b"set publish 0 0 0\r\n\r\n", id="publish-empty"),
    pytest.param(
        Publish((Entry((b"foo",), b"\x00\xff"),), True),
        b"set publish 0 0 17 noreply\r\nMESSAGE foo 2\r\n\x00\xff\r\n",
        id="publish-binary-noreply",
    ),
    pytest.param(Get((b"messages",)), b"get messages\r\n", id="get-messages"),
    pytest.param(Get((b"horizon",)), b"get horizon\r\n", id="get-horizon"),
    pytest.param(
        Get((b"messages", b"horizon")), b"get messages horizon\r\n", id="get-messages-horizon"
    ),
    pytest.param(Version(), b"version\r\n", id="version"),
    pytest.param(Quit(), b"quit\r\n", id="quit"),
]


@pytest.mark.parametrize(("request_", "data"), REQUESTS)
def test_encode_request_gives_the_contract_bytes(request_, data):
    assert encode_request(request_) == data


@pytest.mark.parametrize(("request_", "data"), REQUESTS)
def test_contract_bytes_parse_back_to_the_request(request_, data):
    assert RequestParser().feed(data) == [request_]


def test_all_requests_pipelined_parse_back_in_order():
    requests = [p.values[0] for p in REQUESTS]
    data = b"".join(encode_request(r) for r in requests)
    assert RequestParser().feed(data) == requests


def test_rejected_has_no_encoding():
    with pytest.raises(ValueError):
        encode_request(Rejected(BadTopic()))


def test_non_request_is_a_type_error():
    with pytest.raises(TypeError):
        encode_request(b"get messages\r\n")  # type: ignore[arg-type]


# -- entries, blocks and values ----------------------------------------------------------


@pytest.mark.parametrize(
    ("topics", "payload", "data"),
    [
        pytest.param((b"foo",), b"hello", b"MESSAGE foo 5\r\nhello", id="one-topic"),
        pytest.param((b"a", b"b"), b"hi", b"MESSAGE a b 2\r\nhi", id="several-topics"),
        pytest.param((), b"abc", b"MESSAGE 3\r\nabc", id="no-topic"),
        pytest.param((b"a",), b"", b"MESSAGE a 0\r\n", id="empty-payload"),
        pytest.param((b"a",), b"\r\n\r\n", b"MESSAGE a 4\r\n\r\n\r\n", id="payload-of-crlfs"),
    ],
)
def test_encode_entry_has_no_trailing_crlf(topics, payload, data):
    assert encode_entry(topics, payload) == data
    assert parse_publish_block(data) == (Entry(topics, payload),)


def test_encode_publish_block_joins_entries_with_crlf():
    entries = (Entry((b"a",), b"x"), Entry((b"b", b"c"), b"yz"))
    block = b"MESSAGE a 1\r\nx\r\nMESSAGE b c 2\r\nyz"
    assert encode_publish_block(entries) == block
    assert parse_publish_block(block) == entries


def test_encode_publish_block_of_nothing_is_empty():
    assert encode_publish_block(()) == b""
    assert parse_publish_block(b"") == ()


def test_encode_value_of_horizon():
    assert encode_value(b"horizon", b"1764300000.123456") == (
        b"VALUE horizon 0 17\r\n1764300000.123456\r\n"
    )


def test_encode_value_of_empty_and_binary_data():
    assert encode_value(b"k", b"") == b"VALUE k 0 0\r\n\r\n"
    assert encode_value(b"k", b"\r\n\x00") == b"VALUE k 0 3\r\n\r\n\x00\r\n"


def test_encode_block_omits_the_crlf_of_the_last_entry():
    entries = [encode_entry((b"foo",), b"hello"), encode_entry((b"foo", b"bar"), b"\r\n")]
    assert encode_block(entries) == (
        b"VALUE messages 0 43\r\nMESSAGE foo 5\r\nhello\r\nMESSAGE foo bar 2\r\n\r\n\r\n"
    )


def test_encode_block_of_one_entry():
    assert encode_block([encode_entry((b"t",), b"m")]) == (
        b"VALUE messages 0 14\r\nMESSAGE t 1\r\nm\r\n"
    )


def test_message_block_of_a_poll_answer_parses_as_publish_block():
    entries = (Entry((b"a",), b"1\r\n"), Entry((b"a", b"b"), b""), Entry((b"b",), b"MESSAGE"))
    value = encode_block([encode_entry(e.topics, e.payload) for e in entries])
    header, _, rest = value.partition(b"\r\n")
    size = int(header.split()[3])
    assert rest[size:] == b"\r\n"
    assert parse_publish_block(rest[:size]) == entries


# -- horizons ------------------------------------------------------------------------------

HORIZONS = [
    pytest.param(1_764_300_000_123_456, b"1764300000.123456", id="contract-example"),
    pytest.param(1_764_300_000_000_000, b"1764300000.000000", id="whole-second"),
    pytest.param(1_764_300_000_000_001, b"1764300000.000001", id="one-microsecond-after"),
    pytest.param(0, b"0.000000", id="zero"),
    pytest.param(1, b"0.000001", id="one-microsecond"),
    pytest.param(999_999, b"0.999999", id="under-one-second"),
    pytest.param(999_999_999_999_999_999, b"999999999999.999999", id="largest"),
]


@pytest.mark.parametrize(("micros", "text"), HORIZONS)
def test_format_horizon_gives_seconds_with_six_decimals(micros, text):
    assert format_horizon(micros) == text


@pytest.mark.parametrize(("micros", "text"), HORIZONS)
def test_format_horizon_parses_back(micros, text):
    assert parse_horizon(format_horizon(micros)) == micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        (b"1764300000", 1_764_300_000_000_000),
        (b"1764300000.1", 1_764_300_000_100_000),
        (b"1764300000.12", 1_764_300_000_120_000),
        (b"1764300000.123", 1_764_300_000_123_000),
        (b"1764300000.1234", 1_764_300_000_123_400),
        (b"1764300000.12345", 1_764_300_000_123_450),
        (b"1764300000.123456", 1_764_300_000_123_456),
        (b"0", 0),
        (b"007", 7_000_000),
    ],
)
def test_parse_horizon_reads_integer_and_decimal_seconds(text, micros):
    assert parse_horizon(text) == micros


T250 = b"t" * 250


@pytest.mark.parametrize(
    ("block", "parsed"),
    [
        (b"MESSAGE 3\r\nabc", (((), b"abc"),)),
        (b"MESSAGE  3\r\nabc", (((), b"abc"),)),
        (b"MESSAGE a  b   3\r\nabc", (((b"a", b"b"), b"abc"),)),
        (b"MESSAGE  a 3\r\nabc", (((b"a",), b"abc"),)),
        (b"MESSAGE a b a 1\r\nx", (((b"a", b"b"), b"x"),)),
        (b"MESSAGE 12 34 1\r\nx", (((b"12", b"34"), b"x"),)),
        (b"MESSAGE " + T250 + b" 1\r\nx", (((T250,), b"x"),)),
        (b"MESSAGE " + T250 + b"t 1\r\nx", ClientError),
        (b"MESSAGE " + b"1" * 251 + b" 1\r\nx", ClientError),
        (b"MESSAGE a\x01 1\r\nx", ClientError),
        (b"MESSAGE a\t 1\r\nx", ClientError),
        (b"MESSAGE a 1 \r\nx", ClientError),
        (b"MESSAGE a -1\r\nx", ClientError),
        (b"MESSAGE a 1\nx", ClientError),
        (b"MESSAGE a 2\r\nx", ClientError),
        (b"MESSAGE a 1\r\nxMESSAGE b 1\r\ny", ClientError),
        (b"MESSAGE a 1\r\nx\r\nMESSAGE b 1\r\ny\r\n", (((b"a",), b"x"), ((b"b",), b"y"))),
    ],
)
def test_publish_block_heads_parse_the_same_on_the_fast_and_the_exact_path(block, parsed):
    """Common heads take a single regular expression, the rest the exact path: both agree."""
    if parsed is ClientError:
        with pytest.raises(ClientError):
            parse_publish_block(block)
    else:
        assert parse_publish_block(block) == parsed


def test_encoded_entries_take_the_fast_path_and_odd_heads_the_exact_one():
    from kraken.wire.parser import _ENTRY_HEAD

    fast = [encode_entry((b"a",), b"x"), encode_entry((b"a", b"b"), b"x"), b"MESSAGE 3\r\nabc"]
    fast.append(encode_entry((T250,), b"x"))
    exact = [b"MESSAGE  a 3\r\nabc", b"MESSAGE " + T250 + b"t 1\r\nx", b"MESSAGE a\x01 1\r\nx"]
    assert all(_ENTRY_HEAD.match(block) is not None for block in fast)
    assert all(_ENTRY_HEAD.match(block) is None for block in exact)


def test_describe_shows_requests_close_to_their_wire_form_for_the_debug_log():
    from kraken.errors import BadTopic
    from kraken.wire import Get, Publish, Rejected, RetroSubscribe, Subscribe, describe

    many = tuple(b"t%d" % i for i in range(10))
    assert describe(Subscribe((b"a", b"\xff"))) == "set subscribe a \\xff"
    assert describe(Subscribe(many)) == "set subscribe t0 t1 t2 t3 t4 t5 t6 t7 (+2 more)"
    assert (
        describe(RetroSubscribe(1764300000000042, (b"x",), noreply=True))
        == "set retro_subscribe 1764300000.000042 x noreply"
    )
    block = (((b"a",), b"hi there!"), ((b"b", b"c"), b"xyz"))
    assert describe(Publish(block)) == "set publish: 2 messages (a 9 bytes; b c 3 bytes)"
    assert describe(Publish(block[:1] * 6)).endswith("a 9 bytes; +2 more)")
    assert describe(Get((b"messages",))) == "get messages"
    assert describe(Rejected(BadTopic())) == "refused: CLIENT_ERROR bad topic"
