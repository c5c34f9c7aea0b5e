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
    POST /shutdown             202, then the server drains and stops (``{"drain": SECONDS}``)
    GET  /metrics              Prometheus exposition

When ``admin_token`` is set, every request needs ``Authorization: Bearer <token>``.
Errors are JSON: ``{"error": "short lowercase fact"}``.

A browser is kept out (docs/security.md): a ``Host`` that is not this server's
(DNS rebinding) and a cross-site ``Origin`` or ``Sec-Fetch-Site`` get 403, and
the requests that change something (PUT, POST) need ``Content-Type:
application/json`` or an ``X-Kraken-Admin`` header, which no page can send to
another site without a CORS preflight this API never grants (else 415). At most
``admin_max_connections`` connections are open at once (the next get 503), and
``admin_timeout`` bounds how long one may idle, send its request, be answered,
or leave its answer unread.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

import kraken
from kraken.config import LOG_LEVELS, SECRET_OPTIONS, Config, log_level_name, options
from kraken.errors import ERROR_KINDS
from kraken.server.hub import Client
from kraken.sessions import CloseReason, Session

if TYPE_CHECKING:
    from kraken.server.listener import KrakenServer

log = logging.getLogger("kraken.admin")

SHUTDOWN_TIMEOUT = 2.0  # seconds stop() lets in-flight admin requests finish
MAX_BODY = 64 * 1024  # bytes of a request body (a log level is 20): more gets 413
LEVEL_BODY = '{"level": "debug"}'
ADMIN_HEADER = "X-Kraken-Admin"  # any value: a header no page may send to another site
REFUSED_LINGER = 1.0  # seconds a refused connection may take to read its 503
# bytes of a request head, at most: aiohttp keeps a head's lines until it ends, and
# counts them only then (64 connections streaming header lines for 9 s took 945 MiB)
MAX_HEAD = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]{1,20})[ \t]*\r\n", re.I)
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
    b"Content-Length: 46\r\nConnection: close\r\n\r\n"
    b'{"error": "request head larger than 64 KiB"}\r\n'
)
WARN_EVERY = 10.0  # seconds between two warnings of one kind, with a count of those held
INF = float("inf")


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
        upstream = getattr(server.broker, "upstream_status", None)
        if upstream is not None:  # a proxy: its link
            link = upstream()
            yield gauge("upstream_up", "1 while the upstream link is up.", link["state"] == "up")
            yield counter("upstream_connects", "Upstream link connections made.", link["connects"])
            yield counter(
                "upstream_messages_in",
                "Messages pushed over the upstream link.",
                link["messages_in"],
            )
            yield counter(
                "upstream_messages_out", "Messages published upstream.", link["messages_out"]
            )
            yield gauge("upstream_topics_held", "Topics held upstream.", link["topics_held"])
            yield counter(
                "upstream_states_lost",
                "Times the upstream no longer had what the link missed.",
                link["states_lost"],
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
        yield gauge(
            "unsent_bytes",
            "Bytes of replies written but not yet taken by the clients' sockets.",
            sum(c.unsent for c in server.connections),
        )
        yield gauge("buffered_messages", "Messages in the retro buffers.", stats.buffered_messages)
        yield gauge(
            "buffered_bytes",
            "Charged bytes of the retro buffers: payloads plus 256 per topic.",
            stats.buffered_bytes,
        )
        yield counter(
            "buffer_evicted_for_bytes",
            "Messages evicted from a retro buffer by max_buffered_bytes_per_router_shard.",
            stats.evicted_for_bytes,
        )
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
    except ConnectionError as error:
        # the client went away in the middle of its request (its body, typically): its
        # doing, not a fault; the answer is for aiohttp, which finds nobody to send it to
        log.debug(
            "admin %s %s: client %s disconnected mid-request (%s)",
            request.method,
            _quoted(request.path),
            request.remote,
            error,
        )
        return _error(400, "client disconnected")
    except HttpProcessingError as error:  # a body that breaks HTTP's framing
        log.debug(
            "admin %s %s: bad body from %s: %s",
            request.method,
            _quoted(request.path),
            request.remote,
            error,
        )
        return _error(400, f"bad request body: {error.message}".lower()[:200])
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


class _Throttled:
    """A warning logged at most every ``WARN_EVERY`` seconds, with a count of those held."""

    def __init__(self) -> None:
        self._last = float("-inf")
        self._held = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last < WARN_EVERY:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        more = f" (and {held} more in the last {WARN_EVERY:.0f} s or so)" if held else ""
        log.warning(message + "%s", *args, more)


def _quoted(text: str, limit: int = 80) -> str:
    """A client's header value in an error or the log: quoted, escaped, at most ``limit``."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def _split_host(value: str) -> tuple[str, str] | None:
    """(name, port) of a ``Host`` header or an origin's host, lowercased; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        name, port = value[1:end], value[end + 2 :]
    else:
        name, _, port = value.partition(":")
        if ":" in port:
            return None  # a bare IPv6 address, or garbage
    if (port and not (port.isascii() and port.isdigit())) or not name or "/" in name:
        return None
    return name.rstrip("."), port


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _same_origin(origin: str, host: tuple[str, str] | None) -> bool:
    """``Origin`` names the scheme, host and port the request was sent to (its ``Host``)."""
    scheme, sep, authority = origin.strip().lower().partition("://")
    if host is None or not sep or scheme not in ("http", "https"):
        return False  # "null" (a sandboxed or file: page), or no Host to compare with
    split = _split_host(authority)
    if split is None:
        return False
    default = "80" if scheme == "http" else "443"
    return split[0] == host[0] and (split[1] or default) == (host[1] or default)


class _BrowserGuard:
    """Keeps web pages out: DNS rebinding (a foreign ``Host``), cross-site requests (a
    foreign ``Origin`` or ``Sec-Fetch-Site``), and simple requests that change something.

    Only browsers obey these headers, and only browsers need them checked: any other
    client could send anything, which is what ``admin_token`` is for.
    """

    SAFE_METHODS = frozenset({hdrs.METH_GET, hdrs.METH_HEAD, hdrs.METH_OPTIONS})

    def __init__(self, config: Config) -> None:
        names = (
            name.strip().lower().strip("[]").rstrip(".")
            for name in config.admin_allowed_hosts.split(",")
        )
        self.hosts = {name for name in names if name}
        self.any_host = "*" in self.hosts
        self.hosts |= {"localhost", config.admin_ip.strip().lower().strip("[]")}
        self.warn = _Throttled()

    def _host_allowed(self, name: str) -> bool:
        return self.any_host or name in self.hosts or name.endswith(".localhost") or _is_ip(name)

    def refusal(self, request: web.Request) -> web.Response | None:
        """The answer to a request a browser must not make, or None to serve it."""
        host_header = request.headers.get(hdrs.HOST)
        host = _split_host(host_header) if host_header is not None else None
        if host_header is not None and (host is None or not self._host_allowed(host[0])):
            return self._refuse(
                request,
                403,
                f"host {_quoted(host_header)} not allowed: the admin API answers to localhost, "
                "IP addresses, admin_ip and admin_allowed_hosts",
            )
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not _same_origin(origin, host):
            return self._refuse(
                request,
                403,
                f"cross-origin request refused: origin {_quoted(origin)} is not this server",
            )
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            return self._refuse(
                request, 403, f"cross-site request refused (Sec-Fetch-Site: {_quoted(site)})"
            )
        if (
            request.method not in self.SAFE_METHODS
            and request.match_info.http_exception is None  # a 404 or 405 stays one
            and request.content_type != "application/json"
            and ADMIN_HEADER not in request.headers
        ):
            return self._refuse(
                request,
                415,
                f"{request.method} {request.path} needs Content-Type: application/json "
                f"or an {ADMIN_HEADER} header",
            )
        return None

    def _refuse(self, request: web.Request, status: int, reason: str) -> web.Response:
        self.warn.warning(
            "admin %s %s from %s refused: %s",
            request.method,
            _quoted(request.path),
            request.remote,
            reason,
        )
        return _error(status, reason)


def _guard_browsers(config: Config) -> Middleware:
    guard = _BrowserGuard(config)

    @web.middleware
    async def guard_browsers(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = guard.refusal(request)
        return refused if refused is not None else await handler(request)

    return guard_browsers


@web.middleware
async def _body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body declared larger than ``MAX_BODY`` gets 413 at once, without waiting for it
    (aiohttp refuses one only once that much has come)."""
    size = request.content_length
    if size is not None and size > MAX_BODY:
        response = _error(413, f"request body of {size} bytes exceeds {MAX_BODY} bytes")
        response.force_close()  # the body is not read
        return response
    return await handler(request)


def _time_limit(seconds: float) -> Middleware:
    """A request (its body included) not read and answered within ``seconds`` gets 408."""

    @web.middleware
    async def time_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            async with asyncio.timeout(seconds):
                return await handler(request)
        except TimeoutError:
            log.info(
                "admin %s %s from %s: not read and answered within admin_timeout (%g s)",
                request.method,
                _quoted(request.path),
                request.remote,
                seconds,
            )
            return _error(
                408, f"request not read and answered within admin_timeout ({seconds:g} s)"
            )

    return time_limit


if TYPE_CHECKING:
    _Adapter = logging.LoggerAdapter[logging.Logger]
else:
    _Adapter = logging.LoggerAdapter


class _HttpLog(_Adapter):
    """aiohttp's own log, for what reaches it outside the handlers: a malformed request or
    a client gone mid-request is the client's doing, logged at debug without a traceback;
    anything else is still an error with its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, HttpProcessingError | ConnectionError | TimeoutError):
            self.debug(f"{msg} (%s)", *args, error)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


class _ConnectionLimit:
    """The admin listener's protocol factory: at most ``limit`` connections are served at
    once, the next get a 503 and are closed; a served connection that leaves its answer
    unread (writing paused) for ``timeout`` seconds is aborted."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.factory: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, at start
        self.limit = limit
        self.timeout = timeout
        self.open = 0
        self.refused = 0  # since start
        self.lingering: set[asyncio.Transport] = set()  # refused, reading their 503
        self.warn = _Throttled()
        reason = f"too many admin connections: admin_max_connections ({limit}) are open"
        body = json.dumps({"error": reason}).encode()
        self.answer = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self)

    def refuse(self, transport: asyncio.Transport, answer: bytes | None = None) -> None:
        """Answer ``answer`` (the 503 of a connection past the limit, by default) and
        close, after reading for a moment what the client still sends."""
        if answer is None:
            self.refused += 1
            self.warn.warning(
                "admin connection from %s refused: admin_max_connections (%d) are open",
                _peer(transport),
                self.limit,
            )
        transport.write(answer or self.answer)
        if len(self.lingering) >= self.limit or not transport.can_write_eof():
            transport.close()
            return
        # half-close, and read what the client sends until it closes or REFUSED_LINGER
        # passes: closing at once would reset a client still sending, losing the 503
        transport.write_eof()
        self.lingering.add(transport)
        asyncio.get_running_loop().call_later(REFUSED_LINGER, transport.close)

    def close(self) -> None:
        for transport in list(self.lingering):
            transport.abort()
        self.lingering.clear()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class _Guarded(asyncio.Protocol):
    """One admin connection: aiohttp's protocol inside, unless the connection is refused."""

    def __init__(self, limit: _ConnectionLimit) -> None:
        self.limit = limit
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.stalled: asyncio.TimerHandle | None = None
        self.dropping = False  # refused for a head past MAX_HEAD: what comes is dropped
        self.head = b""  # the request head being received
        self.body_left = 0  # bytes of the last request's body still to come

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        limit = self.limit
        if limit.open >= limit.limit or limit.factory is None:
            limit.refuse(self.transport)
            return
        limit.open += 1
        self.inner = limit.factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.dropping:
            return  # a refused connection's request is dropped
        if not self._head_fits(data) and self.transport is not None:
            self.limit.warn.warning(
                "admin client %s sent a request head larger than 64 KiB: closed",
                _peer(self.transport),
            )
            # the answer, then the close after a moment: reading stops, so that a
            # client streaming on costs nothing meanwhile (a close at once would reset
            # a client that had sent its head whole, and lose the answer); aiohttp
            # hears of it at the close
            self.dropping = True
            self.transport.pause_reading()
            self.limit.refuse(self.transport, TOO_LARGE)
            return
        self.inner.data_received(data)

    def _head_fits(self, data: bytes) -> bool:
        """Follow the requests' heads and bodies (by ``Content-Length``; a chunked body
        counts as at most MAX_BODY, which aiohttp enforces): False once a head passes
        MAX_HEAD without ending."""
        while data:
            if self.body_left > 0:
                taken = min(self.body_left, len(data))
                self.body_left -= taken
                data = data[taken:]
                continue
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                return len(head) <= MAX_HEAD
            if end > MAX_HEAD:
                return False
            declared = _CONTENT_LENGTH.search(head, 0, end + 2)
            self.body_left = int(declared.group(1)) if declared else 0
            if declared is None and b"chunked" in head[:end].lower():
                self.body_left = MAX_BODY
            self.head = b""
            data = head[end + 4 :]
        return True

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
        inner, self.inner = self.inner, None
        if self.transport is not None:
            self.limit.lingering.discard(self.transport)
        if inner is None:
            return
        self.limit.open -= 1
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()
            loop = asyncio.get_running_loop()
            self.stalled = loop.call_later(self.limit.timeout, self._abort_stalled)

    def resume_writing(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        if self.inner is not None:
            self.inner.resume_writing()

    def _abort_stalled(self) -> None:
        self.stalled = None
        if self.transport is not None:
            log.info(
                "admin client %s took nothing of its answer for admin_timeout (%g s): aborted",
                _peer(self.transport),
                self.limit.timeout,
            )
            self.transport.abort()


class AdminCollector:
    """The admin API's own connections, as Prometheus metrics."""

    def __init__(self, connections: _ConnectionLimit) -> None:
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "kraken_admin_connections", "Open admin API connections.", value=self.connections.open
        )
        yield CounterMetricFamily(
            "kraken_admin_connections_refused",
            "Admin connections refused by admin_max_connections.",
            value=self.connections.refused,
        )


class AdminServer:
    def __init__(
        self,
        server: KrakenServer,
        *,
        get_log_level: Callable[[], str],
        set_log_level: Callable[[str], None],
        request_shutdown: Callable[[float], object],
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
        config = server.config
        self.connections = _ConnectionLimit(config.admin_max_connections, config.admin_timeout)
        self.registry.register(AdminCollector(self.connections))
        middlewares: list[Middleware] = [
            _json_errors,
            _body_limit,
            _time_limit(config.admin_timeout),
            _guard_browsers(config),
        ]
        if config.admin_token:
            middlewares.append(_require_token(config.admin_token))
        self.app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
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
        self._listener: asyncio.base_events.Server | None = None

    @property
    def started(self) -> bool:
        return self._listener is not None

    @property
    def port(self) -> int:
        assert self._listener is not None
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        config = self.server.config
        self._runner = web.AppRunner(
            self.app,
            # scrapes every few seconds would flood the log: requests that change things log
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            # from the connection on, and between requests: an idle connection, or one whose
            # request headers have not all come, is closed after this long
            keepalive_timeout=config.admin_timeout,
            lingering_time=min(2.0, config.admin_timeout),  # to read the rest of a body
            logger=_HttpLog(logging.getLogger("kraken.admin.http"), {}),
        )
        await self._runner.setup()
        assert self._runner.server is not None
        self.connections.factory = self._runner.server
        # not aiohttp's TCPSite: this listener counts the connections (_ConnectionLimit)
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self.connections, config.admin_ip, config.admin_port, reuse_address=True, backlog=128
        )
        log.info("admin API listening on %s:%d", config.admin_ip, self.port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.connections.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the connections, letting requests finish
            self._runner = None
        if self._listener is not None:
            await self._listener.wait_closed()
            self._listener = None
            log.info("admin API stopped")

    # -- handlers --------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        server = self.server
        stats = server.broker.stats()
        unsent = [c.unsent for c in server.connections]
        upstream = getattr(server.broker, "upstream_status", None)
        return web.json_response(
            {
                **({"upstream": upstream()} if upstream is not None else {}),
                "version": kraken.__version__,
                "pid": os.getpid(),
                "uptime_seconds": _uptime(server),
                "listen": f"{server.config.listen_ip}:{server.port}",
                "clients": len(server.connections),
                "draining": server.draining,
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
                # replies written but not yet taken by the sockets (they count against
                # max_queued_bytes with the client's queue)
                "unsent_bytes": sum(unsent),
                "largest_unsent_bytes": max(unsent, default=0),
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
        except ValueError as error:
            return _error(400, f"body is not JSON ({error}): send {LEVEL_BODY}")
        except RecursionError:
            return _error(400, f"body is JSON nested too deep to read: send {LEVEL_BODY}")
        if not isinstance(body, dict):
            return _error(400, f"body is JSON but not an object: send {LEVEL_BODY}")
        level = body.get("level")
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
        # any body, as before drains were added; only a "drain" given must be right
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            body = None
        drain = body.get("drain") if isinstance(body, dict) else None
        number = isinstance(drain, int | float) and not isinstance(drain, bool)
        if drain is None:
            drain = self.server.config.shutdown_drain_seconds
        elif not (number and 0 <= drain < INF):
            return _error(400, "drain must be a number of seconds, 0 or more")
        log.info(
            "shutdown requested through the admin API by %s (drain %g s)", request.remote, drain
        )
        response = web.json_response(
            {"status": "shutting down", "drain_seconds": drain}, status=202
        )
        # send the whole answer before asking: the shutdown closes this very server
        await response.prepare(request)
        await response.write_eof()
        asyncio.get_running_loop().call_soon(self._request_shutdown, float(drain))
        return response

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})

    def _connected(self) -> list[tuple[Session[Any], Client]]:
        """The connected clients with their sessions, by id."""
        pairs = [(c.session, c) for c in self.server.connections if c.session is not None]
        pairs.sort(key=lambda pair: pair[0].id)
        return pairs
