"""Kraken clients: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both never lose a message silently: they resume every subscription from the
last poll's horizon after a lost connection, and tell the application
(``on_state_lost`` or ``StateLost``) when the server can no longer replay.
"""

from kraken.client.aio import AsyncClient
from kraken.client.core import Message
from kraken.client.sharding import owner, weight
from kraken.client.sync import Client
from kraken.errors import (
    BadTopic,
    ClientError,
    ConnectionLost,
    ErrorReply,
    KrakenError,
    ProtocolError,
    RegistrationTooOld,
    SlowConsumer,
    StateLost,
)

__all__ = [
    "AsyncClient",
    "BadTopic",
    "Client",
    "ClientError",
    "ConnectionLost",
    "ErrorReply",
    "KrakenError",
    "Message",
    "ProtocolError",
    "RegistrationTooOld",
    "SlowConsumer",
    "StateLost",
    "owner",
    "weight",
]
