"""Issue 17, defect 6: state-changing Manage operations need an authorised caller.

Real twins, real gRPC over TLS and mTLS (a throwaway CA from ``faults.pki``); each test
states what a caller presented and asserts the status, that nothing was wiped when it was
refused, and what the audit log recorded.
"""

from __future__ import annotations

import logging

import grpc
import orjson
import pytest
from faults.js_harness import manage, metrics
from faults.pki import make_pki

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc

from support import wait_for

TOKEN = "a-long-random-admin-token"
EVENT = orjson.dumps({"name": "cpu", "value": 1.0, "source": "s"})


async def _fed_twin(make_twin, nats_server, nc, **sections):  # type: ignore[no-untyped-def]
    app = await make_twin(nats_server.url, **sections)
    await nc.publish("polaris.telemetry.events.stream", EVENT)
    await nc.flush()
    await wait_for(lambda: app.runtime.ingest_stats.events_applied == 1)
    return app


async def _call(
    ch: grpc.aio.Channel, op: str, metadata: tuple = (), **params: str
) -> pb.ManagementResponse:  # type: ignore[type-arg]
    stub = pb_grpc.DigitalTwinStub(ch)
    return await stub.Manage(
        pb.ManagementRequest(operation=op, parameters=params), metadata=metadata, timeout=10
    )


async def _code(
    ch: grpc.aio.Channel, op: str, metadata: tuple = (), **params: str
) -> grpc.StatusCode:  # type: ignore[type-arg]
    try:
        await _call(ch, op, metadata, **params)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _audit(caplog: pytest.LogCaptureFixture) -> list[dict]:  # type: ignore[type-arg]
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "twin.audit"]


async def test_without_configuration_a_non_loopback_listener_refuses_destructive_operations(
    nats_server, nc, make_twin, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="twin.audit")
    app = await _fed_twin(make_twin, nats_server, nc, grpc={"host": "0.0.0.0"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        for op, params in (
            ("reset_state", {}),
            ("reload_model", {"implementation": "gemini"}),
            ("snapshot", {}),
            ("replay", {"from_sequence": "1"}),
        ):
            assert await _code(ch, op, **params) == grpc.StatusCode.PERMISSION_DENIED
        assert (await _call(ch, "get_metrics")).success  # reads stay open
        m = await metrics(ch)
    assert app.runtime.state.store.sample_count == 1 and app.runtime.model_name == "mock"
    assert m["manage_denied_total.reset_state.PERMISSION_DENIED"] == 1
    records = _audit(caplog)
    assert [r["operation"] for r in records] == [
        "reset_state",
        "reload_model",
        "snapshot",
        "replay",
    ]
    assert all(r["allowed"] is False and r["principal"] == "anonymous" for r in records)


async def test_a_loopback_listener_allows_them_without_configuration(
    nats_server, nc, make_twin, channel_for
) -> None:
    app = await _fed_twin(make_twin, nats_server, nc)  # tests listen on 127.0.0.1
    resp = await _call(channel_for(app), "reset_state")
    assert resp.success and app.runtime.state.store.sample_count == 0


async def test_a_bearer_token_over_tls(
    nats_server, nc, make_twin, tmp_path, monkeypatch, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="twin.audit")
    monkeypatch.setenv("POLARIS_TWIN_ADMIN_TOKEN", TOKEN)
    pki = make_pki(tmp_path / "pki")
    app = await _fed_twin(
        make_twin,
        nats_server,
        nc,
        grpc={
            "host": "0.0.0.0",
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
        },
    )
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    opts = [("grpc.ssl_target_name_override", "localhost")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.grpc_port}", creds, options=opts) as ch:
        assert await _code(ch, "reset_state") == grpc.StatusCode.UNAUTHENTICATED
        assert (
            await _code(ch, "reset_state", (("authorization", "Bearer wrong"),))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            await _code(ch, "reset_state", (("authorization", TOKEN),))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert app.runtime.state.store.sample_count == 1
        ok = await _call(ch, "reset_state", (("authorization", f"Bearer {TOKEN}"),))
    assert ok.success and app.runtime.state.store.sample_count == 0
    records = _audit(caplog)
    assert [(r["code"], r["principal"]) for r in records] == [
        ("UNAUTHENTICATED", "anonymous"),
        ("PERMISSION_DENIED", "anonymous"),
        ("UNAUTHENTICATED", "anonymous"),
        ("OK", "bearer-token"),
    ]
    assert records[-1]["outcome"] == "success" and records[-1]["peer"].startswith("ipv4:127.0.0.1")
    assert TOKEN not in caplog.text and "wrong" not in caplog.text


async def test_mtls_identities_on_the_allow_list(
    nats_server, nc, make_twin, tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="twin.audit")
    pki = make_pki(tmp_path / "pki")
    admin_cert, admin_key = pki.issue_client("ops-admin")
    app = await _fed_twin(
        make_twin,
        nats_server,
        nc,
        grpc={
            "host": "0.0.0.0",
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
            "tls_client_ca_file": str(pki.ca),
        },
        auth={"mtls_allow": {"reset_state": ["ops-admin"], "snapshot": ["polaris-client"]}},
    )
    target, opts = f"127.0.0.1:{app.grpc_port}", [("grpc.ssl_target_name_override", "localhost")]
    plain = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
    )
    admin = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), admin_key.read_bytes(), admin_cert.read_bytes()
    )
    async with grpc.aio.secure_channel(target, plain, options=opts) as ch:
        assert await _code(ch, "reset_state") == grpc.StatusCode.PERMISSION_DENIED
        assert app.runtime.state.store.sample_count == 1
        # snapshot is allowed for this identity (it answers in-band: no snapshot_dir here)
        assert await _code(ch, "snapshot") == grpc.StatusCode.OK
    async with grpc.aio.secure_channel(target, admin, options=opts) as ch:
        assert (await _call(ch, "reset_state")).success
    assert app.runtime.state.store.sample_count == 0
    assert [(r["operation"], r["principal"], r["allowed"]) for r in _audit(caplog)] == [
        ("reset_state", "mtls:polaris-client", False), ("snapshot", "mtls:polaris-client", True),
        ("reset_state", "mtls:ops-admin", True),
    ]


async def test_get_config_shows_no_token(nats_server, nc, make_twin, channel_for, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    app = await _fed_twin(make_twin, nats_server, nc, auth={"admin_token_file": str(token_file)})
    resp = await manage(channel_for(app), "get_config")
    assert TOKEN not in resp.result and '"admin_token_file":"***"' in resp.result
