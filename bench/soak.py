"""Soak: does the twin's memory flatten out at its configured bounds?

    python bench/soak.py                 # 5 000 series, 15 000 events/s, 5 min, RSS every 10 s
    python bench/soak.py --quick         # CI size: 1 000 series, 5 000 events/s, 60 s, every 5 s
    python bench/soak.py --max-points 300 --model statistical --rate 15000 --duration 300

A real twin (``python -m twin.cli``, its own process, a real nats-server) ingests a
steady stream of batch messages (100 events each) spread evenly over ``--series``
series (100 metrics per system). Every ``--every`` seconds the twin's RSS is read
from /proc and its counters (series, retained samples, store bytes, events applied)
over gRPC. Once every series holds ``--max-points`` samples the retained samples stop
growing; the report shows whether RSS stops too (the plateau), what it costs per
series, and what ``reset_state`` gives back. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import child_env, free_port  # noqa: E402

BATCH_SUBJECT = "polaris.telemetry.events.batch"


def _rss1(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # gone meanwhile
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rss_of(pid: int) -> int:
    """RSS of a process plus all its descendants (the twin's worker processes count)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss1(p)
        todo.extend(_children(p))
    return total


# ---------------------------------------------------------------- publisher
async def publish(url: str, series: int, rate: float, duration: float) -> None:
    """Steady ``rate`` events/s over ``series`` series, 100 events per message, until
    ``duration`` s; event time = wall clock. Prints {"published": n} at the end."""
    import math
    import random

    import nats
    import orjson

    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    per_msg = 100
    keys = [(f"sys{k // 100:03d}", f"metric_{k % 100:02d}") for k in range(series)]
    rng = random.Random(7)
    level = [rng.uniform(10, 100) for _ in keys]
    msg_rate = rate / per_msg
    t0 = time.perf_counter()
    sent = pos = 0
    while True:
        now = time.perf_counter() - t0
        if now >= duration:
            break
        due = int(now * msg_rate) + 1
        while sent < due:
            t = time.time()
            evs = []
            for _ in range(per_msg):
                k = pos % len(keys)
                pos += 1
                src, name = keys[k]
                v = level[k] * (1 + 0.1 * math.sin(t / 60 + k)) + rng.gauss(0, 1)
                evs.append({"name": name, "value": round(v, 4), "source": src, "timestamp": t})
            await nc.publish(BATCH_SUBJECT, orjson.dumps({"events": evs}))
            sent += 1
        await asyncio.sleep(0.005)
    await nc.flush()
    await nc.close()
    print(json.dumps({"published": sent * per_msg}), flush=True)


# --------------------------------------------------------------------- twin
async def metrics(port: int) -> dict[str, float]:
    import grpc

    from twin._proto import digital_twin_pb2 as pb
    from twin._proto import digital_twin_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        r = await pb_grpc.DigitalTwinStub(ch).Manage(
            pb.ManagementRequest(operation="get_metrics"), timeout=30
        )
        return {k: float(v) for k, v in r.metrics.items()}


async def manage(port: int, op: str) -> bool:
    import grpc

    from twin._proto import digital_twin_pb2 as pb
    from twin._proto import digital_twin_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        r = await pb_grpc.DigitalTwinStub(ch).Manage(pb.ManagementRequest(operation=op), timeout=60)
        return bool(r.success)


async def wait_serving(port: int, proc: asyncio.subprocess.Process, timeout: float = 60) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < end:
            if proc.returncode is not None:
                raise RuntimeError("twin exited during start-up")
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("twin did not become SERVING")


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from twin.ingest.embedded import EmbeddedNatsServer

    nats_server = EmbeddedNatsServer(jetstream=False)
    url = await nats_server.start()
    port = free_port()
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="polaris-soak-") as tmp:
        cfg = {
            "digital_twin": {
                "nats": {"url": url, "queue_maxsize": 2000},
                "grpc": {"host": "127.0.0.1", "port": port},
                "world_model": {"implementation": args.model},
                "state": {"max_points_per_series": args.max_points, "max_age_sec": 0},
                "debugging": {"log_level": "WARNING"},
            }
        }
        cfg_path = Path(tmp) / "soak.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        log = (Path(tmp) / "twin.log").open("wb")
        cmd = [sys.executable, "-m", "twin.cli", "--config", str(cfg_path)]
        if os.environ.get("POLARIS_BENCH_TWIN_CPUS"):  # as in run.py: pin the twin only
            cmd = ["taskset", "-c", os.environ["POLARIS_BENCH_TWIN_CPUS"], *cmd]
        if getattr(args, "profile", ""):  # py-spy record around the twin (pip install py-spy)
            cmd = [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-s",
                "-r",
                "100",
                "-f",
                "raw",
                "-o",
                args.profile,
                "--",
                *cmd,
            ]
        twin = await asyncio.create_subprocess_exec(
            *cmd, stdout=log, stderr=log, env=child_env(), cwd=tmp
        )
        pub = None
        try:
            await wait_serving(port, twin)
            base = rss_of(twin.pid)
            samples.append({"t": 0.0, "rss": base, **_pick(await metrics(port))})
            pub = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__)), "--role", "publisher", "--url", url,
                "--series", str(args.series), "--rate", str(args.rate),
                "--duration", str(args.duration),
                stdout=asyncio.subprocess.PIPE, env=child_env(),
            )  # fmt: skip
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.duration:
                await asyncio.sleep(min(args.every, args.duration - (time.monotonic() - t0)))
                m = await metrics(port)
                samples.append(
                    {"t": round(time.monotonic() - t0, 1), "rss": rss_of(twin.pid), **_pick(m)}
                )
                if getattr(args, "verbose", True):
                    print(_line(samples[-1]), file=sys.stderr, flush=True)
            out, _ = await pub.communicate()
            published = json.loads(out.decode().strip().splitlines()[-1])["published"]
            await asyncio.sleep(2.0)
            end = {"rss": rss_of(twin.pid), **_pick(await metrics(port))}
            await manage(port, "reset_state")
            await asyncio.sleep(1.0)
            after_reset = {"rss": rss_of(twin.pid), **_pick(await metrics(port))}
        finally:
            if pub is not None and pub.returncode is None:
                pub.kill()
                await pub.wait()
            if getattr(args, "profile", ""):  # stop the profiled twin; py-spy then writes and exits
                for child in _children(twin.pid):
                    os.kill(child, signal.SIGTERM)
            else:
                twin.terminate()
            await twin.wait()
            log.close()
            await nats_server.stop()
    return {
        "samples": samples,
        "base_rss": base,
        "end": end,
        "after_reset": after_reset,
        "published": published,
    }


def _pick(m: dict[str, float]) -> dict[str, float]:
    keys = (
        "series",
        "samples_retained",
        "store_bytes",
        "events_applied_total",
        "dead_lettered_total",
        "slow_consumer_drops_total",
    )
    return {k: m.get(k, 0.0) for k in keys}


def _line(s: dict[str, float]) -> str:
    return (
        f"{s['t']:6.0f} s  RSS {s['rss'] / 2**20:7.1f} MiB  series {s['series']:6.0f}  samples "
        f"{s['samples_retained']:10,.0f}"
        f"  store {s['store_bytes'] / 2**20:6.1f} MiB  applied {s['events_applied_total']:11,.0f}"
    )


def report(args: argparse.Namespace, r: dict[str, Any]) -> dict[str, Any]:
    samples = r["samples"]
    mib = 2**20
    bound = args.series * args.max_points
    full_at = next((s["t"] for s in samples if s["samples_retained"] >= 0.999 * bound), None)
    plateau = [s for s in samples if full_at is not None and s["t"] >= full_at]
    growth = (plateau[-1]["rss"] - plateau[0]["rss"]) / mib if len(plateau) >= 2 else None
    span = plateau[-1]["t"] - plateau[0]["t"] if len(plateau) >= 2 else 0.0
    end = samples[-1]
    per_series = (end["rss"] - r["base_rss"]) / max(1.0, end["series"])
    print(f"\nPOLARIS twin soak: {args.series} series, {args.rate:,.0f} events/s for "
          f"{args.duration:.0f} s, model {args.model}, "
          f"state.max_points_per_series {args.max_points} (bound {bound:,} samples = "
          f"{bound * 16 / mib:.1f} MiB at 16 B); "
          f"{os.cpu_count()} CPUs\n")  # fmt: skip
    print("  time   RSS           series    retained samples   store        events applied")
    for s in samples:
        print(" " + _line(s))
    print(f"\nretention bound reached at {full_at if full_at is not None else 'never'} s; "
          + ("RSS change from then "
             "to the end: "
             f"{growth:+.1f} MiB "
             f"over {span:.0f} s" if growth is not None else "no plateau window"))  # fmt: skip
    print(f"RSS per series at the end: {per_series / 1024:.1f} KiB (base {r['base_rss'] / mib:.0f} "
          f"MiB, end {end['rss'] / mib:.0f} MiB, "
          f"store {end['store_bytes'] / mib:.1f} MiB = "
          f"{end['store_bytes'] / max(1.0, end['samples_retained']):.1f} B/sample)")  # fmt: skip
    print(f"after reset_state: RSS {r['after_reset']['rss'] / mib:.0f} MiB "
          f"({(r['after_reset']['rss'] - r['end']['rss']) / mib:+.0f} MiB), "
          f"samples {r['after_reset']['samples_retained']:.0f}; published {r['published']:,}, "
          f"applied {r['end']['events_applied_total']:,.0f}, "
          f"dead-lettered {r['end']['dead_lettered_total']:.0f}, slow-consumer drops "
          f"{r['end']['slow_consumer_drops_total']:.0f}")  # fmt: skip
    summary = {
        "series": args.series,
        "rate": args.rate,
        "duration_s": args.duration,
        "max_points_per_series": args.max_points,
        "model": args.model,
        "bound_reached_s": full_at,
        "plateau_rss_growth_mib": round(growth, 1) if growth is not None else None,
        "plateau_span_s": span,
        "end_rss_mib": round(end["rss"] / mib, 1),
        "base_rss_mib": round(r["base_rss"] / mib, 1),
        "rss_per_series_kib": round(per_series / 1024, 2),
        "after_reset_rss_mib": round(r["after_reset"]["rss"] / mib, 1),
        "rss_curve_mib": [[s["t"], round(s["rss"] / mib, 1)] for s in samples],
    }
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI size: 1 000 series, 5 000 events/s, 60 s, every 5 s",
    )
    p.add_argument("--series", type=int, default=5000)
    p.add_argument("--rate", type=float, default=15_000.0, help="events/s")
    p.add_argument("--duration", type=float, default=300.0, help="seconds")
    p.add_argument("--every", type=float, default=10.0, help="RSS sampling interval, seconds")
    p.add_argument("--max-points", type=int, default=300, help="state.max_points_per_series")
    p.add_argument("--model", default="statistical")
    p.add_argument(
        "--profile", default="", help="py-spy raw (collapsed) profile of the twin to this file"
    )
    p.add_argument("--role", default="soak", choices=("soak", "publisher"), help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "publisher":
        asyncio.run(publish(args.url, args.series, args.rate, args.duration))
        return 0
    if args.quick:
        args.series, args.rate, args.duration, args.every = 1000, 5000.0, 60.0, 5.0
        args.max_points = min(args.max_points, 100)
    report(args, asyncio.run(soak(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
