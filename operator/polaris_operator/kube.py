"""The operator's Kubernetes API access: the official ``kubernetes_asyncio`` client, fed by
kopf's credentials.

kopf already discovers credentials (the service account in a pod, the kubeconfig
elsewhere); its ``ConnectionInfo`` is turned into a ``kubernetes_asyncio`` configuration
here, so there is one login and no second configuration loader. The typed API classes
(``CoreV1Api``, ``AppsV1Api``, ``CustomObjectsApi``) make the calls; responses are read
as plain JSON (``_preload_content=False``) because the builders and the drift check work
on the same dicts the API server sends, not on generated model classes.

Errors are typed (:class:`ApiError` with ``status``/``reason``) so handlers map them:
404 → create, 409 → re-read and retry, 5xx/429 (and an unreachable server) →
``kopf.TemporaryError``. A 401 logs in again once (rotated service-account tokens).
"""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["ApiError", "KubeClient", "kinds"]


class ApiError(Exception):
    """A non-2xx answer of the Kubernetes API (status 503 when it could not be reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def transient(self) -> bool:
        return self.status in (429, 500, 502, 503, 504)


# (apiVersion, kind) -> (API class, snake-case name in its method names).
_KINDS: dict[tuple[str, str], tuple[type[Any], str]] = {
    ("v1", "ConfigMap"): (k8s.CoreV1Api, "config_map"),
    ("v1", "Service"): (k8s.CoreV1Api, "service"),
    ("v1", "Pod"): (k8s.CoreV1Api, "pod"),
    ("v1", "PersistentVolumeClaim"): (k8s.CoreV1Api, "persistent_volume_claim"),
    ("apps/v1", "Deployment"): (k8s.AppsV1Api, "deployment"),
    ("apps/v1", "StatefulSet"): (k8s.AppsV1Api, "stateful_set"),
}


def kinds() -> list[tuple[str, str]]:
    """The built-in (apiVersion, kind) pairs this client serves."""
    return sorted(_KINDS)


LoginFn = Callable[[], Awaitable[Any]]
# Strict field validation: an unknown field is a 422 (reported as an invalid spec), not
# silently dropped (which would look like drift forever).
_WRITE = {"field_validation": "Strict", "field_manager": "polaris-twin-operator"}


class KubeClient:
    """Typed calls on the objects the operator manages, with kopf's ``ConnectionInfo``.

    ``login`` is called lazily and again after a 401 (rotated service-account tokens).
    """

    def __init__(self, login: LoginFn, *, timeout: float = 30.0) -> None:
        self._login = login
        self._timeout = timeout
        self._api: k8s.ApiClient | None = None
        self._lock = asyncio.Lock()
        self._tmpfiles: list[Any] = []

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None
        for f in self._tmpfiles:
            f.close()
        self._tmpfiles.clear()

    # ------------------------------------------------------------------ login
    async def _ensure(self, *, refresh: bool = False) -> k8s.ApiClient:
        async with self._lock:
            if self._api is not None and not refresh:
                return self._api
            info = await self._login()
            if info is None:
                raise ApiError(401, "Unauthorized", "no Kubernetes credentials found")
            old, self._api = self._api, self._make_api(info)
            if old is not None:
                await old.close()
            return self._api

    def _tmp(self, data: str | bytes) -> str:
        f = tempfile.NamedTemporaryFile(prefix="polaris-op-", suffix=".pem")  # noqa: SIM115
        f.write(data if isinstance(data, bytes) else data.encode())
        f.flush()
        self._tmpfiles.append(f)
        return f.name

    def _make_api(self, info: Any) -> k8s.ApiClient:
        """A ``kubernetes_asyncio`` ApiClient from a ``kopf.ConnectionInfo``."""
        cfg = k8s.Configuration(host=str(info.server).rstrip("/"))
        cfg.verify_ssl = not info.insecure
        if info.ca_path:
            cfg.ssl_ca_cert = info.ca_path
        elif info.ca_data:
            cfg.ssl_ca_cert = self._tmp(_pem(info.ca_data))
        if info.certificate_path or info.certificate_data:
            cfg.cert_file = info.certificate_path or self._tmp(_pem(info.certificate_data))
        if info.private_key_path or info.private_key_data:
            cfg.key_file = info.private_key_path or self._tmp(_pem(info.private_key_data))
        api = k8s.ApiClient(configuration=cfg)
        api.user_agent = "polaris-twin-operator"
        if info.token:
            api.set_default_header("Authorization", f"{info.scheme or 'Bearer'} {info.token}")
        elif info.username and info.password:
            raw = f"{info.username}:{info.password}".encode()
            api.set_default_header("Authorization", "Basic " + base64.b64encode(raw).decode())
        return api

    # ------------------------------------------------------------------ calls
    async def _call(self, api_cls: type[Any], method: str, *args: Any, **kwargs: Any) -> Any:
        """One API call as JSON; retried once with fresh credentials after a 401."""
        for attempt in (1, 2):
            api = api_cls(await self._ensure(refresh=attempt == 2))
            try:
                resp = await getattr(api, method)(
                    *args, _preload_content=False, _request_timeout=self._timeout, **kwargs
                )
                async with resp:
                    status, reason, data = resp.status, resp.reason, await resp.read()
            except ApiException as e:  # raised before a response (bad arguments)
                raise ApiError(e.status or 400, str(e.reason), str(e.body or e)) from e
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise ApiError(503, "Unavailable", f"{e.__class__.__name__}: {e}") from e
            if status == 401 and attempt == 1:
                continue
            if status >= 400:
                try:
                    body = json.loads(data)
                except ValueError:
                    body = {}
                body = body if isinstance(body, dict) else {}
                raise ApiError(
                    status,
                    str(body.get("reason") or reason),
                    str(body.get("message") or data[:500].decode(errors="replace")),
                )
            return json.loads(data) if data else {}
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _kind(api_version: str, kind: str) -> tuple[type[Any], str]:
        try:
            return _KINDS[(api_version, kind)]
        except KeyError:
            raise ValueError(f"the operator does not manage {api_version} {kind}") from None

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist. ``kind`` may also be the plural of
        a custom resource (``digitaltwins``)."""
        try:
            if "." in api_version.split("/")[0]:
                group, version = api_version.split("/")
                return await self._call(
                    k8s.CustomObjectsApi,
                    "get_namespaced_custom_object",
                    group,
                    version,
                    namespace,
                    kind,
                    name,
                )
            api, snake = self._kind(api_version, kind)
            return await self._call(api, f"read_namespaced_{snake}", name, namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str, *, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        api, snake = self._kind(api_version, kind)
        kwargs = {"label_selector": label_selector} if label_selector else {}
        out = await self._call(api, f"list_namespaced_{snake}", namespace, **kwargs)
        return list(out.get("items") or [])

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        api, snake = self._kind(obj["apiVersion"], obj["kind"])
        ns = obj["metadata"]["namespace"]
        return await self._call(api, f"create_namespaced_{snake}", ns, dict(obj), **_WRITE)

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; ``metadata.resourceVersion`` makes it a compare-and-swap."""
        api, snake = self._kind(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        return await self._call(
            api, f"replace_namespaced_{snake}", meta["name"], meta["namespace"], dict(obj), **_WRITE
        )

    async def delete(
        self, api_version: str, kind: str, namespace: str, name: str, *, uid: str | None = None
    ) -> None:
        """Delete (background cascade); ``uid`` makes sure it is the object we looked at."""
        api, snake = self._kind(api_version, kind)
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._call(api, f"delete_namespaced_{snake}", name, namespace, body=body)
        except ApiError as e:
            if not e.not_found:
                raise

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of a custom resource's status subresource."""
        group, version = api_version.split("/")
        return await self._call(
            k8s.CustomObjectsApi,
            "patch_namespaced_custom_object_status",
            group,
            version,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )


def _pem(data: str | bytes) -> bytes:
    """kubeconfig ``*-data`` fields are base64 of PEM; accept raw PEM too."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)
