"""Console and event-stream figures, each against a baseline in the same run.

    python bench/console.py            # ~1 min on 2 cores; needs chromium + chromium-driver

1. Watch latency: ``EventBus.publish`` → the event parsed by an SSE client
   (``GET /v1/watch``) and by a gRPC ``Watch`` client, in one process with a real twin
   (mock model), 300 events 10 ms apart; baseline: the same loop through an
   ``asyncio.Queue`` (what an in-process subscriber pays).
2. Anomaly latency end to end: a spike published on NATS → ``anomaly_started`` on SSE
   (includes the ingestion batch timeout, ``nats.batch_timeout_sec``).
3. Console in headless Chromium against ``polaris-twin --demo-load 200``: time from
   navigation to the first overview, and the canvas draw time of one chart holding
   10 000 points (min/max decimation) against the same chart with 500 points.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def watch_latency(n: int = 300) -> dict[str, float]:
    import grpc
    import httpx
    import orjson

    from twin._proto import digital_twin_pb2 as pb
    from twin._proto import digital_twin_pb2_grpc as pb_grpc
    from twin.app import TwinApp

    from support import twin_config

    app = TwinApp(
        twin_config(None, world_model={"implementation": "mock"}, events={"queue_size": 1000})
    )
    await app.start()
    bus = app.runtime.state.events
    sent: dict[int, float] = {}
    sse_lat: list[float] = []
    grpc_lat: list[float] = []
    try:
        ready = asyncio.Event()

        async def sse() -> None:
            async with httpx.AsyncClient(timeout=None) as http:
                async with http.stream(
                    "GET", f"http://127.0.0.1:{app.http_port}/v1/watch?kinds=drift"
                ) as r:
                    ready.set()
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            seq = int(orjson.loads(line[6:])["sequence"])
                            sse_lat.append(time.perf_counter() - sent[seq])
                            if len(sse_lat) >= n:
                                return

        async def watch() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
                call = pb_grpc.DigitalTwinStub(ch).Watch(pb.WatchRequest(kinds=["drift"]))
                await call.initial_metadata()
                ready2.set()
                async for ev in call:
                    grpc_lat.append(time.perf_counter() - sent[ev.sequence])
                    if len(grpc_lat) >= n:
                        call.cancel()
                        return

        ready2 = asyncio.Event()
        tasks = [asyncio.create_task(sse()), asyncio.create_task(watch())]
        await ready.wait()
        await ready2.wait()
        await asyncio.sleep(0.2)
        for i in range(n):
            sent[bus.last_sequence + 1] = time.perf_counter()
            bus.publish("drift", "bench", {"i": i, "metric": "m", "error": 0.1})
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        # baseline: the same loop through an asyncio.Queue
        q: asyncio.Queue[float] = asyncio.Queue()
        base: list[float] = []

        async def consume() -> None:
            while len(base) < n:
                t = await q.get()
                base.append(time.perf_counter() - t)

        c = asyncio.create_task(consume())
        for _ in range(n):
            q.put_nowait(time.perf_counter())
            await asyncio.sleep(0.01)
        await c
        # end to end: telemetry spike on NATS -> anomaly_started on SSE
        e2e = await anomaly_latency()
    finally:
        await app.stop()
    ms = 1000.0
    return {
        "sse_latency_p50_ms": statistics.median(sse_lat) * ms,
        "sse_latency_p99_ms": pct(sse_lat, 0.99) * ms,
        "grpc_watch_latency_p50_ms": statistics.median(grpc_lat) * ms,
        "grpc_watch_latency_p99_ms": pct(grpc_lat, 0.99) * ms,
        "queue_baseline_p50_ms": statistics.median(base) * ms,
        **e2e,
    }


async def anomaly_latency() -> dict[str, float]:
    import httpx
    import nats
    from gateway.browser import anomaly_messages

    from twin.app import TwinApp

    from support import twin_config

    app = TwinApp(
        twin_config(
            None,
            world_model={
                "implementation": "statistical",
                "settings": {"background_fitting": False},
            },
        )
    )
    await app.start()
    try:
        nc = await nats.connect(app.nats_url)
        msgs = anomaly_messages("probe", "latency")
        for m in msgs[:-1]:
            await nc.publish("polaris.telemetry.events.stream", m)
        await nc.flush()
        while app.runtime.ingest_stats.events_applied < len(msgs) - 1:
            await asyncio.sleep(0.01)
        got = asyncio.Event()
        t_recv = 0.0

        async def sse() -> None:
            nonlocal t_recv
            async with httpx.AsyncClient(timeout=None) as http:
                async with http.stream(
                    "GET",
                    f"http://127.0.0.1:{app.http_port}/v1/watch?kinds=anomaly_started&systems=probe",
                ) as r:
                    opened.set()
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            t_recv = time.perf_counter()
                            got.set()
                            return

        opened = asyncio.Event()
        task = asyncio.create_task(sse())
        await opened.wait()
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        await nc.publish("polaris.telemetry.events.stream", msgs[-1])
        await nc.flush()
        await asyncio.wait_for(got.wait(), 10)
        await task
        await nc.close()
        return {
            "anomaly_nats_to_sse_ms": (t_recv - t0) * 1000.0,
            "batch_timeout_ms": app.config.nats.batch_timeout_sec * 1000.0,
        }
    finally:
        await app.stop()


def console_figures() -> dict[str, float]:
    from gateway.browser import TwinProcess, anomaly_messages, chromium, publish

    twin = TwinProcess(demo_load=200)
    try:
        twin.wait_ready()
        time.sleep(3)
        # a 10 000-point series inside the last hour
        now = time.time()
        big = list(anomaly_messages("bench", "series10k", n=9_999, t0=now - 3000))
        publish(twin.nats_url, big)
        out: dict[str, float] = {}
        with chromium() as d:
            d.get(twin.url + "/")
            while not d.execute_script(
                "return window.polarisConsole && window.polarisConsole.ready"
            ):
                time.sleep(0.02)
            out["console_ready_ms"] = d.execute_script(
                "return window.polarisConsole.timings.ready_ms"
            )
            nav = d.execute_script(
                "const n = performance.getEntriesByType('navigation')[0]; return "
                "[n.domContentLoadedEventEnd, n.loadEventEnd]"
            )
            out["dom_content_loaded_ms"], out["load_event_ms"] = nav
            # draw the 10 k series many times in the page; the same chart with 500 points as the
            # baseline
            res = d.execute_async_script(
                """
                const done = arguments[arguments.length - 1];
                (async () => {
                  const { TimeChart } = await import('/console/chart.js');
                  const r = await fetch('/v1/query', {method: 'POST', body: JSON.stringify({query_type: 'historical',
                    parameters: {system: 'bench', metric: 'series10k', window_minutes: '240', max_points: '10000', include: 'scores'}})});
                  const e = JSON.parse((await r.json()).result).systems.bench['series10k'];
                  const t = Float64Array.from(e.points, p => Date.parse(p[0]));
                  const v = Float64Array.from(e.points, p => p[1]);
                  const box = document.createElement('div'); box.style.width = '1200px';
                  document.body.append(box);
                  const chart = new TimeChart(box, {height: 300, scoreLane: true});
                  const time = (n) => { const data = {lines: [{t: t.subarray(0, n), v: v.subarray(0, n), color: '#2563eb'}], score: {t: t.subarray(0, n), s: v.subarray(0, n).map(x => 0.5), threshold: 0.9997}};
                    const xs = []; for (let i = 0; i < 30; i++) { const s = performance.now(); chart.setData(data); chart.canvas.getContext('2d').getImageData(0, 0, 1, 1); xs.push(performance.now() - s); }
                    xs.sort((a, b) => a - b); return xs[15]; };
                  done({points: t.length, ms10k: time(t.length), ms500: time(500)});
                })().catch(err => done({error: String(err)}));
                """
            )
        if "error" in res:
            raise RuntimeError(res["error"])
        out["chart_points"] = res["points"]
        out["chart_draw_10k_ms"] = res["ms10k"]
        out["chart_draw_500_ms"] = res["ms500"]
        return out
    finally:
        twin.stop()


def main() -> int:
    figures = asyncio.run(watch_latency())
    figures.update(console_figures())
    for k, v in figures.items():
        print(f"{k:>28}: {v:.2f}")
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
