"""Fixtures of the observability tests: clean OpenTelemetry globals, traced twins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.util._once import Once

from twin.app import TwinApp
from twin.observability.setup import instrument_app

from support import twin_config


def reset_tracing_globals() -> None:
    """The global tracer provider can be set once per process; tests need one each."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def clean_tracing() -> Iterator[None]:
    reset_tracing_globals()
    try:
        yield
    finally:
        reset_tracing_globals()


InstrumentedTwin = Callable[..., Awaitable[TwinApp]]


@pytest.fixture
async def instrumented_twin() -> AsyncIterator[InstrumentedTwin]:
    """Starts TwinApps wired by ``instrument_app``; stops them and their exporters."""
    started: list[tuple[TwinApp, Callable[[], None]]] = []

    async def factory(
        nats_url: str,
        *,
        environ: dict[str, str] | None = None,
        span_exporter: Any = None,
        **sections: dict[str, Any],
    ) -> TwinApp:
        sections.setdefault("world_model", {}).setdefault("implementation", "mock")
        cfg = twin_config(nats_url, **sections)
        app = TwinApp(cfg)
        shutdown = instrument_app(app, cfg, environ=environ or {}, span_exporter=span_exporter)
        started.append((app, shutdown))
        await app.start()
        return app

    try:
        yield factory
    finally:
        for app, shutdown in reversed(started):
            try:
                await app.stop()
            finally:
                shutdown()
