"""The admin HTTP API: health, status, queues, topics, log level, shutdown, metrics.

It owns an aiohttp application on its own port, beside the Kraken listener and
in the same event loop. It only reads the server's state when a request asks
(metrics included: a collector reads the plain counters at scrape time), so it
adds nothing to the hot path. It never changes routing state; the log level and
shutdown go through callables the caller passes in.

    GET  /health               {"status": "ok"}
    GET  /status               version, pid, uptime, listen address, totals, log level
    GET  /queues               one entry per connected client
    GET  /queues/{id}/topics   the topics client ``id`` subscribes to
    GET  /topics               topics with their subscriber counts, most first
    GET  /log_level            {"level": ...}
    PUT  /log_level            {"level": "debug" | "info" | "warn" | "error"}
    POST /shutdown             202, then the server shuts down gracefully
    GET  /metrics              Prometheus exposition

When ``admin_token`` is set, every request needs ``Authorization: Bearer <token>``.
Errors are JSON: ``{"error": "short lowercase fact"}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

import kraken
from kraken.routing import ClientQueue
from kraken.server.connection import CloseReason, Connection
from kraken.wire.parser import BAD_HORIZON, BAD_PUBLISH_BLOCK, BAD_TOPIC

if TYPE_CHECKING:
    from kraken.server.listener import KrakenServer

log = logging.getLogger("kraken.admin")

LOG_LEVEL_NAMES = ("debug", "info", "warn", "error")
SHUTDOWN_TIMEOUT = 2.0  # seconds stop() lets in-flight admin requests finish

ERROR_KINDS = (
    "unknown_command",
    "bad_topic",
    "bad_horizon",
    "bad_publish_block",
    "unknown_set_command",
    "framing",
    "other",
)
# The reasons of the parser's FramingErrors, which the server counts by reply line only.
_FRAMING_REASONS = (
    "bad data chunk",
    "bad command line format",
    "bad data length",
    "request line longer than ",
    "data block of ",
)
_CLIENT_ERRORS = {
    BAD_TOPIC: "bad_topic",
    BAD_HORIZON: "bad_horizon",
    BAD_PUBLISH_BLOCK: "bad_publish_block",
}


def error_kind(line: str) -> str:
    """The short kind of a protocol error, from the reply line ``KrakenServer.errors`` keeps."""
    if line == "ERROR":
        return "unknown_command"
    reason = line.removeprefix("CLIENT_ERROR ")
    if reason in _CLIENT_ERRORS:
        return _CLIENT_ERRORS[reason]
    if reason.startswith("unknown command "):
        return "unknown_set_command"
    if reason.startswith(_FRAMING_REASONS):
        return "framing"
    return "other"


def topic_text(topic: bytes) -> str:
    return topic.decode("utf-8", "backslashreplace")


def subscription_count(server: KrakenServer) -> int:
    return sum(len(queues) for shard in server.router.shards for queues in shard.index.values())


def queued_messages(server: KrakenServer) -> int:
    return sum(len(c.queue.entries) for c in server.connections if c.queue is not None)


class ServerCollector:
    """The server's counters as Prometheus metrics, read at scrape time."""

    def __init__(self, server: KrakenServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        router = server.router

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"kraken_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"kraken_{name}", doc, value=value)

        yield gauge("connections", "Connected clients.", len(server.connections))
        yield counter(
            "connections_accepted", "Connections given a queue.", server.connections_accepted
        )
        yield gauge("subscriptions", "Client-topic subscriptions.", subscription_count(server))
        yield gauge("topics", "Topics with at least one subscriber.", router.topic_count())
        yield counter("published_messages", "Messages published.", router.published)
        yield counter("deliveries", "Messages queued for subscribers.", router.deliveries)
        yield counter("bytes_received", "Bytes received from clients.", server.bytes_received)
        yield counter("bytes_sent", "Reply bytes sent to clients.", server.bytes_sent)
        yield counter("retro_requests", "Retroactive subscribes.", router.retro_requests)
        yield counter(
            "retro_not_found", "Retroactive subscribes answered NOT_FOUND.", router.not_found
        )
        closes = CounterMetricFamily(
            "kraken_disconnects", "Closed connections by reason.", labels=["reason"]
        )
        for reason in CloseReason:
            closes.add_metric([reason.name.lower()], server.closes[reason])
        yield closes
        by_kind = dict.fromkeys(ERROR_KINDS, 0)
        for line, count in server.errors.items():
            by_kind[error_kind(line)] += count
        errors = CounterMetricFamily(
            "kraken_protocol_errors", "Error replies by kind.", labels=["kind"]
        )
        for kind, count in by_kind.items():
            errors.add_metric([kind], count)
        yield errors
        yield gauge("queued_messages", "Messages waiting in queues.", queued_messages(server))
        yield gauge("buffered_messages", "Messages in the retro buffers.", router.buffered())
        yield gauge("uptime_seconds", "Seconds since the server started.", _uptime(server))


def _uptime(server: KrakenServer) -> float:
    return round(time.time() - server.started, 3)


def _error(status: int, text: str, **headers: str) -> web.Response:
    return web.json_response({"error": text}, status=status, headers=headers or None)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, ...) and bugs, as JSON."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        allow = {hdrs.ALLOW: error.headers[hdrs.ALLOW]} if hdrs.ALLOW in error.headers else {}
        return _error(error.status, error.reason.lower(), **allow)
    except Exception:
        log.exception("admin %s %s: internal error", request.method, request.path)
        return _error(500, "internal error")


def _require_token(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(hdrs.AUTHORIZATION, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, expected):
            return _error(401, "missing or wrong bearer token", **{hdrs.WWW_AUTHENTICATE: "Bearer"})
        return await handler(request)

    return require_token


class AdminServer:
    def __init__(
        self,
        server: KrakenServer,
        *,
        get_log_level: Callable[[], str],
        set_log_level: Callable[[str], None],
        request_shutdown: Callable[[], None],
    ) -> None:
        self.server = server
        self._get_log_level = get_log_level
        self._set_log_level = set_log_level
        self._request_shutdown = request_shutdown
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServerCollector(server))
        ProcessCollector(registry=self.registry)  # memory, CPU, open files of this process
        middlewares: list[Middleware] = [_json_errors]
        if server.config.admin_token:
            middlewares.append(_require_token(server.config.admin_token))
        self.app = web.Application(middlewares=middlewares)
        self.app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/status", self._status),
                web.get("/queues", self._queues),
                web.get("/queues/{id}/topics", self._queue_topics),
                web.get("/topics", self._topics),
                web.get("/log_level", self._log_level),
                web.put("/log_level", self._put_log_level),
                web.post("/shutdown", self._shutdown),
                web.get("/metrics", self._metrics),
            ]
        )
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        assert self._runner is not None
        port: int = self._runner.addresses[0][1]
        return port

    async def start(self) -> None:
        config = self.server.config
        # scrapes every few seconds would flood the log: requests that change things log instead
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.admin_ip, config.admin_port, reuse_address=True)
        await site.start()
        log.info("admin API listening on %s:%d", config.admin_ip, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("admin API stopped")

    # -- handlers --------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        server = self.server
        return web.json_response(
            {
                "version": kraken.__version__,
                "pid": os.getpid(),
                "uptime_seconds": _uptime(server),
                "listen": f"{server.config.listen_ip}:{server.port}",
                "clients": len(server.connections),
                "topics": server.router.topic_count(),
                "subscriptions": subscription_count(server),
                "queued_messages": queued_messages(server),
                "log_level": self._get_log_level(),
            }
        )

    async def _queues(self, request: web.Request) -> web.Response:
        now = time.time()
        rows = []
        for queue, connection in self._connected():
            last_poll = connection.last_poll
            rows.append(
                {
                    "id": queue.id,
                    "peer": connection.peer,
                    "queued": len(queue.entries),
                    "received": queue.received,
                    "subscriptions": len(queue.subscriptions),
                    "connected_seconds": round(now - connection.connected_at, 3),
                    "since_last_poll_seconds": round(now - last_poll, 3) if last_poll else None,
                }
            )
        return web.json_response(rows)

    async def _queue_topics(self, request: web.Request) -> web.Response:
        text = request.match_info["id"]
        try:
            client_id = int(text)
        except ValueError:
            return _error(400, f"client id must be an integer, got {text[:40]!r}")
        for queue, _ in self._connected():
            if queue.id == client_id:
                topics = sorted(topic_text(t) for t in queue.subscriptions)
                return web.json_response({"id": client_id, "topics": topics})
        return _error(404, f"no connected client {client_id}")

    async def _topics(self, request: web.Request) -> web.Response:
        counts = [
            (len(queues), topic)
            for shard in self.server.router.shards
            for topic, queues in shard.index.items()
        ]
        counts.sort(key=lambda c: (-c[0], c[1]))
        return web.json_response([{"topic": topic_text(t), "subscribers": n} for n, t in counts])

    async def _log_level(self, request: web.Request) -> web.Response:
        return web.json_response({"level": self._get_log_level()})

    async def _put_log_level(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        level = body.get("level") if isinstance(body, dict) else None
        if level not in LOG_LEVEL_NAMES:
            return _error(400, f"level must be one of {', '.join(LOG_LEVEL_NAMES)}")
        self._set_log_level(level)
        log.info("log level set to %s through the admin API", level)
        return web.json_response({"level": level})

    async def _shutdown(self, request: web.Request) -> web.StreamResponse:
        log.info("shutdown requested through the admin API by %s", request.remote)
        response = web.json_response({"status": "shutting down"}, status=202)
        # send the whole answer before asking: the shutdown closes this very server
        await response.prepare(request)
        await response.write_eof()
        asyncio.get_running_loop().call_soon(self._request_shutdown)
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    def _connected(self) -> list[tuple[ClientQueue, Connection]]:
        """The connected clients with their queues, by id."""
        pairs = [(c.queue, c) for c in self.server.connections if c.queue is not None]
        pairs.sort(key=lambda pair: pair[0].id)
        return pairs
