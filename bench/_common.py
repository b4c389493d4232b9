"""Shared pieces of the benchmark processes: payloads, ports, RSS, percentiles.

Every load is pre-generated (so producers measure NATS, not JSON encoding) and
bounded in count; every helper process prints JSON lines on stdout: first
``{"ready": ...}`` and, at the end, its result.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
STREAM_SUBJECT = "polaris.telemetry.events.stream"
BATCH_SUBJECT = "polaris.telemetry.events.batch"


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[k]


def events(
    n: int, seed: int = 1, start: float = 1_700_000_000.0, step: float = 1.0
) -> list[dict[str, Any]]:
    """``n`` telemetry events in the original wire shape (the load generator's systems)."""
    from twin.tools.loadgen import telemetry

    gen = telemetry(seed, start=start, step=step)
    return [next(gen) for _ in range(n)]


def stream_payloads(n: int, seed: int = 1) -> list[bytes]:
    import orjson

    return [orjson.dumps(e) for e in events(n, seed)]


def batch_payloads(n_events: int, per_message: int = 100, seed: int = 1) -> list[bytes]:
    from twin.tools.loadgen import batch_message

    evs = events(n_events, seed)
    return [batch_message(evs[i : i + per_message]) for i in range(0, n_events, per_message)]


def python() -> str:
    return sys.executable


def child_env() -> dict[str, str]:
    """Environment of helper processes: bench/ importable, no tracing exporters."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(BENCH) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
