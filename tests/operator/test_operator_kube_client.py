"""The operator's small API client: credentials from kopf, typed errors, re-login on 401."""

from __future__ import annotations

import base64

import aiohttp.web
import kopf
import pytest
from aiohttp.test_utils import TestServer
from polaris_operator.kube import ApiError, KubeClient, _pem, resource_path


def test_paths_for_core_apps_and_custom_resources():
    assert resource_path("v1", "ConfigMap", "ns", "c") == "/api/v1/namespaces/ns/configmaps/c"
    assert resource_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert resource_path("polaris.io/v1alpha1", "digitaltwins", "ns", "t") == (
        "/apis/polaris.io/v1alpha1/namespaces/ns/digitaltwins/t"
    )


def test_kubeconfig_data_fields_are_base64_of_pem():
    pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    assert _pem(base64.b64encode(pem).decode()) == pem
    assert _pem(pem) == pem


async def test_rotated_tokens_are_picked_up_after_a_401():
    seen: list[str] = []

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer fresh":
            return aiohttp.web.json_response(
                {"reason": "Unauthorized", "message": "expired"}, status=401
            )
        if request.path.endswith("/missing"):
            return aiohttp.web.json_response({"reason": "NotFound", "message": "nope"}, status=404)
        if request.method == "PUT":
            return aiohttp.web.json_response(
                {"reason": "Conflict", "message": "the object has been modified"}, status=409
            )
        return aiohttp.web.json_response({"kind": "ConfigMap", "metadata": {"name": "c"}})

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    tokens = iter(["stale", "fresh"])

    async with TestServer(app) as server:

        async def login() -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=str(server.make_url("")), token=next(tokens, "fresh"))

        client = KubeClient(login)
        try:
            obj = await client.get("v1", "ConfigMap", "ns", "c")
            assert obj == {"kind": "ConfigMap", "metadata": {"name": "c"}}
            assert seen == ["Bearer stale", "Bearer fresh"]
            assert await client.get("v1", "ConfigMap", "ns", "missing") is None
            with pytest.raises(ApiError) as err:
                await client.replace(
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "c", "namespace": "ns"},
                    }
                )
            assert err.value.conflict and err.value.status == 409
            assert "modified" in err.value.message
        finally:
            await client.close()
