"""The ``polaris.digitaltwin.DigitalTwin`` servicer.

Every RPC: validate (INVALID_ARGUMENT with a message) → admission (at most
``max_concurrent_queries`` model calls run at once and as many wait; past that
RESOURCE_EXHAUSTED instead of an unbounded pile-up, ``Busy``) → the model call under the
smaller of the configured per-RPC timeout and the client's deadline → map back.
A model that fails or overruns the configured timeout is answered in-band
(``success=false`` + explanation), as the original's clients expect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import orjson

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.core.config import redact_config
from twin.core.errors import Busy, InvalidRequest, ModelError
from twin.core.events import new_id
from twin.models.domain import DiagnosisResult, QueryResult, SimulationResult
from twin.models.registry import available_models
from twin.models.state_queries import series_stats
from twin.runtime import TwinRuntime
from twin.service import mapping, watch
from twin.service.auth import (
    AuthPolicy,
    Caller,
    Decision,
    audit,
    authorize,
    caller_of,
    is_loopback_host,
)
from twin.service.budget import call_within
from twin.service.rpc_metrics import RpcMetrics
from twin.service.spans import model_call_span, record_outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

ManageResult = tuple[bool, str, dict[str, str]]
ManageHandler = Callable[["DigitalTwinServicer", dict[str, str]], Awaitable[ManageResult]]
_MANAGE: dict[str, ManageHandler] = {}  # operation name → handler, in the order documented
_NO_DURABILITY = (
    "{op} needs snapshots (state.snapshot_dir) or JetStream ingestion (nats.jetstream.enabled)"
)


def _operation(name: str) -> Callable[[ManageHandler], ManageHandler]:
    """Registers a ``Manage`` operation handler under its wire name."""

    def register(handler: ManageHandler) -> ManageHandler:
        _MANAGE[name] = handler
        return handler

    return register


class Admission:
    """A semaphore with a bounded waiting room."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self._waiting = 0

    async def __aenter__(self) -> None:
        if self._sem.locked() and self._waiting >= self.limit:
            raise Busy()
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()


class DigitalTwinServicer(pb_grpc.DigitalTwinServicer):
    def __init__(self, runtime: TwinRuntime) -> None:
        self.rt = runtime
        self.perf = runtime.config.performance
        self.admission = Admission(self.perf.max_concurrent_queries)
        self.rpc_metrics = RpcMetrics().register(runtime.registry)
        self.auth = AuthPolicy.from_config(runtime.config.auth, runtime.config.grpc.host)
        # Open Watch/SSE streams, shared by every transport (twin.service.watch).
        self.watchers = watch.Watchers(
            runtime.state.events, runtime.config.events, runtime.config.grpc.max_workers // 2
        )

    async def _run(
        self,
        method: str,
        op: str,
        timeout: float,
        context: grpc.aio.ServicerContext,
        request: Any,
        call: Callable[[], Awaitable[T]],
    ) -> T | str:
        """A model call under admission, timeout and its span: the result or a failure text."""
        remaining = context.time_remaining()
        budget = timeout if remaining is None else min(timeout, remaining)
        try:
            async with self.admission:
                with model_call_span(op, self.rt.model_name, request) as span:
                    t0 = time.perf_counter()
                    try:
                        result = await call_within(call(), budget)
                    finally:
                        elapsed = time.perf_counter() - t0
                        self.rpc_metrics.observe_model(op, elapsed)
                    record_outcome(span, result, elapsed)
                    return result
        except Busy:
            self.rpc_metrics.reject("performance.max_concurrent_queries")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.perf.max_concurrent_queries} model calls running and as many waiting "
                "(performance.max_concurrent_queries); retry later",
            )
            raise  # unreachable: abort raises
        except TimeoutError:
            if remaining is not None and remaining <= timeout:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{method} did not finish within the client's deadline ({remaining:.2f}s)",
                )
            return f"{method} timed out after {budget:.1f}s (performance timeout)"
        except InvalidRequest:
            raise
        except ModelError as exc:
            return f"world model error: {exc}"
        except Exception as exc:  # noqa: BLE001 - in-band failure, logged with traceback
            log.exception("%s failed", method)
            return f"internal error in world model: {exc.__class__.__name__}: {exc}"

    async def _observe(
        self, method: str, context: grpc.aio.ServicerContext, handler: Callable[[], Awaitable[T]]
    ) -> T:
        t0 = time.perf_counter()
        code = "OK"
        try:
            return await handler()
        except InvalidRequest as exc:
            # Recorded before abort: the client has the status as soon as abort sends
            # it, so a get_metrics right after must already count it (was a flaky race).
            code = ""
            self.rpc_metrics.observe_rpc(method, time.perf_counter() - t0, "INVALID_ARGUMENT")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception:
            code = context.code().name if context.code() is not None else "UNKNOWN"
            raise
        finally:
            if code:
                self.rpc_metrics.observe_rpc(method, time.perf_counter() - t0, code)

    # ------------------------------------------------------------------ RPCs
    async def Query(
        self, request: pb.QueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryResponse:
        async def handle() -> pb.QueryResponse:
            req = mapping.to_query(request, self.rt.state.limits)
            out = await self._run(
                "Query",
                "query",
                self.perf.query_timeout_sec,
                context,
                req,
                lambda: self.rt.model.query(req),
            )
            res = out if isinstance(out, QueryResult) else QueryResult(False, None, 0.0, out)
            resp = mapping.from_query(req.query_id, res)
            dur = self.rt.durability
            if dur is not None and dur.applied_sequence is not None:
                resp.metadata["applied_sequence"] = str(dur.applied_sequence)
            return resp

        return await self._observe("Query", context, handle)

    async def Simulate(
        self, request: pb.SimulationRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimulationResponse:
        async def handle() -> pb.SimulationResponse:
            req = mapping.to_simulation(request, self.rt.state.limits)
            t0 = time.perf_counter()
            out = await self._run(
                "Simulate",
                "simulate",
                self.perf.simulation_timeout_sec,
                context,
                req,
                lambda: self.rt.simulate(req),
            )
            res = (
                out
                if isinstance(out, SimulationResult)
                else SimulationResult(False, explanation=out)
            )
            return mapping.from_simulation(req.simulation_id, res, time.perf_counter() - t0)

        return await self._observe("Simulate", context, handle)

    async def Diagnose(
        self, request: pb.DiagnosisRequest, context: grpc.aio.ServicerContext
    ) -> pb.DiagnosisResponse:
        async def handle() -> pb.DiagnosisResponse:
            req = mapping.to_diagnosis(request, self.rt.state.limits)
            out = await self._run(
                "Diagnose",
                "diagnose",
                self.perf.diagnosis_timeout_sec,
                context,
                req,
                lambda: self.rt.model.diagnose(req),
            )
            res = (
                out if isinstance(out, DiagnosisResult) else DiagnosisResult(False, explanation=out)
            )
            watch.publish_diagnosis(self.rt.state.events, req, res)
            return mapping.from_diagnosis(req.diagnosis_id, res)

        return await self._observe("Diagnose", context, handle)

    async def Watch(self, request: pb.WatchRequest, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        await watch.serve_grpc(self.watchers, request, context)

    async def Manage(
        self, request: pb.ManagementRequest, context: grpc.aio.ServicerContext
    ) -> pb.ManagementResponse:
        async def handle() -> pb.ManagementResponse:
            op = request.operation
            handler = _MANAGE.get(op)
            if handler is None:
                raise InvalidRequest(
                    f"unknown operation {op!r}; expected one of {', '.join(_MANAGE)}", "operation"
                )
            rid = request.request_id or new_id()
            self.rt.state.limits.check_parameters(request.parameters)
            params = dict(request.parameters)
            caller = None
            if op in self.auth.protected:
                caller = await self._authorize(op, params, context)
            try:
                success, result, metrics = await asyncio.wait_for(
                    handler(self, params), self.perf.management_timeout_sec
                )
            except TimeoutError:
                success, result, metrics = (
                    False,
                    f"{op} timed out after {self.perf.management_timeout_sec}s",
                    {},
                )
            except InvalidRequest:
                raise
            except Exception as exc:  # noqa: BLE001 - in-band failure
                log.exception("Manage %s failed", op)
                success, result, metrics = False, f"{op} failed: {exc}", {}
            if caller is not None:
                audit(
                    op,
                    params,
                    caller[0],
                    caller[1],
                    "success" if success else f"failed: {result[:200]}",
                )
            health = await self.rt.health()
            return pb.ManagementResponse(
                request_id=rid,
                success=success,
                result=result,
                metrics=metrics,
                health_status=mapping.from_health(health),
                timestamp=mapping.now_iso(),
            )

        return await self._observe("Manage", context, handle)

    async def _authorize(
        self, op: str, params: dict[str, str], context: Any
    ) -> tuple[Caller, Decision]:
        """The caller of a protected operation, or an abort (UNAUTHENTICATED, PERMISSION_DENIED)."""
        caller = caller_of(context)
        policy = self.auth
        listener = getattr(context, "listener_host", None)  # the REST gateway's own listener
        if listener is not None:
            policy = dataclasses.replace(policy, loopback_listener=is_loopback_host(listener))
        decision = authorize(op, caller, policy)
        if not decision.allowed:
            audit(op, params, caller, decision)
            self.rpc_metrics.auth_denied[(op, decision.code)] += 1
            await context.abort(getattr(grpc.StatusCode, decision.code), decision.reason)
        return caller, decision

    # ------------------------------------------------------------ Manage operations
    # One method per operation, registered in ``_MANAGE`` by ``@_operation``; each gets
    # the request's parameters and returns (success, result text, metrics map).

    @_operation("health_check")
    async def _health_check(self, params: dict[str, str]) -> ManageResult:
        h = await self.rt.health()
        return h.status in ("healthy", "degraded"), h.status, {}

    @_operation("get_metrics")
    async def _get_metrics(self, params: dict[str, str]) -> ManageResult:
        snap = self.rt.metrics_snapshot()
        return True, orjson.dumps(snap).decode(), {k: _fmt(v) for k, v in snap.items()}

    @_operation("reload_model")
    async def _reload_model(self, params: dict[str, str]) -> ManageResult:
        settings: dict[str, Any] | None = None
        if "settings" in params:
            try:
                settings = orjson.loads(params["settings"])
            except orjson.JSONDecodeError as exc:
                raise InvalidRequest(f"not JSON: {exc}", "parameters.settings") from exc
            if not isinstance(settings, dict):
                raise InvalidRequest("must be a JSON object", "parameters.settings")
        impl = params.get("implementation")
        if impl and impl not in available_models():
            raise InvalidRequest(
                f"unknown world model {impl!r}; available: {', '.join(available_models())}",
                "parameters.implementation",
            )
        msg = await self.rt.reload(impl, settings)
        return True, msg, {"model": self.rt.model_name}

    @_operation("reset_state")
    async def _reset_state(self, params: dict[str, str]) -> ManageResult:
        dropped = self.rt.reset()
        text = (
            f"state reset: dropped {dropped['samples']} samples, {dropped['actions']} actions, "
            f"{dropped['calibrations']} calibrations"
        )
        return True, text, {k: str(v) for k, v in dropped.items()}

    @_operation("list_models")
    async def _list_models(self, params: dict[str, str]) -> ManageResult:
        return True, orjson.dumps(available_models()).decode(), {"current": self.rt.model_name}

    @_operation("get_config")
    async def _get_config(self, params: dict[str, str]) -> ManageResult:
        return True, orjson.dumps(redact_config(self.rt.config.raw)).decode(), {}

    @_operation("replay")
    async def _replay(self, params: dict[str, str]) -> ManageResult:
        dur = self.rt.durability
        if dur is None:
            return False, _NO_DURABILITY.format(op="replay"), {}
        from_sequence, from_time = mapping.parse_replay_params(params)
        if not dur.replay_available:
            return False, "replay needs JetStream ingestion (nats.jetstream.enabled: true)", {}
        status = await dur.replay(from_sequence, from_time)
        return True, orjson.dumps(status).decode(), {k: str(v) for k, v in status.items()}

    @_operation("replay_status")
    async def _replay_status(self, params: dict[str, str]) -> ManageResult:
        dur = self.rt.durability
        if dur is None:
            return False, _NO_DURABILITY.format(op="replay_status"), {}
        status = dur.replay_status()
        return True, orjson.dumps(status).decode(), {k: str(v) for k, v in status.items()}

    @_operation("snapshot")
    async def _snapshot(self, params: dict[str, str]) -> ManageResult:
        dur = self.rt.durability
        if dur is None:
            return False, _NO_DURABILITY.format(op="snapshot"), {}
        path = await dur.snapshot_now()
        if path is None:
            return (
                False,
                "no snapshot written (state.snapshot_dir is not set, or the write failed; see "
                "health)",
                {},
            )
        return (
            True,
            path.name,
            {"applied_sequence": str(dur.applied_sequence or 0), "file": path.name},
        )

    @_operation("series_stats")
    async def _series_stats(self, params: dict[str, str]) -> ManageResult:
        system = params.get("system") or params.get("source")
        stats = series_stats(self.rt.state, system, params.get("metric"))
        totals = {
            "series": str(len(stats["series"])),
            "samples": str(stats["samples"]),
            "sum": repr(stats["sum"]),
        }
        dur = self.rt.durability
        if dur is not None and dur.applied_sequence is not None:
            totals["applied_sequence"] = str(dur.applied_sequence)
        return True, orjson.dumps(stats).decode(), totals

    @_operation("prediction_report")
    async def _prediction_report(self, params: dict[str, str]) -> ManageResult:
        """Recent predictions with their outcomes, and the aggregates per system, model, kind."""
        system, kind, limit = mapping.parse_report_params(params)
        led = self.rt.state.ledger
        rows = led.report(system, kind, limit)
        aggs = [
            a
            for a in led.aggregates()
            if (system is None or a["system"] == system) and (kind is None or a["kind"] == kind)
        ]
        totals = led.totals()
        body = {"predictions": rows, "aggregates": aggs, "totals": totals}
        if system is not None:
            body["skill"] = {
                k: _skill_dict(led.skill(system, k))
                for k in ("forecast", "what_if", "plan", "what_if_baseline")
            }
        figures = {"returned": str(len(rows))} | {k: _fmt(v) for k, v in totals.items()}
        return True, orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode(), figures


MANAGE_OPERATIONS = tuple(_MANAGE)


def _skill_dict(sk: Any) -> dict[str, float | int | None]:
    out: dict[str, float | int | None] = {}
    for k in ("n", "mase", "rel_error", "coverage", "interval_scale", "within_tolerance"):
        v = getattr(sk, k)
        out[k] = (
            v
            if isinstance(v, int) or (isinstance(v, float) and v == v and abs(v) != float("inf"))
            else None
        )
    return out


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"
