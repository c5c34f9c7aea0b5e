"""The Kraken wire protocol, sans I/O: bytes in, requests out; replies to bytes.

Nothing in this package opens a socket, runs an event loop or reads a clock.
"""

from kraken.types import Topics
from kraken.wire.encode import (
    encode_block,
    encode_entry,
    encode_request,
    encode_value,
    format_horizon,
)
from kraken.wire.parser import (
    RequestParser,
    parse_horizon,
    parse_publish_block,
    parse_topics,
)
from kraken.wire.requests import (
    Entry,
    Get,
    Publish,
    Push,
    Quit,
    Register,
    Rejected,
    Request,
    RetroSubscribe,
    Subscribe,
    Unsubscribe,
    Version,
    describe,
)

__all__ = [
    "Entry",
    "Get",
    "Publish",
    "Push",
    "Quit",
    "Register",
    "Rejected",
    "Request",
    "RequestParser",
    "RetroSubscribe",
    "Subscribe",
    "Topics",
    "Unsubscribe",
    "Version",
    "describe",
    "encode_block",
    "encode_entry",
    "encode_request",
    "encode_value",
    "format_horizon",
    "parse_horizon",
    "parse_publish_block",
    "parse_topics",
]
