"""Every option of the server, in one place.

Names are the original Kraken's where it had the option, so operators' knowledge
carries over. Each option has a type, a default, a unit and the reason for its
default; the CLI (and later the admin API) are generated from this table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

KIB = 1024
MIB = 1024 * KIB
SECONDS = 1.0


def _option(default: Any, unit: str, help: str) -> Any:
    return field(default=default, metadata={"unit": unit, "help": help})


@dataclass(frozen=True, slots=True)
class Config:
    listen_ip: str = _option(
        "127.0.0.1", "", "address to listen on; loopback unless the operator opens it up"
    )
    tcp_server_port: int = _option(12355, "", "TCP port of the original Kraken")
    num_router_shards: int = _option(
        4, "", "router shards; each holds part of the topic index and its own retro buffer"
    )
    messages_stored_per_router_shard: int = _option(
        10_000, "messages", "retro buffer size per shard, as the original"
    )
    max_tcp_clients: int = _option(
        10_000, "connections", "connections beyond this are refused, bounding memory"
    )
    router_min_fanout_to_warn: int = _option(
        1_000, "subscribers", "warn when one publish reaches this many subscribers"
    )
    router_min_publish_to_topics_to_warn: int = _option(
        1_000, "topics", "warn when one published message names this many topics"
    )
    client_idle_timeout: float = _option(
        3600 * SECONDS, "seconds", "close connections that send nothing for this long"
    )
    max_queued_messages: int = _option(
        100_000, "messages", "a client queue past this is a slow consumer and is closed"
    )
    max_queued_bytes: int = _option(
        64 * MIB, "bytes", "payload bytes a client queue may hold before it is a slow consumer"
    )
    max_request_bytes: int = _option(
        8 * MIB, "bytes", "largest data block accepted; a security limit on memory per request"
    )
    max_line_bytes: int = _option(
        8 * KIB, "bytes", "longest request line; a security limit against endless lines"
    )
    log_level: str = _option("info", "", "debug, info, warn or error")
    log_file: str = _option("", "", "append the log to this file instead of stderr")
    pid_file: str = _option("", "", "write the server's process id to this file")
    admin_ip: str = _option("127.0.0.1", "", "address of the admin HTTP API; loopback by default")
    admin_port: int = _option(12356, "", "port of the admin HTTP API (health, status, metrics)")
    admin_token: str = _option(
        "", "", "when set, every admin request must carry 'Authorization: Bearer <token>'"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_port"):
                if not 0 <= value <= 65535:
                    raise ValueError(f"{f.name} must be a port number (0-65535), got {value}")
            elif f.type in ("int", "float") and value <= 0:
                raise ValueError(f"{f.name} must be positive, got {value}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")


LOG_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40}


def options() -> list[dataclasses.Field[Any]]:
    """The options, in declaration order, with their metadata."""
    return list(dataclasses.fields(Config))
