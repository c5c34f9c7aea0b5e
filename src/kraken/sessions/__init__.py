"""Sessions: one per client, whatever its transport (see ``kraken.sessions.session``).

``MemcachedDialect`` builds the original protocol's reply bytes; ``EventDialect``
builds reply values for other protocols and for tests.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from kraken.sessions.events import Delivered, EventDialect, Failed


def __getattr__(name: str) -> Any:
    """The event dialect on first use: a memcached server never loads it."""
    if name in ("Delivered", "EventDialect", "Failed"):
        from kraken.sessions import events

        return getattr(events, name)
    raise AttributeError(f"module 'kraken.sessions' has no attribute {name!r}")


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
