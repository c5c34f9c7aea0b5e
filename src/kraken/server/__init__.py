"""The asyncio layer: the only code in Kraken that awaits.

``hub`` is what transports share, ``tcp`` the memcached transport over one
``Session`` per connection, ``listener`` the server that accepts and sweeps,
``admin`` the HTTP admin API.
"""

from kraken.server.hub import Hub
from kraken.server.listener import KrakenServer
from kraken.server.tcp import Connection

__all__ = ["Connection", "Hub", "KrakenServer"]
