"""Horizons: strictly increasing stamps, and a horizon that never goes back."""

from __future__ import annotations

from kraken.routing import HorizonClock

T0 = 1_800_000_000_000_000


def test_stamps_follow_the_wall_clock_when_it_moves_forward():
    clock = HorizonClock(T0)
    assert clock.stamp(T0 + 10) == T0 + 10
    assert clock.stamp(T0 + 20) == T0 + 20


def test_stamps_strictly_increase_within_one_microsecond():
    clock = HorizonClock(T0)
    stamps = [clock.stamp(T0 + 5) for _ in range(100)]
    assert stamps == list(range(T0 + 5, T0 + 105))


def test_stamps_strictly_increase_when_the_wall_clock_steps_back():
    clock = HorizonClock(T0)
    first = clock.stamp(T0 + 1000)
    later = [clock.stamp(T0 + 1000 - step) for step in (1, 500, 1000, 10_000)]
    assert later == [first + 1, first + 2, first + 3, first + 4]


def test_the_first_stamp_is_above_the_start():
    clock = HorizonClock(T0)
    assert clock.stamp(T0) > T0
    assert HorizonClock(T0).stamp(T0 - 1) > T0


def test_the_horizon_never_decreases():
    clock = HorizonClock(T0)
    assert clock.horizon(T0 + 100) == T0 + 100
    assert clock.horizon(T0 + 50) == T0 + 100
    assert clock.horizon(T0) == T0 + 100
    assert clock.horizon(T0 + 200) == T0 + 200


def test_the_horizon_is_at_or_above_every_stamp_so_far():
    clock = HorizonClock(T0)
    stamps = [clock.stamp(T0 + 7) for _ in range(10)]
    assert clock.horizon(T0 + 7) >= max(stamps)
    assert clock.horizon(T0 + 1) == max(stamps)


def test_a_stamp_after_a_horizon_is_above_it():
    clock = HorizonClock(T0)
    for now in (T0 + 10, T0 + 10, T0 + 3, T0 + 11):
        horizon = clock.horizon(now)
        assert clock.stamp(now) > horizon
        assert clock.stamp(now - 5) > horizon
