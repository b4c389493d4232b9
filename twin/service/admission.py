"""Admission control at the transport: ``grpc.max_workers`` bounds the DigitalTwin RPCs in
flight, while health and reflection are never refused.

gRPC core's own ``maximum_concurrent_rpcs`` counts every service alike, so under a flood
a Kubernetes liveness probe got RESOURCE_EXHAUSTED and the pod was restarted for being
busy; and because the core limit (10) sat below the model admission's capacity (10
running + 10 waiting), ``performance.max_concurrent_queries`` never fired. Here:

- model calls (Query, Simulate, Diagnose) are admitted by the servicer's ``Admission``
  (``max_concurrent_queries`` running, as many waiting): the documented source of
  RESOURCE_EXHAUSTED for them;
- this interceptor caps all unary DigitalTwin RPCs at ``max_workers`` on top of what the
  model admission can hold (``2 × max_concurrent_queries``), so it bounds what the model
  admission does not see (Manage floods) and never preempts it;
- health checks, reflection and server streams pass untouched.

Both count their refusals in ``rpc_rejected_busy_total`` by limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class InFlightLimit(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types
    def __init__(
        self, limit: int, on_reject: Callable[[str], None], setting: str = "grpc.max_workers"
    ) -> None:
        self.limit = limit
        self.in_flight = 0
        self._on_reject = on_reject
        self._setting = setting
        # method -> (the service's handler, its limited wrapper): built once per method, not
        # per RPC. Bounded by the registered methods (unknown ones have no handler).
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._limit(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _limit(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behaviour = handler.unary_unary

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.in_flight >= self.limit:
                self._on_reject(self._setting)
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self.limit} DigitalTwin RPCs in flight ({self._setting} plus the model's "
                    "admission capacity); retry later",
                )
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return grpc.unary_unary_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
