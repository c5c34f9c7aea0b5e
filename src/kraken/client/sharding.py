"""Which server owns a topic: rendezvous (highest-random-weight) hashing.

For a topic and each server, the weight is the first 8 bytes, read as an
unsigned big-endian integer, of SHA-256 over the server's name (its
``"host:port"`` string, UTF-8), one zero byte, then the topic bytes. The server
with the highest weight owns the topic; equal weights go to the greater name.
Adding a server moves only the topics it now wins, about 1/N of them; removing
one moves only its own. Any language with SHA-256 computes the same mapping
(test vectors in docs/client.md and tests/client/test_sharding.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def weight(server: str, topic: bytes) -> int:
    digest = hashlib.sha256(server.encode() + b"\x00" + topic).digest()
    return int.from_bytes(digest[:8], "big")


def owner(servers: Sequence[str], topic: bytes) -> str:
    """The server, of ``servers``, that owns ``topic``."""
    if len(servers) == 1:
        return servers[0]
    return max(servers, key=lambda server: (weight(server, topic), server))


class Shards:
    """Topic -> server, with a bounded cache (the mapping never changes for a client)."""

    __slots__ = ("_cache", "servers")

    CACHE_SIZE = 100_000

    def __init__(self, servers: Sequence[str]) -> None:
        if not servers:
            raise ValueError("at least one server is needed")
        if len(set(servers)) != len(servers):
            raise ValueError("servers must be distinct")
        self.servers = tuple(servers)
        self._cache: dict[bytes, str] = {}

    def owner(self, topic: bytes) -> str:
        server = self._cache.get(topic)
        if server is None:
            server = owner(self.servers, topic)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[topic] = server
        return server

    def split(self, topics: Sequence[bytes]) -> dict[str, list[bytes]]:
        """``topics`` grouped by owner, each group in the given order."""
        groups: dict[str, list[bytes]] = {}
        for topic in topics:
            groups.setdefault(self.owner(topic), []).append(topic)
        return groups
