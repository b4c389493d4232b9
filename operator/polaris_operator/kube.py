"""A small async Kubernetes API client over aiohttp, fed by kopf's credentials.

Why not ``kubernetes_asyncio`` or ``kr8s``: the operator needs five verbs on three
built-in kinds plus a status patch. aiohttp is already there (kopf depends on it) and
kopf already discovers credentials (service account in a pod, kubeconfig elsewhere); the
login handler hands the same ``kopf.ConnectionInfo`` to this client. No generated model
classes, no second configuration loader, no new dependency.

Errors are typed (:class:`ApiError` with ``status``/``reason``) so handlers can map them:
404 -> create, 409 -> re-read and retry, 5xx/429 -> ``kopf.TemporaryError``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp

__all__ = ["ApiError", "KubeClient", "resource_path"]

_CORE = {"ConfigMap": "configmaps", "Service": "services", "Secret": "secrets", "Event": "events"}
_APPS = {"Deployment": "deployments"}


class ApiError(Exception):
    """A non-2xx answer of the Kubernetes API."""

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


def resource_path(
    api_version: str, kind_or_plural: str, namespace: str | None, name: str | None = None
) -> str:
    """REST path of a namespaced object or collection, e.g. ``/apis/apps/v1/namespaces/x/deployments/y``."""
    plural = _CORE.get(kind_or_plural) or _APPS.get(kind_or_plural) or kind_or_plural
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    return f"{path}/{name}" if name else path


LoginFn = Callable[[], Awaitable[Any]]


class KubeClient:
    """JSON over HTTP to the API server with kopf's ``ConnectionInfo``.

    ``login`` is called lazily and again after a 401 (rotated service-account tokens).
    """

    def __init__(self, login: LoginFn, *, timeout: float = 30.0) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._server = ""
        self._lock = asyncio.Lock()
        self._tmpfiles: list[Any] = []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for f in self._tmpfiles:
            f.close()
        self._tmpfiles.clear()

    async def _ensure(self, *, refresh: bool = False) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and not refresh:
                return self._session
            info = await self._login()
            if info is None:
                raise ApiError(401, "Unauthorized", "no Kubernetes credentials found")
            old, self._session = self._session, self._make_session(info)
            if old is not None:
                await old.close()
            return self._session

    def _tmp(self, data: str | bytes) -> str:
        f = tempfile.NamedTemporaryFile(prefix="polaris-op-", suffix=".pem")  # noqa: SIM115
        f.write(data if isinstance(data, bytes) else data.encode())
        f.flush()
        self._tmpfiles.append(f)
        return f.name

    def _make_session(self, info: Any) -> aiohttp.ClientSession:
        self._server = str(info.server).rstrip("/")
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            raw = f"{info.username}:{info.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        ssl_ctx: ssl.SSLContext | bool = True
        if self._server.startswith("https"):
            if info.insecure:
                ssl_ctx = False
            else:
                ctx = ssl.create_default_context()
                if info.ca_path:
                    ctx.load_verify_locations(cafile=info.ca_path)
                elif info.ca_data:
                    ctx.load_verify_locations(cadata=_pem(info.ca_data).decode())
                cert = info.certificate_path or (
                    self._tmp(_pem(info.certificate_data)) if info.certificate_data else None
                )
                key = info.private_key_path or (
                    self._tmp(_pem(info.private_key_data)) if info.private_key_data else None
                )
                if cert:
                    ctx.load_cert_chain(certfile=cert, keyfile=key)
                ssl_ctx = ctx
        return aiohttp.ClientSession(
            headers=headers,
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(ssl=ssl_ctx),
            trust_env=bool(getattr(info, "trust_env", False)),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call; retried once with fresh credentials after a 401."""
        for attempt in (1, 2):
            session = await self._ensure(refresh=attempt == 2)
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if body is not None else {}
            async with session.request(
                method, self._server + path, data=data, headers=headers, params=params
            ) as resp:
                text = await resp.text()
                if resp.status == 401 and attempt == 1:
                    continue
                if resp.status >= 400:
                    try:
                        status = json.loads(text)
                    except ValueError:
                        status = {}
                    raise ApiError(
                        resp.status,
                        str(status.get("reason") or resp.reason),
                        str(status.get("message") or text[:500]),
                    )
                return json.loads(text) if text else {}
        raise AssertionError("unreachable")  # pragma: no cover

    # Typed helpers for the calls the operator makes.

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as e:
            if e.not_found:
                return None
            raise

    # Strict field validation: an unknown field is a 422 (reported as an invalid spec),
    # not silently dropped (which would look like drift forever).
    _STRICT: Mapping[str, str] = MappingProxyType(
        {"fieldValidation": "Strict", "fieldManager": "polaris-twin-operator"}
    )

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return await self.request("POST", path, body=obj, params=self._STRICT)

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the whole object; ``metadata.resourceVersion`` makes it a compare-and-swap."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return await self.request("PUT", path, body=obj, params=self._STRICT)

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource."""
        path = resource_path(api_version, plural, namespace, name) + "/status"
        return await self.request(
            "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
        )


def _pem(data: str | bytes) -> bytes:
    """kubeconfig ``*-data`` fields are base64 of PEM; accept raw PEM too."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)
