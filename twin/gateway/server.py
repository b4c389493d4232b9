"""The twin's HTTP face: the REST/JSON gateway, server-sent events, health probes,
the OpenAPI document and the web console, on one port (``http.port``, default 8080).

One mapping, several transports: ``POST /v1/<rpc>`` parses the body with
``json_format`` into the proto request and runs the gRPC servicer's own method with an
``HttpContext``; so validation, admission (``performance.max_concurrent_queries``),
timeouts, RPC metrics and the diagnosis event are the gRPC ones, and only the status
is translated (INVALID_ARGUMENT → 400, RESOURCE_EXHAUSTED → 429, DEADLINE_EXCEEDED →
504, UNAVAILABLE → 503, UNAUTHENTICATED → 401, PERMISSION_DENIED → 403). Like gRPC's
``maximum_concurrent_rpcs``, at most ``grpc.max_workers`` RPCs run at once (then 429);
bodies are limited to ``grpc.max_message_size`` (then 413); TLS and mTLS use the
``grpc.tls_*`` files.

Why aiohttp: it is asyncio-native (the gateway runs on the twin's own loop, beside
grpc.aio, with no thread hand-off to the store), does streaming responses for SSE,
TLS from an ``ssl.SSLContext`` and static files, and was already installed (kopf
depends on it). Starlette would need an ASGI server (uvicorn) on top; the standard
library's ``http.server`` is threaded and blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from twin._proto import digital_twin_pb2 as pb
from twin.core.config import GrpcConfig, HttpConfig
from twin.core.errors import InvalidRequest
from twin.core.notify import WatcherDropped, event_dict
from twin.gateway import openapi
from twin.gateway.context import HTTP_STATUS, Aborted, HttpContext, parse_grpc_timeout
from twin.service.servicer import DigitalTwinServicer
from twin.service.watch import TooManyWatchers, parse_watch

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080
HEARTBEAT_SEC = 15.0
WRITE_TIMEOUT_SEC = 10.0
JSON = "application/json"
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

RPCS: dict[str, tuple[str, type[Message]]] = {
    "query": ("Query", pb.QueryRequest),
    "simulate": ("Simulate", pb.SimulationRequest),
    "diagnose": ("Diagnose", pb.DiagnosisRequest),
    "manage": ("Manage", pb.ManagementRequest),
}

Readiness = Callable[[], tuple[bool, str]]


def to_json(msg: Message) -> dict[str, Any]:
    """Canonical proto3 JSON with the proto's field names and every field present
    (``grpcurl -emit-defaults`` prints the same)."""
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"code": code.value[0], "status": code.name, "message": message}


def error_response(code: grpc.StatusCode, message: str, status: int | None = None) -> web.Response:
    return web.json_response(
        error_body(code, message), status=status or HTTP_STATUS.get(code, 500), dumps=_dumps
    )


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def ssl_context(cfg: GrpcConfig) -> ssl.SSLContext | None:
    """TLS from the gRPC files; with ``tls_client_ca_file`` clients must present a
    certificate signed by it (mTLS), as for gRPC."""
    if not cfg.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file or None)
    if cfg.tls_client_ca_file:
        ctx.load_verify_locations(cfg.tls_client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def console_dir() -> Path:
    return Path(str(resources.files("twin.gateway").joinpath("console")))


@web.middleware
async def _headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413:
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body too large: {exc.text}", 413
            )
        if exc.status >= 400 and exc.content_type != JSON:
            code = grpc.StatusCode.NOT_FOUND if exc.status == 404 else grpc.StatusCode.UNIMPLEMENTED
            return error_response(
                code, f"{exc.reason}: {request.method} {request.path}", exc.status
            )
        raise
    if not resp.prepared:  # a stream (SSE) set its headers before it started
        resp.headers["Server"] = "polaris-twin"  # not the library and its version
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
    return resp


class HttpGateway:
    def __init__(
        self,
        cfg: HttpConfig,
        grpc_cfg: GrpcConfig,
        servicer: DigitalTwinServicer,
        readiness: Readiness,
    ) -> None:
        self.cfg = cfg
        self.grpc_cfg = grpc_cfg
        self.servicer = servicer
        self.readiness = readiness
        self.max_inflight = grpc_cfg.max_workers
        self.inflight = 0
        self.requests = 0
        self.rejected_busy = 0
        self.port = 0
        self.scheme = "https" if grpc_cfg.tls_cert_file else "http"
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.app = self._build()

    # ------------------------------------------------------------------ wiring
    def _build(self) -> web.Application:
        app = web.Application(
            client_max_size=self.grpc_cfg.max_message_size, middlewares=[_headers]
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/openapi.json", self._openapi)
        for name in RPCS:
            app.router.add_post(f"/v1/{name}", self._rpc)
        app.router.add_get("/v1/watch", self._watch)
        if self.cfg.console:
            app.router.add_get("/", self._index)
            app.router.add_static(
                "/console/", console_dir(), show_index=False, append_version=False
            )
        return app

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await runner.setup()
        ctx = ssl_context(self.grpc_cfg)
        try:
            port = max(0, self.cfg.port)  # -1 = any free port
            site = web.TCPSite(runner, self.cfg.host, port, ssl_context=ctx, reuse_address=True)
            await site.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.cfg.port != DEFAULT_PORT:
                await runner.cleanup()
                raise
            log.warning(
                "HTTP port %d is taken; serving HTTP on a free port instead (set http.port)",
                self.cfg.port,
            )
            site = web.TCPSite(runner, self.cfg.host, 0, ssl_context=ctx)
            await site.start()
        self._runner = runner
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info(
            "HTTP gateway on %s://%s:%d (console: %s)",
            self.scheme,
            self.cfg.host,
            self.port,
            "/" if self.cfg.console else "off",
        )

    async def stop(self) -> None:
        """Ends open event streams, then lets in-flight requests finish (bounded)."""
        for task in tuple(self._streams):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def register(self, registry: Any) -> None:
        """Figures on the twin's metrics registry (RPC outcomes are counted by the servicer)."""
        from twin.core.metrics import Figures

        f = Figures(registry)
        f.counter(
            "http_requests", "REST calls received by the HTTP gateway.", lambda: self.requests
        )
        f.counter(
            "http_rejected_busy",
            "REST calls refused: grpc.max_workers in flight (429).",
            lambda: self.rejected_busy,
        )
        f.gauge("http_inflight", "REST calls in flight.", lambda: self.inflight)

    # ------------------------------------------------------------------ probes, docs, console
    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "SERVING"}, dumps=_dumps)

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, reason = self.readiness()
        body = {"status": "SERVING" if ready else "NOT_SERVING"}
        if reason:
            body["reason"] = reason
        return web.json_response(body, status=200 if ready else 503, dumps=_dumps)

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document(), dumps=_dumps)

    async def _index(self, request: web.Request) -> web.FileResponse:
        resp = web.FileResponse(console_dir() / "index.html")
        resp.headers["Cache-Control"] = "no-cache"
        # Only this origin: nothing is fetched from elsewhere (air-gapped clusters).
        resp.headers["Content-Security-Policy"] = CONSOLE_CSP
        return resp

    # ------------------------------------------------------------------ REST
    def _context(self, request: web.Request, deadline: float | None) -> HttpContext:
        peer = request.remote or ""
        auth: dict[str, list[bytes]] = {}
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if cert:
            names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
            auth = {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [n.encode() for n in names],
            }
        return HttpContext(request.headers, f"ipv4:{peer}" if peer else "", deadline, auth)

    async def _rpc(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[-1]
        method, request_cls = RPCS[name]
        self.requests += 1
        if self.inflight >= self.max_inflight:
            self.rejected_busy += 1
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {self.max_inflight} requests in flight (grpc.max_workers); retry later",
            )
        self.inflight += 1
        try:
            return await self._call(request, method, request_cls)
        finally:
            self.inflight -= 1

    async def _call(
        self, request: web.Request, method: str, request_cls: type[Message]
    ) -> web.Response:
        deadline = None
        raw_timeout = request.headers.get("Grpc-Timeout")
        if raw_timeout:
            try:
                deadline = time.monotonic() + parse_grpc_timeout(raw_timeout)
            except ValueError as exc:
                return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        text = await request.text()
        msg = request_cls()
        if text.strip():
            try:
                json_format.Parse(text, msg)
            except json_format.ParseError as exc:
                return error_response(grpc.StatusCode.INVALID_ARGUMENT, f"body: {exc}")
        ctx = self._context(request, deadline)
        handler = getattr(self.servicer, method)
        try:
            if deadline is None:
                resp = await handler(msg, ctx)
            else:
                async with asyncio.timeout_at(
                    asyncio.get_running_loop().time() + (ctx.time_remaining() or 0.0)
                ):
                    resp = await handler(msg, ctx)
        except Aborted as exc:
            return error_response(exc.code, exc.details)
        except TimeoutError:
            return error_response(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{method} did not finish within the client's deadline ({raw_timeout})",
            )
        return web.json_response(to_json(resp), dumps=_dumps)

    # ------------------------------------------------------------------ SSE
    async def _watch(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        systems = [
            s for v in q.getall("systems", []) + q.getall("system", []) for s in v.split(",")
        ]
        kinds = [k for v in q.getall("kinds", []) + q.getall("kind", []) for k in v.split(",")]
        raw_since = request.headers.get("Last-Event-ID") or q.get("since") or "0"
        try:
            since = int(raw_since)
            if since < 0:
                raise ValueError
        except ValueError:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT, f"since: not a sequence number: {raw_since!r}"
            )
        try:
            from_start = q.get("from_start", "").lower() in (
                "1",
                "true",
                "yes",
            ) and not request.headers.get("Last-Event-ID")
            spec = parse_watch(
                pb.WatchRequest(
                    systems=systems, kinds=kinds, since_sequence=since, from_start=from_start
                )
            )
        except InvalidRequest as exc:
            return error_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        watchers = self.servicer.watchers
        try:
            cm = watchers.watch(spec, "sse")
            sub = cm.__enter__()
        except TooManyWatchers as exc:
            return error_response(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Content-Type-Options": "nosniff",
                "Server": "polaris-twin",
            }
        )
        try:
            await resp.prepare(request)
            await resp.write(
                f"retry: 2000\n: last sequence {watchers.bus.last_sequence}\n\n".encode()
            )
            while True:
                try:
                    ev = await asyncio.wait_for(sub.get(), HEARTBEAT_SEC)
                except TimeoutError:
                    await asyncio.wait_for(resp.write(b": keep-alive\n\n"), WRITE_TIMEOUT_SEC)
                    continue
                except WatcherDropped as exc:
                    kind = "shutdown" if exc.shutdown else "dropped"
                    await resp.write(
                        f"event: {kind}\ndata: {_dumps({'reason': exc.reason})}\n\n".encode()
                    )
                    break
                data = _dumps(event_dict(ev))
                frame = f"id: {ev.sequence}\nevent: {ev.kind}\ndata: {data}\n\n".encode()
                try:
                    await asyncio.wait_for(resp.write(frame), WRITE_TIMEOUT_SEC)
                except TimeoutError:
                    watchers.bus.watchers_dropped_total += 1
                    break  # the client stopped reading: drop it
        except ConnectionError:
            pass  # the client went away
        finally:
            self._streams.discard(task)
            cm.__exit__(None, None, None)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp
