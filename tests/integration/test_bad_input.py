"""Part 2 of the contract over real TCP: bad input gets a clear error, nothing is
lost, and no other connection notices."""

from __future__ import annotations

import time

import pytest

BAD_CHUNK_1 = b"CLIENT_ERROR bad data chunk: a 1-byte data block must be followed by \\r\\n\r\n"


@pytest.fixture
def bystander(connect):
    """A subscriber on its own connection; after the test it must still get messages."""
    watcher, publisher = connect(), connect()
    watcher.subscribe("bystander")
    yield watcher
    publisher.publish("bystander", b"still served")
    assert watcher.messages() == [(b"bystander", b"still served")]


def test_unknown_command_word_is_error_and_connection_stays_open(connect, bystander):
    a = connect()
    a.request(b"bogus command\r\n", b"ERROR\r\n")
    a.request(b"\r\n", b"ERROR\r\n")
    a.request(b"SET register 0 0 0\r\n", b"ERROR\r\n")
    assert a.is_open()


def test_get_without_key_is_error(connect, bystander):
    a = connect()
    a.request(b"get\r\n", b"ERROR\r\n")
    assert a.is_open()


def test_set_of_unknown_command_is_client_error_and_stays_open(connect, bystander):
    a = connect()
    a.set("frobnicate", b"abc").expect(b"CLIENT_ERROR unknown command frobnicate\r\n")
    assert a.is_open()


def test_bad_topic_rejects_the_whole_subscribe(connect, bystander):
    a, b = connect(), connect()
    a.set("subscribe", b"good bad\x01topic").expect(b"CLIENT_ERROR bad topic\r\n")
    a.set("subscribe", b"good " + b"x" * 251).expect(b"CLIENT_ERROR bad topic\r\n")
    a.set("subscribe", b"good bad\x7f").expect(b"CLIENT_ERROR bad topic\r\n")
    b.publish("good", b"not for a")
    assert a.messages() == []
    a.set("subscribe", b"y" * 250).expect(b"STORED\r\n")


def test_bad_topic_in_unsubscribe_changes_nothing(connect, bystander):
    a, b = connect(), connect()
    a.subscribe("keep")
    a.set("unsubscribe", b"keep bad\ttopic").expect(b"CLIENT_ERROR bad topic\r\n")
    b.publish("keep", b"1")
    assert a.messages() == [(b"keep", b"1")]


def test_malformed_publish_block_publishes_nothing(connect, bystander):
    a, b = connect(), connect()
    a.subscribe("blk")
    good = b"MESSAGE blk 2\r\nok"
    for bad in (
        good + b"\r\nMESSAGE blk 9\r\nshort",  # length longer than the payload
        good + b"\r\nMESSAGE blk 1\r\nlong",  # length shorter: trailing garbage
        good + b"\r\nPUBLISH blk 1\r\nx",  # not MESSAGE
        good + b"\r\nMESSAGE blk\r\nx",  # no length
        good + b"\r\ngarbage",
    ):
        b.set("publish", bad).expect(b"CLIENT_ERROR bad publish block\r\n")
    assert a.messages() == []
    assert b.is_open()


def test_bad_topic_wins_over_bad_publish_block(connect, bystander):
    b = connect()
    b.set("publish", b"MESSAGE bad\x01 3\r\nabcdef").expect(b"CLIENT_ERROR bad topic\r\n")


def test_bad_topic_in_a_later_entry_rejects_the_block(connect, bystander):
    a, b = connect(), connect()
    a.subscribe("bt")
    block = b"MESSAGE bt 1\r\n1\r\nMESSAGE bt \x02 1\r\n2"
    b.set("publish", block).expect(b"CLIENT_ERROR bad topic\r\n")
    assert a.messages() == []


@pytest.mark.parametrize(
    "block",
    [
        b"abc\r\nt",
        b"-1\r\nt",
        b"1e9\r\nt",
        b"+1764300000\r\nt",
        b" 1764300000\r\nt",
        b"1764300000.1234567\r\nt",
        b"1234567890123\r\nt",
        b"\r\nt",
        b"1764300000 t",
    ],
)
def test_malformed_horizon_is_bad_horizon_and_subscribes_nothing(connect, bystander, block):
    a, b = connect(), connect()
    a.set("retro_subscribe", block).expect(b"CLIENT_ERROR bad horizon\r\n")
    b.publish("t", b"x")
    assert a.messages() == []


def test_horizon_more_than_60_seconds_ahead_is_bad_horizon(connect, bystander):
    a, b = connect(), connect()
    future = b"%d" % (time.time() + 120)
    a.set("retro_subscribe", future + b"\r\nfut").expect(b"CLIENT_ERROR bad horizon\r\n")
    b.publish("fut", b"x")
    assert a.messages() == []
    soon = b"%d" % (time.time() + 30)
    a.set("retro_subscribe", soon + b"\r\nfut").expect(b"STORED\r\n")


def test_noreply_suppresses_replies_including_errors_that_keep_the_connection(connect, bystander):
    a, b = connect(), connect()
    a.set("subscribe", b"nr", noreply=True)
    a.set("frob", b"x", noreply=True)
    a.set("subscribe", b"bad\x01", noreply=True)
    a.set("publish", b"MESSAGE nr 5\r\nab", noreply=True)
    b.set("publish", b"MESSAGE nr 1\r\nx", noreply=True)
    b.set("register", b"", noreply=True)
    assert b.is_open()  # its next reply is VERSION: nothing was written for the noreply sets
    assert a.is_open()
    assert a.messages() == [(b"nr", b"x")]


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"set subscribe 0 0 abc\r\n", b"CLIENT_ERROR bad data length\r\n"),
        (b"set subscribe 0 0 -1\r\n", b"CLIENT_ERROR bad data length\r\n"),
        (b"set subscribe 0 0\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set subscribe 0 0 1 noreply x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set subscribe 0 0 1 sometimes\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set subscribe 0 0 1\r\nab\r\n", BAD_CHUNK_1),
        (b"set subscribe 0 0 6\ntopicA\n", b"CLIENT_ERROR bad data chunk: a 6-byte data block"),
        (b"set subscribe 0 0 " + b"9" * 5000 + b"\r\n", b"CLIENT_ERROR data block with a 5000"),
        (b"set subscribe 0 0 9000000\r\n", b"CLIENT_ERROR data block of 9000000 bytes"),
        (b"x" * 9000, b"CLIENT_ERROR request line longer than 8192 bytes\r\n"),
        (b"get " + b"x" * 8200 + b"\r\n", b"CLIENT_ERROR request line longer than 8192 bytes"),
    ],
)
def test_framing_error_replies_then_closes_only_that_connection(
    connect, bystander, request_bytes, reply
):
    a = connect()
    a.send(request_bytes)
    assert a.line().startswith(reply.rstrip(b"\r\n"))
    assert a.closed()


def test_framing_error_with_noreply_is_still_written(connect, bystander):
    a = connect()
    a.send(b"set subscribe 0 0 1 noreply\r\nab\r\n")
    assert a.line() == BAD_CHUNK_1
    assert a.closed()


def test_replies_before_a_framing_error_are_written_first(connect, bystander):
    a = connect()
    a.send(b"version\r\nset subscribe 0 0 x\r\nversion\r\n")
    assert a.line().startswith(b"VERSION ")
    assert a.line() == b"CLIENT_ERROR bad data length\r\n"
    assert a.closed() and a.buffer == b""


def test_line_of_exactly_max_line_bytes_is_accepted(connect):
    a = connect()
    line = b"get " + b"k" * (8192 - 4)
    a.request(line + b"\r\n", b"END\r\n")


def test_request_trickling_in_byte_by_byte_is_parsed(connect):
    a, b = connect(), connect()
    a.subscribe("slow")
    block = b"MESSAGE slow 3\r\nabc"
    for byte in b"set publish 0 0 %d\r\n%s\r\n" % (len(block), block):
        b.send(bytes([byte]))
    b.expect(b"STORED\r\n")
    assert a.messages() == [(b"slow", b"abc")]


def test_bad_topic_wins_even_when_the_same_entry_has_a_bad_length(connect, bystander):
    b = connect()
    b.set("publish", b"MESSAGE t\x01 x\r\nabc").expect(b"CLIENT_ERROR bad topic\r\n")


def test_poll_line_arriving_inside_a_data_block_is_data(connect, bystander):
    """``get messages\\r\\n`` in a read of its own is answered without the parser only
    between requests: inside an awaited data block it is the block's bytes."""
    a = connect()
    a.send(b"version\r\nset subscribe 0 0 14\r\n")
    assert a.line().startswith(b"VERSION ")  # the server has read both lines
    a.send(b"get messages\r\n")  # the 14 bytes of the block, here a bad topic list
    a.send(b"\r\n")
    a.expect(b"CLIENT_ERROR bad topic\r\n")
    a.request(b"get messages\r\n", b"END\r\n")


def test_block_followed_by_a_bare_lf_is_answered_at_once(connect, bystander):
    """``printf 'set subscribe 0 0 6\\ntopicA\\n'`` got no reply: the server waited for
    a second byte after the block. The missing CR is an error as soon as the LF is in."""
    a = connect()
    a.send(b"version\nset subscribe 0 0 6\ntopicA\n")
    assert a.line().startswith(b"VERSION ")
    assert a.line() == (
        b"CLIENT_ERROR bad data chunk: a 6-byte data block must be followed by \\r\\n\r\n"
    )
    assert a.closed()


def test_topic_list_of_only_spaces_is_stored_like_an_empty_one(connect, bystander):
    """Over 250 spaces raised ValueError in the parser (issue 11): the client was dropped
    without a reply, and the publish before it in the same read was lost."""
    a, b = connect(), connect()
    a.subscribe("spaces")
    b.send(
        b"set publish 0 0 21\r\nMESSAGE spaces 3\r\nabc\r\n"
        b"set subscribe 0 0 251\r\n" + b" " * 251 + b"\r\n"
        b"set subscribe 0 0 0\r\n\r\n"
    )
    b.expect(b"STORED\r\nSTORED\r\nSTORED\r\n")
    assert a.messages() == [(b"spaces", b"abc")]
    assert b.is_open()


def test_data_length_of_5000_digits_is_refused_and_what_came_before_is_kept(connect, bystander):
    """int() refuses over 4,300 digits: the ValueError dropped the client with no reply
    and lost the publish before it (issue 11). Now: STORED, then the framing error."""
    a, b = connect(), connect()
    a.subscribe("digits")
    b.send(b"set publish 0 0 21\r\nMESSAGE digits 3\r\nabc\r\nset subscribe 0 0 " + b"9" * 5000)
    b.send(b"\r\n")
    b.expect(b"STORED\r\n")
    assert b.line() == b"CLIENT_ERROR data block with a 5000-digit length exceeds 8388608 bytes\r\n"
    assert b.closed()
    assert a.messages() == [(b"digits", b"abc")]


def test_publish_entry_length_of_5000_digits_is_a_bad_publish_block(connect, bystander):
    b = connect()
    b.set("publish", b"MESSAGE t " + b"9" * 5000 + b"\r\nabc").expect(
        b"CLIENT_ERROR bad publish block\r\n"
    )
    assert b.is_open()
