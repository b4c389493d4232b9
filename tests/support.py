"""Helpers shared by tests (importable as ``support``: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twin.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POLARIS_SHARED_DIR", ROOT.parent / "shared"))


def twin_config(nats_url: str | None, **sections: dict[str, Any]) -> Any:
    """A validated TwinConfig on a free gRPC port with test-friendly batching."""
    dt: dict[str, Any] = {
        "grpc": {"host": "127.0.0.1", "port": 0, "grace_period_sec": 1.0},
        "http": {"host": "127.0.0.1", "port": -1},
        "nats": {"batch_timeout_sec": 0.05, "batch_size": 100, "reconnect_wait_sec": 0.2},
        "debugging": {"log_level": "INFO"},
    }
    if nats_url:
        dt["nats"]["url"] = nats_url
    for name, values in sections.items():
        dt.setdefault(name, {}).update(values)
    return load_config(overrides={"digital_twin": dt}, environ={})


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02
) -> None:
    """Polls until ``predicate()`` is true; fails the test with a clear message otherwise."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
