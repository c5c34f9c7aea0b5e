"""Brokers: where a session's requests go (see ``kraken.brokers.base``).

``LocalBroker`` keeps everything in this process and is the default.
"""

from kraken.brokers.base import Answer, Broker, BrokerStats, InterestListener, Pending, Polled
from kraken.brokers.local import LocalBroker

__all__ = [
    "Answer",
    "Broker",
    "BrokerStats",
    "InterestListener",
    "LocalBroker",
    "Pending",
    "Polled",
]
