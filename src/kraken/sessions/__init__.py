"""Sessions: one per client, whatever its transport (see ``kraken.sessions.session``).

``MemcachedDialect`` builds the original protocol's reply bytes; ``EventDialect``
builds reply values for other protocols and for tests.
"""

from kraken.sessions.events import Delivered, EventDialect, Failed
from kraken.sessions.memcached import MemcachedDialect, encode_deliveries
from kraken.sessions.session import (
    AllowAll,
    Authorizer,
    ClientIdentity,
    CloseReason,
    Dialect,
    Identity,
    Session,
    SessionContext,
)

__all__ = [
    "AllowAll",
    "Authorizer",
    "ClientIdentity",
    "CloseReason",
    "Delivered",
    "Dialect",
    "EventDialect",
    "Failed",
    "Identity",
    "MemcachedDialect",
    "Session",
    "SessionContext",
    "encode_deliveries",
]
