"""Load generator (the seed's ``generate_test_load``): realistic POLARIS telemetry
in the original wire formats, at a target rate, with a progress bar.

Two systems are simulated: ``swim`` (SWIM's monitor metrics: servers, dimmer,
arrival rate, M/M/c-style utilisation and response times) and ``web_cluster``
(cpu/memory/response time/request rate/instance count of an M/M/6 queue). The arrival
rate follows a daily-like sine with noise, so the statistical model sees seasonality and
trends. Each telemetry event is published on the stream subject, or grouped into batch
messages (``--mode batch``, 100 events or 1 s like the original monitor).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class SwimLike:
    """A tiny deterministic-by-seed web-tier model producing SWIM's metric set."""

    def __init__(
        self, seed: int = 1, servers: int = 3, max_servers: int = 10, service_rate: float = 20.0
    ) -> None:
        self.rng = random.Random(seed)
        self.servers = servers
        self.max_servers = max_servers
        self.mu = service_rate
        self.dimmer = 1.0

    def sample(self, t: float) -> list[dict[str, Any]]:
        rng = self.rng
        lam = 40.0 + 15.0 * math.sin(2 * math.pi * t / 3600.0) + rng.gauss(0, 2.0)
        lam = max(1.0, lam)
        cap = self.servers * self.mu
        util = min(0.99, lam / cap)
        base_rt = 1000.0 / self.mu / (1.0 - util)  # ms, M/M/1-like per server
        opt_rt = base_rt * 1.6
        avg_rt = self.dimmer * opt_rt + (1 - self.dimmer) * base_rt
        ts = _iso(t)
        ev = [
            ("dimmer", self.dimmer, "ratio"),
            ("active_servers", float(self.servers), "count"),
            ("servers", float(self.servers), "count"),
            ("max_servers", float(self.max_servers), "count"),
            ("arrival_rate", lam, "req/s"),
            ("basic_response_time", base_rt + rng.gauss(0, 2), "ms"),
            ("optional_response_time", opt_rt + rng.gauss(0, 3), "ms"),
            ("basic_throughput", lam * (1 - self.dimmer) + rng.gauss(0, 0.5), "req/s"),
            ("optional_throughput", lam * self.dimmer + rng.gauss(0, 0.5), "req/s"),
            ("server_utilization", util, "ratio"),
            ("average_response_time", avg_rt + rng.gauss(0, 2), "ms"),
        ]
        ev += [
            (f"utilization_server_{i + 1}", min(1.0, max(0.0, util + rng.gauss(0, 0.03))), "ratio")
            for i in range(self.servers)
        ]
        return [
            {
                "name": n,
                "value": v,
                "unit": u,
                "timestamp": ts,
                "source": "swim",
                "tags": {"system": "swim"},
            }
            for n, v, u in ev
        ]


WEB_INSTANCES = 6
WEB_SERVICE_SEC = 0.02  # per request on one instance


def _mmc_response(lam: float, c: int, s: float) -> float:
    """Mean response time (s) of M/M/c (Erlang C); the tail of a saturated queue is capped."""
    rho = min(lam * s / c, 0.99)
    a = rho * c
    b = 1.0
    for k in range(1, c + 1):  # Erlang B by the stable recursion
        b = a * b / (k + a * b)
    pw = b / (1.0 - rho + rho * b)
    return s + pw * s / (c * (1.0 - rho))


def web_cluster(rng: random.Random, t: float) -> list[dict[str, Any]]:
    """A web cluster of ``WEB_INSTANCES`` instances behind one queue (M/M/c), named the way
    a generic monitor names it: instance_count, request_rate, cpu_usage, response_time."""
    load = 0.5 + 0.2 * math.sin(2 * math.pi * t / 3600.0)
    lam = max(1.0, 400 * load + rng.gauss(0, 8))
    rho = min(1.0, lam * WEB_SERVICE_SEC / WEB_INSTANCES)
    rt = 1000.0 * _mmc_response(lam, WEB_INSTANCES, WEB_SERVICE_SEC)
    ts = _iso(t)
    tags = {"tier": "web"}
    return [
        {
            "name": "cpu_usage",
            "value": round(100 * min(1.0, max(0.0, rho + rng.gauss(0, 0.02))), 3),
            "unit": "percent",
            "timestamp": ts,
            "source": "web_cluster",
            "tags": tags,
        },
        {
            "name": "memory_usage",
            "value": round(60 + rng.gauss(0, 1), 3),
            "unit": "percent",
            "timestamp": ts,
            "source": "web_cluster",
            "tags": tags,
        },
        {
            "name": "response_time",
            "value": round(rt * (1 + rng.gauss(0, 0.03)), 3),
            "unit": "ms",
            "timestamp": ts,
            "source": "web_cluster",
            "tags": tags,
        },
        {
            "name": "request_rate",
            "value": round(lam, 3),
            "unit": "req/s",
            "timestamp": ts,
            "source": "web_cluster",
            "tags": tags,
        },
        {
            "name": "instance_count",
            "value": float(WEB_INSTANCES),
            "unit": "count",
            "timestamp": ts,
            "source": "web_cluster",
            "tags": tags,
        },
    ]


def telemetry(
    seed: int = 1, start: float | None = None, step: float = 1.0, wall_clock: bool = False
) -> Iterator[dict[str, Any]]:
    """An endless stream of telemetry events; simulated time advances ``step`` s per round,
    or follows the wall clock (``wall_clock``: event time = publish time, for live demos)."""
    swim = SwimLike(seed)
    rng = random.Random(seed + 1)
    t = time.time() if start is None else start
    while True:
        if wall_clock:
            t = time.time()
        yield from swim.sample(t)
        yield from web_cluster(rng, t)
        t += step


def batch_message(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "batch_id": str(uuid.uuid4()),
            "batch_timestamp": _iso(time.time()),
            "count": len(events),
            "events": events,
        }
    )


def execution_result(
    action_type: str = "ADD_SERVER", target: str = "swim", success: bool = True
) -> bytes:
    now = time.time()
    return orjson.dumps(
        {
            "action_id": str(uuid.uuid4()),
            "action_type": action_type,
            "status": "success" if success else "failed",
            "success": success,
            "message": f"{action_type} on {target}",
            "started_at": _iso(now - 1.5),
            "finished_at": _iso(now),
            "duration_sec": 1.5,
            "output": {"target": target},
            "error": None,
            "retry_count": 0,
            "metadata": {"target": target},
            "target": target,
        }
    )


async def run(args: argparse.Namespace) -> int:
    import nats
    import nats.errors

    from twin.ingest.nats_ingest import redact_url
    from twin.observability.propagation import inject_headers

    connected = False

    async def on_error(exc: Exception) -> None:  # one line, not nats-py's traceback
        if connected and not args.quiet:
            print(f"nats: {exc.__class__.__name__}: {exc}", file=sys.stderr)

    try:
        nc = await nats.connect(
            args.nats_url, max_reconnect_attempts=5, reconnect_time_wait=0.5, error_cb=on_error
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        print(
            f"error: cannot reach NATS at {redact_url(args.nats_url)} ({exc.__class__.__name__}: "
            f"{exc}); "
            "start a twin (it embeds nats-server) or pass --nats-url / set $NATS_URL",
            file=sys.stderr,
        )
        return 1
    connected = True
    rate = max(1.0, float(args.telemetry_rate))
    total = int(rate * args.duration)
    gen = telemetry(args.seed, step=args.sim_step, wall_clock=args.realtime_clock)
    bar = None
    if not args.quiet:
        try:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="ev", desc="publishing", file=sys.stderr)
        except ImportError:
            bar = None
    sent = 0
    t0 = time.perf_counter()
    tick = 0.05 if rate < 100_000 else 0.01
    pending: list[dict[str, Any]] = []
    try:
        while sent < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            chunk = due - sent
            for _ in range(chunk):
                ev = next(gen)
                if args.mode == "stream":
                    await nc.publish(
                        args.stream_subject, orjson.dumps(ev), headers=inject_headers()
                    )
                else:
                    pending.append(ev)
                    if len(pending) >= args.batch_size:
                        await nc.publish(
                            args.batch_subject, batch_message(pending), headers=inject_headers()
                        )
                        pending = []
            sent += chunk
            if bar is not None and chunk:
                bar.update(chunk)
            if (
                args.actions_every
                and sent // args.actions_every != (sent - chunk) // args.actions_every
            ):
                await nc.publish(args.execution_subject, execution_result())
            await asyncio.sleep(tick)
        if pending:
            await nc.publish(args.batch_subject, batch_message(pending), headers=inject_headers())
        await nc.flush()
    finally:
        if bar is not None:
            bar.close()
        await nc.drain()
    elapsed = time.perf_counter() - t0
    print(
        f"published {sent} events in {elapsed:.1f}s ({sent / elapsed:.0f} events/s) to "
        f"{args.nats_url}",
        file=sys.stderr,
    )
    return 0


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server (default: $NATS_URL or the embedded twin's nats://127.0.0.1:4222)",
    )
    p.add_argument("--telemetry-rate", type=float, default=100.0, help="events per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument(
        "--mode",
        choices=("stream", "batch"),
        default="stream",
        help="one event per message, or batch messages",
    )
    p.add_argument(
        "--batch-size", type=int, default=100, help="events per message with --mode batch"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulated telemetry")
    p.add_argument(
        "--sim-step", type=float, default=1.0, help="simulated seconds between rounds of samples"
    )
    p.add_argument(
        "--realtime-clock",
        action="store_true",
        help="event time = publish time (default: simulated time advances --sim-step per round)",
    )
    p.add_argument(
        "--actions-every",
        type=int,
        default=0,
        help="publish an execution result every N events (0 = never)",
    )
    p.add_argument(
        "--stream-subject",
        default="polaris.telemetry.events.stream",
        help="subject of single events",
    )
    p.add_argument(
        "--batch-subject",
        default="polaris.telemetry.events.batch",
        help="subject of batch messages",
    )
    p.add_argument(
        "--execution-subject",
        default="polaris.execution.results",
        help="subject of execution results",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="generate_test_load", description=__doc__)
    configure_parser(p)
    return asyncio.run(run(p.parse_args(argv)))
