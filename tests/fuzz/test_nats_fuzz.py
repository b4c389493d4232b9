"""End-to-end fuzz through a real nats-server and a real twin (JetStream mode): a
bounded, deterministic corpus of hostile payloads on every input subject. The oracle
is the decoders themselves, run locally on the same bytes: every event they accept must
be applied, every message or event they reject must show up on the error subject with
a reason. Exact counts both ways; the twin stays healthy."""

from __future__ import annotations

import asyncio
import hashlib
import time

import nats
import orjson
from faults.js_harness import (
    BATCH,
    CALIBRATE,
    ERRORS,
    EXECUTION,
    STREAM,
    JsPublisher,
    make_events,
    manage,
    metrics,
)
from fuzz.fuzz_strategies import (
    BATCH_PAYLOADS,
    CALIBRATION_PAYLOADS,
    EXECUTION_PAYLOADS,
    STREAM_PAYLOADS,
    deep,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin.core.events import decode_batch, decode_calibration, decode_execution, decode_stream

MAX_PAYLOAD = 16_384
PER_SUBJECT = 40


def corpus(strategy: st.SearchStrategy[bytes], n: int) -> list[bytes]:
    out: list[bytes] = []

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(payload: bytes) -> None:
        out.append(payload)

    collect()
    return out


def expected(subject: str, payload: bytes) -> tuple[int, int]:
    """(events applied, dead-letter records) the twin must produce for one message."""
    if len(payload) > MAX_PAYLOAD:
        return 0, 1
    try:
        if subject == BATCH:
            points, errors = decode_batch(payload, 0.0)
            return len(points), len(errors)
        {
            STREAM: lambda p: decode_stream(p, 0.0),
            EXECUTION: decode_execution,
            CALIBRATE: decode_calibration,
        }[subject](payload)
        return 1, 0
    except Exception:  # noqa: BLE001 - DecodeError, or a decoder bug the JetStream path contains
        return 0, 1


async def test_hostile_payloads_on_every_subject_are_applied_or_dead_lettered_exactly(
    nats_server, make_twin, channel_for
) -> None:
    messages = [(STREAM, p) for p in corpus(STREAM_PAYLOADS, PER_SUBJECT)]
    messages += [(BATCH, p) for p in corpus(BATCH_PAYLOADS, PER_SUBJECT)]
    messages += [(EXECUTION, p) for p in corpus(EXECUTION_PAYLOADS, PER_SUBJECT)]
    messages += [(CALIBRATE, p) for p in corpus(CALIBRATION_PAYLOADS, PER_SUBJECT)]
    messages += [
        (STREAM, b'{"name": "x", "value": 1, "metadata": {"m": ' + deep(5000) + b"}}"),
        (BATCH, b"[" + b" " * (MAX_PAYLOAD + 10) + b"]"),
    ]
    good = make_events(60)
    messages += [(STREAM, orjson.dumps(e)) for e in good[:30]]
    mixed = good[30:] + [
        {"name": "9bad", "value": 1},
        {"name": "x", "value": None},
        {"name": "y", "value": [1]},
    ]
    messages += [(BATCH, orjson.dumps({"events": mixed}))]  # 30 good + 3 bad in one batch
    messages.sort(
        key=lambda m: hashlib.sha256(m[1]).digest()
    )  # interleave good and hostile, deterministically
    messages += [(STREAM, orjson.dumps({"name": "ok_after_fuzz", "value": 1.0, "source": "fuzz"}))]
    want_applied = want_dlq = 0
    for subject, payload in messages:
        a, d = expected(subject, payload)
        want_applied += a
        want_dlq += d

    app = await make_twin(
        nats_server.url,
        nats={"max_payload_bytes": MAX_PAYLOAD, "jetstream": {"enabled": True, "durable": "fuzz"}},
    )
    ch = channel_for(app)
    nc = await nats.connect(nats_server.url)
    records: list[dict] = []
    try:

        async def on_error(msg) -> None:  # type: ignore[no-untyped-def]
            records.append(orjson.loads(msg.data))

        await nc.subscribe(ERRORS, cb=on_error)
        pub = JsPublisher(nc)
        for i, (subject, payload) in enumerate(messages):
            await pub.publish(subject, payload, f"fuzz-{i}")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            m = await metrics(ch)
            if m["applied_sequence"] >= len(messages) and len(records) >= want_dlq:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    m = await metrics(ch)
    print(
        f"\nNATS fuzz: messages={len(messages)} expected applied={want_applied} "
        f"dead-lettered={want_dlq}; got {m['events_applied_total']:.0f} / {len(records)}"
    )
    assert m["applied_sequence"] == len(messages)
    assert m["events_applied_total"] == want_applied
    assert m["dead_lettered_total"] == want_dlq == len(records)
    assert all(
        r["reason"] and r["subject"] in (STREAM, BATCH, EXECUTION, CALIBRATE) for r in records
    )
    assert (await manage(ch, "health_check")).success
    q = await manage(ch, "series_stats", system="fuzz")
    assert orjson.loads(q.result)["samples"] == 1  # ingestion still works after the fuzz
