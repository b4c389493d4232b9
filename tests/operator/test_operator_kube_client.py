"""The operator's API access: the official kubernetes_asyncio client with kopf's credentials.

Two servers: kmock's Kubernetes emulator (the real REST paths, resourceVersion
compare-and-swap, status subresource) and a scripted aiohttp server for what an emulator
does not do on its own (expired tokens, 5xx and 429 answers). Then the mapping the
handlers rely on: 404 → create, 409 → re-read, 5xx/429/unreachable → kopf.TemporaryError.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp.web
import kopf
import pytest
from aiohttp.test_utils import TestServer

from polaris_operator import builders as b
from polaris_operator import handlers as h
from polaris_operator.kube import ApiError, KubeClient, _pem, kinds

from crd_tools import admitted, load_examples
from kube_emulator import EmulatorThread


def test_kubeconfig_data_fields_are_base64_of_pem():
    pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    assert _pem(base64.b64encode(pem).decode()) == pem
    assert _pem(pem) == pem


def test_the_client_serves_every_kind_the_builders_make():
    dt = admitted(load_examples()["digitaltwin-statistical.yaml"])
    _, children = b.build_children(dt, default_image="i:1")
    made = {(c["apiVersion"], c["kind"]) for c in children}
    mock = admitted(load_examples()["digitaltwin-mock.yaml"])
    made |= {(c["apiVersion"], c["kind"]) for c in b.build_children(mock, default_image="i:1")[1]}
    assert made <= set(kinds())
    assert ("v1", "Pod") in kinds()  # read for status


# ----------------------------------------------------------------------- the emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[Any]:
    with EmulatorThread() as em:
        yield em


@pytest.fixture
async def client(emulator: Any) -> AsyncIterator[KubeClient]:
    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=emulator.url, token="t")

    c = KubeClient(login)
    yield c
    await c.close()


async def test_create_get_replace_list_delete_on_the_emulator(client, emulator):
    dt = admitted(copy.deepcopy(load_examples()["digitaltwin-statistical.yaml"]))
    dt["metadata"]["namespace"] = "kube-client"
    _, children = b.build_children(dt, default_image="i:1")
    created = {}
    for child in children:
        created[child["kind"], child["metadata"]["name"]] = await client.create(child)
    sts = created["StatefulSet", "twin-statistical"]
    assert sts["metadata"]["resourceVersion"] and sts["metadata"]["uid"]
    assert b.is_subset(children[-1], sts)  # a JSON round trip, no model classes in between

    live = await client.get("apps/v1", "StatefulSet", "kube-client", "twin-statistical")
    assert live == sts
    assert await client.get("apps/v1", "Deployment", "kube-client", "twin-statistical") is None

    changed = copy.deepcopy(live)
    changed["spec"]["replicas"] = 3
    replaced = await client.replace(changed)
    assert replaced["spec"]["replicas"] == 3
    with pytest.raises(ApiError) as err:  # the stale resourceVersion: compare-and-swap lost
        await client.replace(changed)
    assert err.value.conflict and not err.value.transient

    services = await client.list(
        "v1", "Service", "kube-client", label_selector="polaris.io/digitaltwin=twin-statistical"
    )
    assert sorted(s["metadata"]["name"] for s in services) == [
        "twin-statistical",
        "twin-statistical-pods",
    ]
    await client.delete("apps/v1", "StatefulSet", "kube-client", "twin-statistical")
    assert await client.get("apps/v1", "StatefulSet", "kube-client", "twin-statistical") is None
    await client.delete("apps/v1", "StatefulSet", "kube-client", "twin-statistical")  # idempotent
    agents = {agent for agent, _ in emulator.emulator.seen}
    assert "polaris-twin-operator" in agents


async def test_status_is_a_merge_patch_of_the_subresource(client, emulator):
    import httpx

    dt = admitted(copy.deepcopy(load_examples()["digitaltwin-mock.yaml"]))
    dt["metadata"]["namespace"] = "kube-status"
    path = "/apis/polaris.io/v1alpha1/namespaces/kube-status/digitaltwins"
    async with httpx.AsyncClient(base_url=emulator.url) as http:
        (await http.post(path, json=dt)).raise_for_status()
    await client.patch_status(
        "polaris.io/v1alpha1", "digitaltwins", "kube-status", "twin-mock", {"endpoint": "x:1"}
    )
    await client.patch_status(
        "polaris.io/v1alpha1", "digitaltwins", "kube-status", "twin-mock", {"replicas": 1}
    )
    got = await client.get("polaris.io/v1alpha1", "digitaltwins", "kube-status", "twin-mock")
    assert got["status"] == {"endpoint": "x:1", "replicas": 1}
    assert got["spec"] == dt["spec"]


# ----------------------------------------------------------------------- scripted answers


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[list[str], Any]]:
    seen: list[str] = []

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(f"{request.method} {request.path} {request.headers.get('Authorization')}")
        if request.headers.get("Authorization") != "Bearer fresh":
            return aiohttp.web.json_response(
                {"reason": "Unauthorized", "message": "expired"}, status=401
            )
        if request.path.endswith("/missing"):
            return aiohttp.web.json_response({"reason": "NotFound", "message": "nope"}, status=404)
        if "/busy" in request.path:
            return aiohttp.web.json_response(
                {"reason": "TooManyRequests", "message": "slow down"}, status=429
            )
        if request.path.endswith("/broken"):
            return aiohttp.web.Response(status=503, text="etcd unavailable")
        return aiohttp.web.json_response({"kind": "ConfigMap", "metadata": {"name": "c"}})

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        yield seen, server


async def test_rotated_tokens_are_picked_up_after_a_401(scripted):
    seen, server = scripted
    tokens = iter(["stale", "fresh"])

    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(server.make_url("")), token=next(tokens, "fresh"))

    client = KubeClient(login)
    try:
        obj = await client.get("v1", "ConfigMap", "ns", "c")
        assert obj == {"kind": "ConfigMap", "metadata": {"name": "c"}}
        assert seen == [
            "GET /api/v1/namespaces/ns/configmaps/c Bearer stale",
            "GET /api/v1/namespaces/ns/configmaps/c Bearer fresh",
        ]
        assert await client.get("v1", "ConfigMap", "ns", "missing") is None
        for name, status, text in (("busy", 429, "slow down"), ("broken", 503, "etcd")):
            with pytest.raises(ApiError) as err:
                await client.get("apps/v1", "Deployment", "ns", name)
            assert err.value.status == status and err.value.transient
            assert text in err.value.message
    finally:
        await client.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_api_server_is_a_transient_error():
    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=f"http://127.0.0.1:{_closed_port()}", token="t")

    client = KubeClient(login, timeout=5)
    try:
        with pytest.raises(ApiError) as err:
            await client.get("v1", "ConfigMap", "ns", "c")
        assert err.value.status == 503 and err.value.transient
    finally:
        await client.close()


class _Log:
    def info(self, *_: Any) -> None: ...
    def warning(self, *_: Any) -> None: ...
    def error(self, *_: Any) -> None: ...


async def test_transient_api_errors_become_kopf_temporary_errors(scripted, monkeypatch):
    _, server = scripted

    async def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=str(server.make_url("")), token="fresh")

    monkeypatch.setattr(h.kopf, "event", lambda *a, **k: None)
    monkeypatch.setattr(h.kopf, "warn", lambda *a, **k: None)
    dt = admitted(copy.deepcopy(load_examples()["digitaltwin-mock.yaml"]))
    dt["metadata"].update(name="busy", namespace="ns", uid="u")
    memo = kopf.Memo(
        client=KubeClient(login),
        locks=collections.defaultdict(asyncio.Lock),
        unconverged={},
        problems={},
        default_image="i:1",
    )
    try:
        # The API server answers 429 to the first GET (the ConfigMap busy-config).
        with pytest.raises(kopf.TemporaryError):
            await h.reconcile(dt, memo, _Log(), trigger="twin create")
    finally:
        await memo.client.close()
