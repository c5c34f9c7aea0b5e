"""Horizons: strictly increasing microsecond stamps for published messages.

The clock never reads the time itself; callers pass ``now`` (Unix microseconds).
Stamps strictly increase even when many messages share one microsecond or the
wall clock steps back, so "published after the horizon" is never ambiguous.
"""

from __future__ import annotations


class HorizonClock:
    __slots__ = ("last",)

    def __init__(self, now: int) -> None:
        self.last = now  # the highest stamp or horizon handed out

    def stamp(self, now: int) -> int:
        """The stamp of a message published at ``now``: above every earlier one."""
        last = self.last
        stamp = now if now > last else last + 1
        self.last = stamp
        return stamp

    def horizon(self, now: int) -> int:
        """The current horizon: every stamp so far is at or below it, every later one above."""
        if now > self.last:
            self.last = now
        return self.last
