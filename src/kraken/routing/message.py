"""A published message, as the router keeps and delivers it."""

from __future__ import annotations

from kraken.types import Topics


class Message:
    """One published message.

    ``encoded`` is a cache for the transport: the message as encoded for a
    subscriber of all its topics, filled on first delivery so that a fan-out to
    many subscribers encodes it once. The router never reads it.
    """

    __slots__ = ("encoded", "payload", "publisher", "stamp", "topics")

    def __init__(self, stamp: int, topics: Topics, payload: bytes, publisher: int) -> None:
        self.stamp = stamp
        self.topics = topics
        self.payload = payload
        self.publisher = publisher
        self.encoded: bytes | None = None

    def __repr__(self) -> str:
        return f"Message({self.stamp}, {self.topics!r}, {self.payload!r})"


# A queued delivery: the message itself when every one of its topics matched,
# else the message with the topics that matched, in the order it named them.
Delivery = Message | tuple[Message, Topics]
