"""Properties of the wire package, checked with hypothesis.

Encoding then parsing gives back the requests, however the bytes are cut; and no
input whatever makes the parser raise or return anything but requests. Random
input is built from protocol fragments, long runs of one byte (past a topic's 250
bytes, past the 4,300 digits int() takes) and well-framed ``set`` requests, so that
it reaches the block parsers and the edges of their limits.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

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
    encode_request,
    format_horizon,
    parse_horizon,
    parse_publish_block,
)
from kraken.wire.encode import encode_publish_block

quick = settings(max_examples=200, deadline=None)

TOPIC_BYTES = [*range(0x21, 0x7F), *range(0x80, 0x100)]
MAX_HORIZON = 10**18 - 1  # 999999999999.999999 s

# Binary strings with each byte outside a topic's alphabet moved into it: quicker to
# generate than lists of allowed bytes, and still reaching 0x21, 0x7e, 0x80 and 0xff.
_INTO_TOPIC = bytes(
    b if b in TOPIC_BYTES else (0x21 + b if b <= 0x20 else 0x7E) for b in range(256)
)
topic = st.binary(min_size=1, max_size=250).map(lambda b: b.translate(_INTO_TOPIC))
short_topic = st.binary(min_size=1, max_size=8).map(lambda b: b.translate(_INTO_TOPIC))
# Repeated topics are listed once by the parser, so generated lists hold each once.
topics = st.lists(st.one_of(short_topic, short_topic, topic), max_size=3, unique=True).map(tuple)
payload = st.lists(
    st.one_of(
        st.binary(max_size=16),
        st.just(b"\r\n"),
        st.just(b"MESSAGE a 1\r\n"),
        st.just(b"set publish 0 0 3\r\n"),
    ),
    max_size=6,
).map(b"".join)
entry = st.builds(Entry, topics, payload)
entries = st.lists(entry, max_size=3).map(tuple)
horizon = st.integers(min_value=0, max_value=MAX_HORIZON)
noreply = st.booleans()

request = st.one_of(
    st.builds(Register, noreply),
    st.builds(Push, noreply, st.booleans()),
    st.builds(Subscribe, topics, noreply),
    st.builds(Unsubscribe, topics, noreply),
    st.builds(RetroSubscribe, horizon, topics, noreply),
    st.builds(Publish, entries, noreply),
    st.builds(Get, st.lists(short_topic, min_size=1, max_size=4).map(tuple)),
    st.just(Get((b"messages",))),
    st.just(Version()),
    st.just(Quit()),
)
requests = st.lists(request, max_size=5)

# Runs of one byte, often as long as a limit or one past it: a topic's 250 bytes (a
# list of 251 spaces holds no topic) and the 4,300 digits int() converts.
run = st.builds(
    lambda byte, n: byte * n,
    st.sampled_from([b" ", b"9", b"0", b"x"]),
    st.one_of(st.sampled_from([250, 251, 4300, 4301]), st.integers(min_value=0, max_value=300)),
)
# Lengths as a set line or an entry head carries them: plausible ones, and runs of
# digits as long as int() converts, or longer (padded with zeros, they are small)
digits = st.builds(
    lambda digit, n: digit * n,
    st.sampled_from([b"9", b"0"]),
    st.one_of(st.sampled_from([4300, 4301]), st.integers(min_value=1, max_value=30)),
)
length_field = st.one_of(st.integers(min_value=0, max_value=10**7).map(b"%d".__mod__), digits)
entry_head = st.builds(
    lambda topics, length: b"MESSAGE " + topics + b" " + length + b"\r\n",
    st.one_of(st.just(b""), short_topic, run),
    length_field,
)
set_command = st.sampled_from(
    [b"subscribe", b"unsubscribe", b"retro_subscribe", b"publish", b"register", b"frob"]
)

# Fragments of the protocol, so random input reaches deep into the parser.
fragment = st.one_of(
    run,
    entry_head,
    st.binary(max_size=12),
    st.sampled_from(
        [
            b"set ",
            b"publish",
            b"subscribe",
            b"retro_subscribe",
            b"register",
            b"unsubscribe",
            b" 0 0 ",
            b" noreply",
            b"get messages",
            b"get ",
            b"version",
            b"quit",
            b"MESSAGE ",
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"0",
            b"3",
            b"17",
            b"-1",
            b"1764300000.5",
        ]
    ),
)


def set_request(command: bytes, block: bytes, noreply: bool = False) -> bytes:
    tail = b" noreply" if noreply else b""
    return b"set %b 0 0 %d%b\r\n%b\r\n" % (command, len(block), tail, block)


# A data block of anything, and a set request carrying it with its exact length: the
# block reaches parse_topics, parse_horizon and parse_publish_block
block = st.one_of(
    run,
    st.tuples(entry_head, fragment).map(b"".join),
    st.lists(fragment, max_size=8).map(b"".join),
)
framed_set = st.builds(set_request, set_command, block, noreply)
set_line = st.builds(b"set %b 0 0 %b\r\n".__mod__, st.tuples(set_command, length_field))
garbage = st.one_of(
    st.binary(max_size=300),
    st.lists(fragment, max_size=30).map(b"".join),
    st.lists(st.one_of(framed_set, set_line, fragment), max_size=6).map(b"".join),
)
limits = st.sampled_from(
    [
        {},
        {"max_line_bytes": 16, "max_request_bytes": 32},
        {"max_line_bytes": 40, "max_request_bytes": 8},
    ]
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def feed_checked(parser: RequestParser, chunks: list[bytes]) -> list[Request]:
    """Feed every chunk; check the rules that hold for any input whatever."""
    out: list[Request] = []
    for chunk in chunks:
        was_closed = parser.closed
        got = parser.feed(chunk)
        assert all(isinstance(r, Request) for r in got)
        if was_closed:
            assert got == []
        out += got
    closing = [i for i, r in enumerate(out) if isinstance(r, Rejected) and r.error.closes]
    assert closing in ([], [len(out) - 1])
    assert parser.closed is bool(closing)
    return out


@quick
@given(requests)
def test_encoded_requests_parse_back(reqs):
    data = b"".join(encode_request(r) for r in reqs)
    assert RequestParser().feed(data) == reqs


@quick
@given(requests, st.lists(st.integers(min_value=0), max_size=20))
def test_encoded_requests_cut_anywhere_parse_back(reqs, points):
    data = b"".join(encode_request(r) for r in reqs)
    assert feed_checked(RequestParser(), cut(data, points)) == reqs


@quick
@given(requests)
def test_encoded_requests_fed_one_byte_at_a_time_parse_back(reqs):
    data = b"".join(encode_request(r) for r in reqs)
    parser = RequestParser()
    assert feed_checked(parser, [data[i : i + 1] for i in range(len(data))]) == reqs


@quick
@given(garbage, st.lists(st.integers(min_value=0), max_size=10), limits)
def test_arbitrary_bytes_never_raise_and_give_only_requests(data, points, lims):
    parser = RequestParser(**lims)
    feed_checked(parser, cut(data, points))
    if parser.closed:
        assert parser.feed(b"version\r\n") == []


@quick
@given(requests, garbage, st.lists(st.integers(min_value=0), max_size=10))
def test_arbitrary_bytes_after_valid_requests_leave_them_intact(reqs, data, points):
    prefix = b"".join(encode_request(r) for r in reqs)
    got = feed_checked(RequestParser(), [prefix, *cut(data, points)])
    assert got[: len(reqs)] == reqs


@quick
@given(st.lists(framed_set, max_size=4), st.lists(st.integers(min_value=0), max_size=10))
def test_well_framed_sets_are_one_request_each_whatever_their_blocks(sets, points):
    """Whatever a block holds, a set that frames it right is one request (carried out
    or rejected) and never loses the connection."""
    got = feed_checked(RequestParser(), cut(b"".join(sets), points))
    assert len(got) == len(sets)
    assert not any(isinstance(r, Rejected) and r.error.closes for r in got)


@quick
@given(set_command, length_field, limits)
def test_a_set_line_with_any_length_waits_for_its_block_or_is_refused(command, length, lims):
    parser = RequestParser(**lims)
    got = feed_checked(parser, [b"set %b 0 0 %b\r\n" % (command, length)])
    assert got == [] if not parser.closed else len(got) == 1


@quick
@given(entries)
def test_publish_block_round_trips(ents):
    assert parse_publish_block(encode_publish_block(ents)) == ents


@quick
@given(horizon)
def test_format_horizon_round_trips(micros):
    assert parse_horizon(format_horizon(micros)) == micros
