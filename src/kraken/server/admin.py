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
    GET  /config               every option: {"name": {"value": ..., "source": ...}}
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
from typing import TYPE_CHECKING, Any

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
from kraken.config import LOG_LEVELS, SECRET_OPTIONS, log_level_name, options
from kraken.errors import ERROR_KINDS
from kraken.server.hub import Client
from kraken.sessions import CloseReason, Session

if TYPE_CHECKING:
    from kraken.server.listener import KrakenServer

log = logging.getLogger("kraken.admin")

SHUTDOWN_TIMEOUT = 2.0  # seconds stop() lets in-flight admin requests finish


def topic_text(topic: bytes) -> str:
    return topic.decode("utf-8", "backslashreplace")


class ServerCollector:
    """The server's counters as Prometheus metrics, read at scrape time."""

    def __init__(self, server: KrakenServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        server = self.server
        stats = server.broker.stats()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"kraken_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"kraken_{name}", doc, value=value)

        yield gauge("connections", "Connected clients.", len(server.connections))
        yield counter("connections_accepted", "Connections given a session.", server.accepted)
        yield gauge("subscriptions", "Client-topic subscriptions.", stats.subscriptions)
        yield gauge("topics", "Topics with at least one subscriber.", stats.topics)
        yield counter("published_messages", "Messages published.", stats.published)
        yield counter("deliveries", "Messages queued for subscribers.", stats.deliveries)
        yield counter("bytes_received", "Bytes received from clients.", server.bytes_received)
        yield counter("bytes_sent", "Bytes sent to clients.", server.bytes_sent)
        yield counter("retro_requests", "Retroactive subscribes.", stats.retro_requests)
        yield counter(
            "retro_not_found", "Retroactive subscribes answered NOT_FOUND.", stats.retro_not_found
        )
        closes = CounterMetricFamily(
            "kraken_disconnects", "Closed connections by reason.", labels=["reason"]
        )
        for reason in CloseReason:
            closes.add_metric([reason.name.lower()], server.closes[reason])
        yield closes
        errors = CounterMetricFamily(
            "kraken_protocol_errors", "Error replies by kind.", labels=["kind"]
        )
        for kind in ERROR_KINDS:
            errors.add_metric([kind], server.errors[kind])
        yield errors
        yield gauge("queued_messages", "Messages waiting in queues.", stats.queued_messages)
        yield gauge("queued_bytes", "Payload bytes waiting in queues.", stats.queued_bytes)
        yield gauge("buffered_messages", "Messages in the retro buffers.", stats.buffered_messages)
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
        sources: dict[str, str] | None = None,
    ) -> None:
        self.server = server
        self._sources = sources or {}
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
                web.get("/config", self._config),
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
        stats = server.broker.stats()
        return web.json_response(
            {
                "version": kraken.__version__,
                "pid": os.getpid(),
                "uptime_seconds": _uptime(server),
                "listen": f"{server.config.listen_ip}:{server.port}",
                "clients": len(server.connections),
                "topics": stats.topics,
                "subscriptions": stats.subscriptions,
                "queued_messages": stats.queued_messages,
                "log_level": self._get_log_level(),
                # counters since start, for rates (kraken top)
                "connections_accepted": server.accepted,
                "published": stats.published,
                "deliveries": stats.deliveries,
                "bytes_received": server.bytes_received,
                "bytes_sent": server.bytes_sent,
                "slow_consumers": server.closes[CloseReason.SLOW_CONSUMER],
                # how near the limits the clients are
                "max_tcp_clients": server.config.max_tcp_clients,
                "queued_bytes": stats.queued_bytes,
                "largest_queue_messages": max(
                    (
                        len(c.session.queue.entries)
                        for c in server.connections
                        if c.session is not None
                    ),
                    default=0,
                ),
                "largest_queue_bytes": max(
                    (c.session.queue.bytes for c in server.connections if c.session is not None),
                    default=0,
                ),
                "max_queued_messages": server.config.max_queued_messages,
                "max_queued_bytes": server.config.max_queued_bytes,
            }
        )

    async def _queues(self, request: web.Request) -> web.Response:
        now = time.time()
        rows = []
        for session, connection in self._connected():
            queue = session.queue
            last_poll = session.last_poll / 1e6
            rows.append(
                {
                    "id": session.id,
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
        for session, _ in self._connected():
            if session.id == client_id:
                topics = sorted(topic_text(t) for t in session.queue.subscriptions)
                return web.json_response({"id": client_id, "topics": topics})
        return _error(404, f"no connected client {client_id}")

    async def _topics(self, request: web.Request) -> web.Response:
        counts = [(n, topic) for topic, n in self.server.broker.topic_subscribers()]
        counts.sort(key=lambda c: (-c[0], c[1]))
        return web.json_response([{"topic": topic_text(t), "subscribers": n} for n, t in counts])

    async def _config(self, request: web.Request) -> web.Response:
        config = self.server.config
        answer = {}
        for option in options():
            value = getattr(config, option.name)
            if option.name in SECRET_OPTIONS and value:
                value = "(set)"
            if option.name == "log_level":
                value = self._get_log_level()  # it may have changed since the start
            source = self._sources.get(option.name, "")
            answer[option.name] = {"value": value, "source": source}
        return web.json_response(answer)

    async def _log_level(self, request: web.Request) -> web.Response:
        return web.json_response({"level": self._get_log_level()})

    async def _put_log_level(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        level = body.get("level") if isinstance(body, dict) else None
        try:
            level = log_level_name(level) if isinstance(level, str) else None
        except ValueError:
            level = None
        if level is None:
            return _error(400, f"level must be one of {', '.join(LOG_LEVELS)} (or warning)")
        self._set_log_level(level)
        self.server.refresh()
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

    def _connected(self) -> list[tuple[Session[Any], Client]]:
        """The connected clients with their sessions, by id."""
        pairs = [(c.session, c) for c in self.server.connections if c.session is not None]
        pairs.sort(key=lambda pair: pair[0].id)
        return pairs
