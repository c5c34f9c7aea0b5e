"""File descriptors: the limit at start, and a warning before they run out.

Every connection, Kraken's or the admin API's, is a descriptor. When the soft
``RLIMIT_NOFILE`` is reached, ``accept`` fails: uvloop then resets the new
connection without a word, asyncio logs an error and retries each second while
the client waits in the backlog. Either way clients are refused and nothing
says why. So the server raises the soft limit at start to what its options need
(or says why it cannot), counts its open descriptors every few seconds, warns
when they pass 90 % of the limit, and rewords asyncio's accept error.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import time
from typing import Any

log = logging.getLogger("kraken.server")

RESERVED = 64  # descriptors beyond the connections: listeners, log file, event loop, imports
CHECK_EVERY = 2.0  # seconds between two counts of the open descriptors, at least
BUDGET = 500  # times the time a count takes to wait before the next: 0.2 % of the CPU
NEAR = 0.9  # share of the soft limit from which a warning is logged
WARN_EVERY = 60.0  # seconds between two warnings while the count stays high
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def needed(max_tcp_clients: int, admin_max_connections: int) -> int:
    """Descriptors a server with these limits may hold at once."""
    return max_tcp_clients + admin_max_connections + RESERVED


def raise_limit(wanted: int, why: str) -> None:
    """Let the process hold ``wanted`` descriptors as far as the hard limit allows; log
    what was done, and why not when the soft limit stays below ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    advice = (
        "connections past it are refused without a reply. Raise the hard limit (ulimit -Hn, "
        "LimitNOFILE= in a systemd unit) or lower max_tcp_clients"
    )
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning(
                "open files limit stays at %d, below the %d that %s need: setting it to %d "
                "failed (%s); %s",
                soft,
                wanted,
                why,
                target,
                error,
                advice,
            )
            return
    if target == wanted:
        log.info("open files limit raised from %d to %d for %s", soft, target, why)
    elif target > soft:
        log.warning(
            "open files limit raised from %d to %d only (the hard limit), below the %d that "
            "%s need: %s",
            soft,
            target,
            wanted,
            why,
            advice,
        )
    else:
        log.warning(
            "open files limit stays at %d (the hard limit), below the %d that %s need: %s",
            soft,
            wanted,
            why,
            advice,
        )


def open_fds() -> int | None:
    """How many descriptors this process has open, where the system says (else None)."""
    for path in _FD_DIRS:
        try:
            return len(os.listdir(path)) - 1  # less the one listdir itself opened
        except OSError as error:
            if error.errno == errno.EMFILE:  # counting needs one more: all are taken
                return soft_limit()
            continue
    return None


def soft_limit() -> int | None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


class FdWatch:
    """Counts the open descriptors every ``CHECK_EVERY`` seconds; warns when they near the
    limit (at most every ``WARN_EVERY`` seconds), and says when they are back below."""

    def __init__(self, every: float = CHECK_EVERY) -> None:
        self.every = every
        self._handle: asyncio.TimerHandle | None = None
        self._warned_at = 0.0
        self._high = False
        self.accept_failures = 0  # accepts that failed for want of descriptors (asyncio)
        self._previous_handler: Any = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.every, self._tick)
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._exception)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        began = time.perf_counter()
        self.check()
        # counting costs about 1 us a descriptor (9 ms at 10,000): keep it under 0.2 %
        pause = max(self.every, (time.perf_counter() - began) * BUDGET)
        self._handle = asyncio.get_running_loop().call_later(pause, self._tick)

    def check(self, failure: str = "") -> None:
        """Count now; warn when near the limit, or when ``failure`` says an accept failed."""
        count, limit = open_fds(), soft_limit()
        near = count is not None and limit is not None and count >= NEAR * limit
        now = time.monotonic()
        if failure or near:
            if not self._high or now - self._warned_at >= WARN_EVERY:
                log.warning(
                    "%s of %s file descriptors open (soft RLIMIT_NOFILE)%s: new connections "
                    "are refused without a reply at the limit. Raise it (ulimit -n, "
                    "LimitNOFILE=), or lower max_tcp_clients or admin_max_connections",
                    "?" if count is None else count,
                    "unlimited" if limit is None else limit,
                    failure,
                )
                self._warned_at = now
            self._high = True
        elif self._high and count is not None and limit is not None and count < 0.8 * limit:
            log.info("%d of %d file descriptors open: below the limit again", count, limit)
            self._high = False

    def _exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
            self.accept_failures += 1
            self.check(f"; accepting a connection failed: {error.strerror}")
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)
