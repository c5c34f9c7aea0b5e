"""Part 1 of the contract over real TCP: requests, routing rules, retroactivity."""

from __future__ import annotations

import time

from kraken_testing import wait_until

MSG = b"MESSAGE %s %d\r\n%s"


def test_register_is_stored(connect):
    connect().request(b"set register 0 0 0\r\n\r\n", b"STORED\r\n")


def test_subscriber_polls_a_published_message(connect):
    a, b = connect(), connect()
    a.subscribe("topicA", "topicB")
    b.publish("topicA", b"hi there!")
    a.request(
        b"get messages\r\n", b"VALUE messages 0 27\r\nMESSAGE topicA 9\r\nhi there!\r\nEND\r\n"
    )


def test_empty_queue_answers_end(connect):
    connect().request(b"get messages\r\n", b"END\r\n")


def test_poll_removes_what_it_returns(connect):
    a, b = connect(), connect()
    a.subscribe("t")
    b.publish("t", b"x")
    assert a.messages() == [(b"t", b"x")]
    assert a.messages() == []


def test_message_matching_several_topics_is_delivered_once_listing_them_in_entry_order(connect):
    a, b = connect(), connect()
    a.subscribe("c", "a", "b")
    b.publish("a x b c", b"p")
    assert a.messages() == [(b"a b c", b"p")]


def test_publisher_never_receives_its_own_message(connect):
    a = connect()
    a.subscribe("self")
    a.publish("self", b"mine")
    assert a.messages() == []


def test_messages_arrive_in_publish_order_across_publishers(connect):
    a, p1, p2 = connect(), connect(), connect()
    a.subscribe("o1", "o2")
    for i in range(20):
        (p1 if i % 2 else p2).publish("o1" if i % 3 else "o2", b"%d" % i)
    assert [int(p) for _, p in a.messages()] == list(range(20))


def test_publish_block_with_several_entries_and_crlf_in_payloads(connect):
    a, b = connect(), connect()
    a.subscribe("m")
    block = b"\r\n".join([MSG % (b"m", 4, b"a\r\nb"), MSG % (b"m", 3, b"\x00\xff\r")])
    b.set("publish", block).expect(b"STORED\r\n")
    assert a.messages() == [(b"m", b"a\r\nb"), (b"m", b"\x00\xff\r")]


def test_poll_answer_is_byte_exact_for_several_messages(connect):
    a, b = connect(), connect()
    a.subscribe("e1", "e2")
    b.publish("e1", b"one")
    b.publish("e2 e1", b"two\r\n")
    block = b"MESSAGE e1 3\r\none\r\nMESSAGE e2 e1 5\r\ntwo\r\n"
    a.request(b"get messages\r\n", b"VALUE messages 0 %d\r\n%s\r\nEND\r\n" % (len(block), block))


def test_subscribing_twice_is_the_same_as_once(connect):
    a, b = connect(), connect()
    a.subscribe("twice")
    a.subscribe("twice")
    b.publish("twice", b"1")
    assert a.messages() == [(b"twice", b"1")]


def test_unsubscribe_stops_delivery_and_unknown_topic_is_a_no_op(connect):
    a, b = connect(), connect()
    a.subscribe("u1", "u2")
    a.unsubscribe("u1", "never-subscribed")
    b.publish("u1", b"gone")
    b.publish("u2", b"kept")
    assert a.messages() == [(b"u2", b"kept")]


def test_empty_topic_tokens_are_ignored(connect):
    a, b = connect(), connect()
    a.set("subscribe", b"  sp1   sp2 ").expect(b"STORED\r\n")
    b.set("publish", MSG % (b"sp1  sp2 ", 1, b"z")).expect(b"STORED\r\n")
    assert a.messages() == [(b"sp1 sp2", b"z")]


def test_subscribe_without_topics_is_stored_and_changes_nothing(connect):
    a, b = connect(), connect()
    a.register()
    b.publish("late", b"before")
    a.set("subscribe", b"").expect(b"STORED\r\n")
    # the register horizon is still pending: the next real subscribe is retroactive
    a.subscribe("late")
    assert a.messages() == [(b"late", b"before")]


def test_entry_without_topics_is_accepted_and_delivered_to_nobody(connect):
    a, b = connect(), connect()
    a.subscribe("nobody")
    b.set("publish", b"MESSAGE 3\r\nabc\r\n").expect(b"STORED\r\n")
    assert a.messages() == []


def test_empty_publish_block_is_stored(connect):
    connect().set("publish", b"").expect(b"STORED\r\n")


def test_closing_a_connection_removes_its_subscriptions(server, connect):
    a, b = connect(), connect()
    a.subscribe("closing")
    a.close()
    b.publish("closing", b"x")  # would reach a dead queue; must not disturb anyone
    c = connect()
    c.subscribe("closing")
    b.publish("closing", b"y")
    assert c.messages() == [(b"closing", b"y")]


def test_pipelined_requests_are_answered_in_order(connect):
    b = connect()
    b.send(b"set subscribe 0 0 2\r\npp\r\nversion\r\nget messages\r\nset register 0 0 0\r\n\r\n")
    assert b.line() == b"STORED\r\n"
    assert b.line().startswith(b"VERSION ")
    assert b.line() == b"END\r\n"
    assert b.line() == b"STORED\r\n"


def test_quit_closes_the_connection_after_earlier_replies(connect):
    a = connect()
    a.send(b"version\r\nquit\r\nversion\r\n")
    assert a.line().startswith(b"VERSION ")
    assert a.closed() and a.buffer == b""


# -- retroactivity --------------------------------------------------------------


def test_first_subscribe_after_register_queues_messages_since_the_register(connect):
    a, b = connect(), connect()
    b.publish("r1", b"before register")
    a.register()
    b.publish("r1", b"after register")
    b.publish("r2", b"other topic")
    a.subscribe("r1")
    assert a.messages() == [(b"r1", b"after register")]
    b.publish("r3", b"x")
    a.subscribe("r3")  # a plain subscribe: the horizon was used up
    assert a.messages() == []


def test_second_register_replaces_the_first_horizon(connect):
    a, b = connect(), connect()
    a.register()
    b.publish("rr", b"1")
    a.register()
    b.publish("rr", b"2")
    a.subscribe("rr")
    assert a.messages() == [(b"rr", b"2")]


def test_retro_subscribe_queues_messages_after_the_horizon(connect):
    a, b = connect(), connect()
    horizon = b.horizon()
    b.publish("rs", b"after")
    a.set("retro_subscribe", horizon + b"\r\nrs").expect(b"STORED\r\n")
    assert a.messages() == [(b"rs", b"after")]
    b.publish("rs", b"live")
    assert a.messages() == [(b"rs", b"live")]


def test_retro_messages_list_requested_topics_once_per_message(connect):
    a, b = connect(), connect()
    horizon = b.horizon()
    b.publish("ra rb rc", b"m")
    a.set("retro_subscribe", horizon + b"\r\nrc ra").expect(b"STORED\r\n")
    assert a.messages() == [(b"ra rc", b"m")]


def test_retro_never_queues_own_messages_or_duplicates(connect):
    a, b = connect(), connect()
    horizon = a.horizon()
    a.subscribe("d1")
    a.publish("d2", b"own")
    b.publish("d1 d2", b"live already")
    a.set("retro_subscribe", horizon + b"\r\nd1 d2").expect(b"STORED\r\n")
    assert a.messages() == [(b"d1", b"live already")]


def test_horizon_older_than_server_start_is_not_found_but_subscribes(connect):
    a, b = connect(), connect()
    a.set("retro_subscribe", b"1000000000\r\nold").expect(b"NOT_FOUND\r\n")
    b.publish("old", b"live")
    assert a.messages() == [(b"old", b"live")]


def test_get_horizon_is_a_value_that_never_decreases(connect):
    a = connect()
    first = a.horizon()
    assert float(first) <= time.time() + 1
    assert first.count(b".") == 1 and len(first.split(b".")[1]) == 6
    assert float(a.horizon()) >= float(first)


def test_get_messages_horizon_answers_both_atomically(connect):
    a, b = connect(), connect()
    a.subscribe("gm")
    b.publish("gm", b"1")
    a.send(b"get messages horizon\r\n")
    assert a.line() == b"VALUE messages 0 15\r\n"
    a.expect(b"MESSAGE gm 1\r\n1\r\n")
    assert a.line().startswith(b"VALUE horizon 0 ")
    horizon = a.line()[:-2]
    a.expect(b"END\r\n")
    b.publish("gm", b"2")
    c = connect()
    c.set("retro_subscribe", horizon + b"\r\ngm").expect(b"STORED\r\n")
    assert c.messages() == [(b"gm", b"2")]


def test_get_answers_known_keys_in_order_and_skips_unknown(connect):
    a = connect()
    a.send(b"get nosuch horizon other\r\n")
    assert a.line().startswith(b"VALUE horizon 0 ")
    a.line()
    a.expect(b"END\r\n")


def test_version(connect):
    line = connect().send(b"version\r\n").line()
    assert line.startswith(b"VERSION ") and len(line) > len(b"VERSION \r\n")


def test_flags_and_exptime_of_a_set_are_ignored(connect):
    a, b = connect(), connect()
    a.request(b"set subscribe 17 3600 2\r\nfe\r\n", b"STORED\r\n")
    b.request(b"set publish 1 1 15\r\nMESSAGE fe 1\r\nx\r\n", b"STORED\r\n")
    assert a.messages() == [(b"fe", b"x")]


def test_retro_subscribe_takes_an_integer_horizon(server, connect):
    a, b = connect(), connect()
    # a whole second before the server's start would be NOT_FOUND
    wait_until(lambda: int(time.time()) >= server.ready_at, "the server's first whole second")
    horizon = b"%d" % int(time.time())
    b.publish("int", b"after")
    a.set("retro_subscribe", horizon + b"\r\nint").expect(b"STORED\r\n")
    assert a.messages() == [(b"int", b"after")]


def test_register_never_misses_a_message_published_in_the_same_instant(connect):
    a, b = connect(), connect()
    # all within a second or so: the horizon must tell them apart to the microsecond
    for i in range(50):
        b.publish("same", b"%d" % i)
        a.register()
    b.publish("same", b"last")
    a.subscribe("same")
    assert a.messages() == [(b"same", b"last")]


def test_retro_subscribe_without_topics_is_stored_and_changes_nothing(connect):
    a = connect()
    a.set("retro_subscribe", b"1000000000\r\n").expect(b"STORED\r\n")
    a.set("retro_subscribe", b"1000000000\r\n   ").expect(b"STORED\r\n")
