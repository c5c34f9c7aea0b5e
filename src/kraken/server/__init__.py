"""The asyncio layer: the only code in Kraken that awaits."""

from kraken.server.connection import CloseReason, Connection
from kraken.server.listener import KrakenServer

__all__ = ["CloseReason", "Connection", "KrakenServer"]
