"""Transport security and secret hygiene, against real servers.

- gRPC TLS and mTLS from cert/key files (a throwaway CA made with ``cryptography``):
  a TLS client that trusts the CA is served; a plaintext client, a client trusting
  another CA, and (mTLS) a client without a certificate are refused.
- NATS user/password from NATS_USER / NATS_PASSWORD against nats-server --user/--pass,
  NATS TLS against nats-server --tls, and a wrong password failing cleanly.
- The password never appears in logs (DEBUG, every logger), get_metrics, get_config,
  health, dead-letter records or the error of a failed connection.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import nats
import orjson
import pytest
from faults.js_harness import (
    NatsProcess,
    applied_by_series,
    batches,
    make_events,
    manage,
    total,
    wait_applied,
)
from faults.pki import make_pki

from twin.app import TwinApp
from twin.core.errors import IngestError

from support import twin_config

SECRET = "S3cr3t-pa55-Xq9"


async def _health(channel: grpc.aio.Channel) -> bool:
    return (await manage(channel, "health_check", timeout=3)).success


async def test_grpc_tls_serves_trusting_clients_and_refuses_others(
    nats_server, make_twin, tmp_path
) -> None:
    pki = make_pki(tmp_path / "pki")
    other = make_pki(tmp_path / "other", "another-ca")
    app = await make_twin(
        nats_server.url,
        grpc={"tls_cert_file": str(pki.server_cert), "tls_key_file": str(pki.server_key)},
    )
    target = f"127.0.0.1:{app.grpc_port}"
    opts = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(
        target, grpc.ssl_channel_credentials(pki.ca.read_bytes()), options=opts
    ) as ch:
        assert await _health(ch)
    async with grpc.aio.insecure_channel(target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _health(ch)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    async with grpc.aio.secure_channel(
        target, grpc.ssl_channel_credentials(other.ca.read_bytes()), options=opts
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _health(ch)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_grpc_mtls_requires_a_client_certificate_from_the_configured_ca(
    nats_server, make_twin, tmp_path
) -> None:
    pki = make_pki(tmp_path / "pki")
    app = await make_twin(
        nats_server.url,
        grpc={
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
            "tls_client_ca_file": str(pki.ca),
        },
    )
    target = f"127.0.0.1:{app.grpc_port}"
    opts = [("grpc.ssl_target_name_override", "localhost")]
    with_cert = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    async with grpc.aio.secure_channel(target, with_cert, options=opts) as ch:
        assert await _health(ch)
    async with grpc.aio.secure_channel(
        target, grpc.ssl_channel_credentials(pki.ca.read_bytes()), options=opts
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _health(ch)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_nats_user_password_works_and_the_password_never_leaks(
    make_twin, channel_for, monkeypatch, caplog, tmp_path
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("NATS_USER", "twin")
    monkeypatch.setenv("NATS_PASSWORD", SECRET)
    async with NatsProcess(
        "--user", "twin", "--pass", SECRET, store_dir=str(tmp_path / "js")
    ) as ns:
        url = f"nats://127.0.0.1:{ns.port}"
        app = await make_twin(
            url,
            nats={"jetstream": {"enabled": True, "durable": "auth"}},
            state={"snapshot_dir": str(tmp_path / "snap")},
        )
        ch = channel_for(app)
        nc = await nats.connect(url, user="twin", password=SECRET)
        try:
            dlq: list[bytes] = []

            async def on_dlq(msg) -> None:  # type: ignore[no-untyped-def]
                dlq.append(msg.data)

            await nc.subscribe("polaris.digitaltwin.errors", cb=on_dlq)
            js = nc.jetstream()
            for subject, payload, _ in batches(make_events(500)):
                await js.publish(subject, payload)
            await js.publish("polaris.telemetry.events.stream", b'{"name": "9bad", "value": 1}')
            await js.publish("polaris.execution.results", b'{"action_id": ""}')
            await wait_applied(ch, 500)
            for _ in range(50):
                if len(dlq) >= 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await nc.close()
        assert total(await applied_by_series(ch)) == 500 and len(dlq) == 2
        texts = [r.decode() for r in dlq]
        for op in ("get_metrics", "get_config", "health_check", "snapshot", "replay_status"):
            resp = await manage(ch, op)
            texts += [resp.result, str(dict(resp.metrics)), str(resp.health_status)]
        # A second twin with the wrong password fails cleanly, without echoing any secret.
        monkeypatch.setenv("NATS_PASSWORD", SECRET + "-wrong")
        bad = TwinApp(
            twin_config(
                f"nats://twin:{SECRET}@127.0.0.1:{ns.port}", nats={"max_reconnect_attempts": 1}
            )
        )
        with pytest.raises(IngestError) as err:
            await bad.start()
        await bad.stop()
        texts.append(str(err.value))
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    assert all(orjson.loads(r)["reason"] for r in dlq)
    assert "nats://***@127.0.0.1" in caplog.text  # the URL was logged, redacted
    leaks = [t for t in texts if SECRET in t]
    assert not leaks, leaks[:3]


async def test_nats_tls_with_a_private_ca(make_twin, channel_for, tmp_path) -> None:
    pki = make_pki(tmp_path / "pki")
    async with NatsProcess(
        "--tls",
        "--tlscert",
        str(pki.server_cert),
        "--tlskey",
        str(pki.server_key),
        store_dir=str(tmp_path / "js"),
    ) as ns:
        url = f"tls://127.0.0.1:{ns.port}"
        app = await make_twin(
            url, nats={"tls_ca_file": str(pki.ca), "jetstream": {"enabled": True, "durable": "tls"}}
        )
        ch = channel_for(app)
        import ssl

        ctx = ssl.create_default_context(cafile=str(pki.ca))
        nc = await nats.connect(url, tls=ctx)
        try:
            js = nc.jetstream()
            for subject, payload, _ in batches(make_events(300)):
                await js.publish(subject, payload)
        finally:
            await nc.close()
        await wait_applied(ch, 300)
        assert (await manage(ch, "health_check")).success
