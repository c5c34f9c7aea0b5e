"""Routing: topics, subscribers, fan-out and the retro buffer, in memory.

Nothing in this package does I/O or reads a clock; callers pass the time in.
"""

from kraken.routing.clock import HorizonClock
from kraken.routing.history import RetroBuffer
from kraken.routing.message import Delivery, Message
from kraken.routing.queue import ClientQueue
from kraken.routing.router import HistorySnapshot, InterestListener, Router
from kraken.types import Topics

__all__ = [
    "ClientQueue",
    "Delivery",
    "HistorySnapshot",
    "HorizonClock",
    "InterestListener",
    "Message",
    "RetroBuffer",
    "Router",
    "Topics",
]
