"""The REST/JSON gateway against real twins (real nats-server, real gRPC, real HTTP):
every RPC, the canonical JSON mapping (equal to grpcurl's), the error mapping, the
shared admission limits and deadlines, probes, OpenAPI, TLS and mTLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time

import grpc
import httpx
import jsonschema
import orjson
import pytest
from faults.pki import make_pki

from twin._proto import digital_twin_pb2 as pb
from twin._proto import digital_twin_pb2_grpc as pb_grpc
from twin.gateway import openapi
from twin.gateway.context import HTTP_STATUS, parse_grpc_timeout
from twin.models.base import QueryRequest, QueryResult
from twin.models.mock import MockWorldModel
from twin.models.registry import register_model

from support import wait_for

STREAM = "polaris.telemetry.events.stream"


def base(app) -> str:  # type: ignore[no-untyped-def]
    return f"http://127.0.0.1:{app.http_port}"


class SleepyModel(MockWorldModel):
    name = "sleepy_http_test"

    async def query(self, request: QueryRequest) -> QueryResult:
        await asyncio.sleep(float(request.parameters.get("sleep", "0")))
        return await super().query(request)


async def _feed(nc, app, n: int = 20) -> None:  # type: ignore[no-untyped-def]
    """Publishes n points and waits until the twin applied them."""
    t0 = time.time() - n
    for i in range(n):
        await nc.publish(
            STREAM,
            orjson.dumps(
                {
                    "name": "cpu_usage",
                    "value": 40 + i,
                    "unit": "percent",
                    "source": "web",
                    "timestamp": t0 + i,
                }
            ),
        )
    await nc.flush()
    try:
        await wait_for(lambda: app.runtime.ingest_stats.events_applied >= n, timeout=20)
    except AssertionError as exc:
        st = app.runtime.ingest_stats
        raise AssertionError(
            f"not applied: received={st.events_received} applied={st.events_applied} "
            f"dead={st.dead_lettered} "
            f"connected={app.ingestor.connected} nc={nc.connected_url} "
            f"twin_nc={app.ingestor.nc.connected_url} "
            f"group={app.config.nats.queue_group} slow={st.slow_consumer_drops} "
            f"disconnects={st.disconnects}"
        ) from exc


async def test_every_rpc_over_http_matches_grpc(nats_server, nc, make_twin, channel_for) -> None:
    app = await make_twin(nats_server.url, model="mock")
    await _feed(nc, app)
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    async with httpx.AsyncClient(base_url=base(app), timeout=30) as http:
        # Query: same answer as gRPC (apart from the response timestamp).
        body = {"query_id": "q1", "query_type": "current_state", "parameters": {"system": "web"}}
        r = await http.post("/v1/query", json=body)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        got = r.json()
        want = await stub.Query(
            pb.QueryRequest(query_id="q1", query_type="current_state", parameters={"system": "web"})
        )
        assert got["query_id"] == "q1" and got["success"] is True
        assert json.loads(got["result"]) == json.loads(want.result)
        assert json.loads(got["result"])["systems"]["web"]["cpu.usage"]["value"] == 59
        # Simulate: repeated messages and maps in the canonical mapping.
        r = await http.post(
            "/v1/simulate",
            json={
                "simulation_type": "what_if",
                "horizon_minutes": 10,
                "actions": [
                    {"action_type": "ADD_SERVER", "target": "web", "params": {"count": "2"}}
                ],
            },
        )
        assert r.status_code == 200, r.text
        sim = r.json()
        assert (
            sim["success"] is True
            and sim["future_states"]
            and isinstance(sim["future_states"][0]["metrics"], dict)
        )
        assert set(sim["metrics"]) == {
            "execution_time_sec",
            "scenarios_processed",
            "average_confidence",
            "custom_metrics",
        }
        # Diagnose
        r = await http.post(
            "/v1/diagnose", json={"anomaly_description": "cpu high", "context": {"system": "web"}}
        )
        assert r.status_code == 200 and r.json()["hypotheses"][0]["rank"] == 1
        # Manage: health_status is a nested message; metrics count the HTTP calls as RPCs.
        r = await http.post("/v1/manage", json={"operation": "get_metrics"})
        m = r.json()
        assert r.status_code == 200 and m["health_status"]["status"] == "healthy"
        figures = json.loads(m["result"])
        assert (
            figures["rpc_query_responses_total.OK"] >= 2
        )  # one over gRPC, one over HTTP: one set of metrics
        assert figures["rpc_simulate_responses_total.OK"] == 1
        assert figures["http_requests_total"] >= 4 and figures["events_watchers"] == 0
        assert figures["events_published_total.diagnosis"] == 1  # the Diagnose above
        # An empty body is the default request (as grpcurl -d '{}').
        r = await http.post("/v1/manage", content=b"")
        assert r.status_code == 400 and "unknown operation ''" in r.json()["message"]


@pytest.mark.skipif(shutil.which("grpcurl") is None, reason="grpcurl not installed")
async def test_rest_body_is_what_grpcurl_prints(nats_server, nc, make_twin) -> None:
    app = await make_twin(nats_server.url, model="mock")
    await _feed(nc, app)
    req = {
        "query_id": "same",
        "query_type": "historical",
        "parameters": {"system": "web", "metric": "cpu_usage", "window_minutes": "60"},
    }
    proc = await asyncio.create_subprocess_exec(
        "grpcurl",
        "-plaintext",
        "-emit-defaults",
        "-d",
        json.dumps(req),
        f"127.0.0.1:{app.grpc_port}",
        "polaris.digitaltwin.DigitalTwin/Query",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    via_grpcurl = json.loads(out)
    async with httpx.AsyncClient(base_url=base(app)) as http:
        via_http = (await http.post("/v1/query", json=req)).json()
    for doc in (via_grpcurl, via_http):
        doc.pop("timestamp")
    assert via_http == via_grpcurl


async def test_errors_map_to_http_statuses_with_the_grpc_message(
    nats_server, make_twin, channel_for
) -> None:
    app = await make_twin(nats_server.url, model="mock")
    stub = pb_grpc.DigitalTwinStub(channel_for(app))
    async with httpx.AsyncClient(base_url=base(app)) as http:
        r = await http.post("/v1/query", json={"query_type": "bogus"})
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Query(pb.QueryRequest(query_type="bogus"))
        assert r.status_code == 400
        assert r.json() == {
            "code": 3,
            "status": "INVALID_ARGUMENT",
            "message": info.value.details(),
        }
        cases = [
            (b'{"query_type": "current_state", "surprise": 1}', "surprise"),  # unknown field
            (b'{"query_type": 7}', "query_type"),  # wrong type
            (b"{not json", "body"),
            (b'{"simulation_type": "forecast", "horizon_minutes": 999999}', None),
        ]
        for raw, needle in cases:
            path = "/v1/simulate" if b"simulation_type" in raw else "/v1/query"
            r = await http.post(path, content=raw)
            assert r.status_code == 400, raw
            assert r.json()["status"] == "INVALID_ARGUMENT"
            if needle:
                assert needle in r.json()["message"]
        r = await http.post(
            "/v1/query", json={"query_type": "current_state"}, headers={"Grpc-Timeout": "soon"}
        )
        assert r.status_code == 400 and "Grpc-Timeout" in r.json()["message"]
        r = await http.get("/v1/query")
        assert r.status_code == 405 and r.json()["status"] == "UNIMPLEMENTED"
        r = await http.post("/v1/nothing", json={})
        assert r.status_code == 404 and r.json()["status"] == "NOT_FOUND"
        big = (
            b'{"query_type": "natural_language", "query_content": "'
            + b"x" * (5 * 1024 * 1024)
            + b'"}'
        )
        r = await http.post("/v1/query", content=big)
        assert r.status_code == 413 and r.json()["status"] == "RESOURCE_EXHAUSTED"


async def test_admission_limit_is_shared_and_maps_to_429(nats_server, make_twin) -> None:
    register_model(SleepyModel.name, SleepyModel)
    app = await make_twin(
        nats_server.url,
        model=SleepyModel.name,
        performance={"max_concurrent_queries": 2},
        grpc={"max_workers": 50},
    )
    async with httpx.AsyncClient(base_url=base(app), timeout=30) as http:
        calls = [
            http.post(
                "/v1/query", json={"query_type": "current_state", "parameters": {"sleep": "0.5"}}
            )
            for _ in range(8)
        ]
        results = await asyncio.gather(*calls)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 4 + [429] * 4  # 2 running + 2 waiting, as over gRPC
    busy = next(r for r in results if r.status_code == 429).json()
    assert (
        busy["status"] == "RESOURCE_EXHAUSTED"
        and "performance.max_concurrent_queries" in busy["message"]
    )
    assert app.servicer.rpc_metrics.rejected_busy == 4


async def test_in_flight_requests_are_limited_like_grpc_max_workers(nats_server, make_twin) -> None:
    register_model(SleepyModel.name, SleepyModel)
    app = await make_twin(
        nats_server.url,
        model=SleepyModel.name,
        performance={"max_concurrent_queries": 20},
        grpc={"max_workers": 3},
    )
    async with httpx.AsyncClient(base_url=base(app), timeout=30) as http:
        calls = [
            http.post(
                "/v1/query", json={"query_type": "current_state", "parameters": {"sleep": "0.5"}}
            )
            for _ in range(6)
        ]
        results = await asyncio.gather(*calls)
    assert sorted(r.status_code for r in results) == [200] * 3 + [429] * 3
    assert "grpc.max_workers" in next(r for r in results if r.status_code == 429).json()["message"]
    assert app.gateway.rejected_busy == 3


async def test_client_deadline_maps_to_504_and_configured_timeout_stays_in_band(
    nats_server, make_twin
) -> None:
    register_model(SleepyModel.name, SleepyModel)
    app = await make_twin(
        nats_server.url, model=SleepyModel.name, performance={"query_timeout_sec": 0.3}
    )
    async with httpx.AsyncClient(base_url=base(app), timeout=30) as http:
        t0 = time.perf_counter()
        r = await http.post(
            "/v1/query",
            json={"query_type": "current_state", "parameters": {"sleep": "2"}},
            headers={"Grpc-Timeout": "100m"},
        )
        assert r.status_code == 504 and r.json()["status"] == "DEADLINE_EXCEEDED"
        assert time.perf_counter() - t0 < 1.5
        r = await http.post(
            "/v1/query", json={"query_type": "current_state", "parameters": {"sleep": "2"}}
        )
        assert (
            r.status_code == 200
            and not r.json()["success"]
            and "timed out after 0.3s" in r.json()["explanation"]
        )


def test_grpc_timeout_header_and_status_table() -> None:
    assert (
        parse_grpc_timeout("2S") == 2.0
        and parse_grpc_timeout("500m") == 0.5
        and parse_grpc_timeout("1M") == 60.0
    )
    for bad in ("", "5", "1.5S", "123456789S", "5X"):
        with pytest.raises(ValueError):
            parse_grpc_timeout(bad)
    assert HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT] == 400
    assert HTTP_STATUS[grpc.StatusCode.RESOURCE_EXHAUSTED] == 429
    assert HTTP_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] == 504
    assert HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503
    assert HTTP_STATUS[grpc.StatusCode.UNAUTHENTICATED] == 401
    assert HTTP_STATUS[grpc.StatusCode.PERMISSION_DENIED] == 403


async def test_authorization_header_reaches_the_servicer_and_aborts_map(
    nats_server, make_twin
) -> None:
    """The later bearer-token check lives in the servicer and reads gRPC metadata: the
    gateway passes the HTTP Authorization header there, and its aborts map to 401/403/503."""
    app = await make_twin(nats_server.url, model="mock")
    servicer = app.servicer
    original = servicer.Manage
    seen: list[tuple[tuple[str, str], ...]] = []

    async def guarded(request, context):  # type: ignore[no-untyped-def]
        md = dict(context.invocation_metadata())
        seen.append(context.invocation_metadata())
        if request.operation == "reset_state":
            if "authorization" not in md:
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "reset_state needs a bearer token"
                )
            if md["authorization"] != "Bearer good":
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "token may not reset")
        if request.operation == "replay":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")
        return await original(request, context)

    servicer.Manage = guarded  # type: ignore[method-assign]
    async with httpx.AsyncClient(base_url=base(app)) as http:
        r = await http.post("/v1/manage", json={"operation": "reset_state"})
        assert (r.status_code, r.json()["status"]) == (401, "UNAUTHENTICATED")
        r = await http.post(
            "/v1/manage", json={"operation": "reset_state"}, headers={"Authorization": "Bearer bad"}
        )
        assert (r.status_code, r.json()["status"]) == (403, "PERMISSION_DENIED")
        r = await http.post(
            "/v1/manage",
            json={"operation": "reset_state"},
            headers={"Authorization": "Bearer good", "Cookie": "s=1"},
        )
        assert r.status_code == 200 and r.json()["success"]
        r = await http.post("/v1/manage", json={"operation": "replay"})
        assert (r.status_code, r.json()["message"]) == (503, "draining")
    keys = {k for k, _ in seen[-2]}
    assert "authorization" in keys and "cookie" not in keys


async def test_probes_follow_readiness(make_twin) -> None:
    from twin.ingest.embedded import EmbeddedNatsServer

    server = EmbeddedNatsServer(jetstream=False)
    url = await server.start()
    app = await make_twin(
        url, model="mock", nats={"max_reconnect_attempts": -1, "reconnect_wait_sec": 0.1}
    )
    async with httpx.AsyncClient(base_url=base(app)) as http:
        assert (await http.get("/healthz")).json() == {"status": "SERVING"}
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "SERVING"}
        await server.stop()
        await wait_for(lambda: not app.runtime.ingest_connected, timeout=15)
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "NOT_SERVING", "reason": "ingestion is not connected to NATS"}
        assert (
            await http.get("/healthz")
        ).status_code == 200  # liveness stays up: unready, not restarted


def _resolver_schema(name: str) -> dict:
    doc = openapi.document()
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


async def test_openapi_is_generated_from_the_proto_and_describes_real_answers(
    nats_server, nc, make_twin
) -> None:
    doc = openapi.document()
    schemas = doc["components"]["schemas"]
    for name, desc in pb.DESCRIPTOR.message_types_by_name.items():
        assert set(schemas[name]["properties"]) == {f.name for f in desc.fields}, name
    assert {
        "/v1/query",
        "/v1/simulate",
        "/v1/diagnose",
        "/v1/manage",
        "/v1/watch",
        "/healthz",
        "/readyz",
    } <= set(doc["paths"])
    jsonschema.Draft202012Validator.check_schema(_resolver_schema("QueryRequest"))
    app = await make_twin(nats_server.url, model="mock")
    await _feed(nc, app)
    async with httpx.AsyncClient(base_url=base(app)) as http:
        served = (await http.get("/openapi.json")).json()
        assert served == json.loads(json.dumps(doc))
        answers = {
            "QueryResponse": await http.post("/v1/query", json={"query_type": "current_state"}),
            "SimulationResponse": await http.post(
                "/v1/simulate",
                json={"simulation_type": "what_if", "actions": [{"action_type": "ADD_SERVER"}]},
            ),
            "DiagnosisResponse": await http.post("/v1/diagnose", json={"anomaly_description": "x"}),
            "ManagementResponse": await http.post("/v1/manage", json={"operation": "health_check"}),
        }
        for name, r in answers.items():
            jsonschema.validate(
                r.json(), _resolver_schema(name), cls=jsonschema.Draft202012Validator
            )
        err = (await http.post("/v1/query", json={"query_type": "x"})).json()
        jsonschema.validate(err, _resolver_schema("Error"), cls=jsonschema.Draft202012Validator)
        with pytest.raises(jsonschema.ValidationError):  # the schema can fail: a wrong field type
            jsonschema.validate(
                {"success": "yes"},
                _resolver_schema("QueryResponse"),
                cls=jsonschema.Draft202012Validator,
            )


async def test_tls_and_mtls_use_the_grpc_files(nats_server, make_twin, tmp_path) -> None:
    pki = make_pki(tmp_path)
    app = await make_twin(
        nats_server.url,
        grpc={
            "tls_cert_file": str(pki.server_cert),
            "tls_key_file": str(pki.server_key),
            "tls_client_ca_file": str(pki.ca),
        },
    )
    url = f"https://127.0.0.1:{app.http_port}/v1/manage"
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    async with httpx.AsyncClient(verify=trusting) as http:
        with pytest.raises(httpx.HTTPError):  # no client certificate: refused in the handshake
            await http.post(url, json={"operation": "health_check"})
    trusting.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    async with httpx.AsyncClient(verify=trusting) as http:
        r = await http.post(url, json={"operation": "health_check"})
        assert r.status_code == 200 and r.json()["success"]
    async with httpx.AsyncClient(verify=ssl.create_default_context()) as http:
        with pytest.raises(httpx.HTTPError):  # a client that does not trust the CA
            await http.post(url, json={"operation": "health_check"})
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.HTTPError):  # plaintext to a TLS port
            await http.post(url.replace("https", "http"), json={"operation": "health_check"})


async def test_http_port_zero_is_off_and_default_port_falls_back_when_taken(
    nats_server, make_twin
) -> None:
    off = await make_twin(nats_server.url, http={"port": 0})
    assert off.gateway is None and off.http_port == 0
    holder = socket.socket()
    try:
        try:
            holder.bind(("127.0.0.1", 8080))
            holder.listen()
        except OSError:
            pass  # someone else holds 8080: taken either way
        app = await make_twin(nats_server.url, http={"port": 8080, "host": "127.0.0.1"})
        assert app.http_port not in (0, 8080)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{app.http_port}/healthz")).status_code == 200
    finally:
        holder.close()


def test_cli_http_port_flag_overrides_the_config() -> None:
    from twin.cli import _overrides, _with_command, build_parser

    args = build_parser("run").parse_args(_with_command(["--http-port", "0"]))
    assert _overrides(args)["digital_twin"]["http"] == {"port": 0}


async def test_console_is_served_from_the_package_with_no_external_urls(
    nats_server, make_twin
) -> None:
    import re

    from twin.gateway.server import console_dir

    files = sorted(p.name for p in console_dir().iterdir())
    assert {"index.html", "app.js", "chart.js", "style.css"} <= set(files)
    for name in files:
        text = (console_dir() / name).read_text()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), (
            f"{name} references another host"
        )
    app = await make_twin(nats_server.url, model="mock")
    async with httpx.AsyncClient(base_url=base(app)) as http:
        r = await http.get("/")
        assert r.status_code == 200 and "<title>POLARIS Digital Twin</title>" in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["server"] == "polaris-twin"
        for name in ("app.js", "chart.js", "style.css"):
            asset = await http.get(f"/console/{name}")
            assert asset.status_code == 200 and asset.text == (console_dir() / name).read_text()
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert (await http.get("/console/")).status_code in (403, 404)  # no directory listing
        assert (await http.get("/console/../../pyproject.toml")).status_code in (403, 404)
    off = await make_twin(
        nats_server.url, model="mock", http={"port": -1, "host": "127.0.0.1", "console": False}
    )
    async with httpx.AsyncClient(base_url=base(off)) as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/healthz")).status_code == 200
