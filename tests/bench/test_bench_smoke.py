"""A tiny run of every benchmark piece so bench/ cannot rot (no timing asserts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from twin.ingest.embedded import EmbeddedNatsServer

from support import ROOT

BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import run as bench
from _common import batch_payloads, stream_payloads
from _original_decode import decode_batch as original_decode


def test_payloads_and_both_decoders_agree_on_the_event_count() -> None:
    from twin.core.events import decode_batch

    payloads = batch_payloads(250, per_message=100)
    assert len(payloads) == 3
    assert [len(original_decode(p)) for p in payloads] == [100, 100, 50]
    assert [len(decode_batch(p, 0.0)[0]) for p in payloads] == [100, 100, 50]
    assert len(stream_payloads(10)) == 10
    first = original_decode(payloads[0], wrap=False)[0]
    assert first.name == first.name.lower() and "_" not in first.name  # the original's normaliser
    wrapped = original_decode(payloads[0])[0]
    assert wrapped.event_type == "telemetry" and wrapped.data["name"] == first.name


def test_in_process_rates_are_positive() -> None:
    payloads = batch_payloads(200)
    assert bench.original_decode_rate(payloads, 0.01) > 0
    decode, full = bench.our_decode_rates(payloads, 0.01)
    assert decode > 0 and full > 0


@pytest.mark.parametrize("who", ["bare", "twin"])
@pytest.mark.parametrize("mode", ["stream", "batch"])
async def test_closed_loop_ingest_run_delivers_every_event(
    nats_server: EmbeddedNatsServer, tmp_path: Path, who: str, mode: str
) -> None:
    result, published = await bench.ingest_run(tmp_path, nats_server.url, who, mode, 1_000, "mock")
    assert published["published"] == 1_000
    assert result["events"] == 1_000
    assert result["events_per_s"] > 0


async def test_query_run_against_twin_and_bare_server(
    nats_server: EmbeddedNatsServer, tmp_path: Path
) -> None:
    r = await bench._query_run(tmp_path, nats_server.url, 0.3, "mock", True)
    assert r["bare"]["calls"] > 0 and r["twin"]["calls"] > 0 and r["ingest"]["calls"] > 0
    assert r["twin"]["errors"] == 0 and r["twin"]["first_success"]
    assert r["bare"]["response_bytes"] == r["twin"]["response_bytes"]  # same-size constant answer


async def test_memory_probe_reports_bytes_per_sample(tmp_path: Path) -> None:
    proc = await bench.Proc.start(tmp_path, "_memory.py", "--samples", "200000", "--series", "4")
    try:
        r = await proc.line(120)
    finally:
        await proc.finish()
    assert r["samples"] == 200_000 and r["bytes_per_sample"] > 0


async def test_run_prints_table_and_json_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert await bench.main(["--quick", "--only", "decode,startup", "--model", "mock"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) >= {  # every key always present (null when not measured); others add theirs
        "series_10k_rss_mb",
        "stream_ratio",
        "batch_events_per_s",
        "batch_speedup",
        "query_qps_ratio",
        "query_p99_ms_under_ingest",
        "forecast_p99_ms",
        "bytes_per_sample",
        "start_to_serving_s",
        "detector_us_per_point",
    }
    assert figures["start_to_serving_s"] > 0
    assert any("decode_batch" in line for line in lines)


def test_fast_decode_paths_agree_with_the_typed_decoders() -> None:
    """The optimisation the batch figure measures must not change a single result."""
    import math

    import orjson

    from twin.core import events as ev

    tricky = [
        {
            "name": "cpu_usage",
            "value": 1.5,
            "timestamp": "2024-01-01T00:00:00Z",
            "source": "a",
            "tags": {"k": "v"},
        },
        {"name": "cpu_usage", "value": True, "timestamp": "2024-01-01 00:00:00"},
        {"name": "State_Text", "value": "degraded", "timestamp": 1704067200},
        {"name": "x.y_z", "value": 3, "timestamp": "2024-01-01T00:00:00.5+02:00", "unit": "ms"},
        {"name": "no_time", "value": 2.0},
        {"name": "9bad", "value": 1.0},
        {"name": "bad-name", "value": 1.0},
        {"name": "t", "value": 1.0, "timestamp": "yesterday"},
        {"name": "t", "value": 1.0, "timestamp": "1970-01-01T00:00:00Z"},
        {"name": "t", "value": 1.0, "source": ""},
        {"name": "t", "value": 1.0, "tags": {"k": 1}},
        {"name": "a" * 300, "value": 1.0},
    ]

    def same(a: object, b: object) -> bool:
        return a == b or (
            isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        )

    def points_equal(xs: list, ys: list) -> bool:
        return len(xs) == len(ys) and all(
            len(p) == len(q) and all(same(u, w) for u, w in zip(p, q)) for p, q in zip(xs, ys)
        )

    for e in tricky:
        raw = orjson.dumps(e)
        try:
            fast: object = ev.decode_stream(raw, 7.0)
        except ev.DecodeError as err:
            fast = err.reason
        try:
            typed: object = ev._decode_event_typed(raw, 7.0)
        except ev.DecodeError as err:
            typed = err.reason
        assert fast == typed or (isinstance(fast, tuple) and points_equal([fast], [typed])), (
            e,
            fast,
            typed,
        )
    for batch in (tricky[:5], tricky, tricky[5:], [*tricky[:5], {"name": "n", "value": 1e309}]):
        for payload in (orjson.dumps({"events": batch}), orjson.dumps(batch)):
            fast_pts, fast_errs = ev.decode_batch(payload, 7.0)
            typed_pts, typed_errs = ev._decode_batch_typed(payload, 7.0)
            assert points_equal(fast_pts, typed_pts)
            assert [(x.index, x.reason) for x in fast_errs] == [
                (x.index, x.reason) for x in typed_errs
            ]
    for payload in batch_payloads(500):
        fast_pts, _ = ev.decode_batch(payload, 0.0)
        typed_pts, _ = ev._decode_batch_typed(payload, 0.0)
        assert points_equal(fast_pts, typed_pts)


async def test_soak_samples_rss_and_counters_of_a_real_twin() -> None:
    """bench/soak.py on a tiny load: a real twin process, RSS sampled, reset measured."""
    import argparse

    import soak

    args = argparse.Namespace(
        series=200, rate=4000.0, duration=3.0, every=1.0, max_points=5, model="mock", verbose=False
    )
    r = await soak.soak(args)
    assert len(r["samples"]) >= 3 and all(s["rss"] > 0 for s in r["samples"])
    assert r["end"]["series"] == 200 and r["end"]["samples_retained"] == 200 * 5  # the bound holds
    assert r["after_reset"]["samples_retained"] == 0
    summary = soak.report(args, r)
    assert summary["bound_reached_s"] is not None and summary["rss_curve_mib"]
