"""kmock's Kubernetes emulator plus the API-server behaviour the operator relies on.

kmock's ``KubernetesEmulator`` stores objects, serves list/watch/get/create/patch/delete,
and streams watch events. A real API server also does what is added here:

- stamps ``metadata.uid``, ``resourceVersion``, ``generation`` (bumped on spec changes
  only) and ``creationTimestamp``;
- serves ``PUT`` (replace) as a compare-and-swap on ``resourceVersion`` (409 on a stale
  one), which the operator uses to repair drift;
- keeps ``status`` apart: the main resource ignores status changes, ``/status`` changes
  only status (for the kinds that have a status subresource);
- garbage-collects dependants: deleting an owner deletes objects whose
  ``ownerReferences`` point at its uid (background cascading deletion).

It runs in its own thread and event loop, so the synchronous test body, the emulator and
the operator (``kopf.testing.KopfRunner``, itself a thread) never block one another.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from typing import Any, Self

import aiohttp.web
import attrs
import kmock
from kmock._internal import dicts as kmock_dicts

WITH_STATUS = {"digitaltwins", "deployments", "statefulsets", "services"}


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    _rv: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    seen: list[tuple[str, str]] = attrs.field(factory=list, init=False)  # (user agent, method+url)

    def _next_rv(self) -> str:
        return str(next(self._rv))

    def _key(self, request: Any) -> Any:
        return (request.resource, request.namespace, request.name)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        self.seen.append(
            (request.headers.get("User-Agent", ""), f"{request.method.value} {request.url}")
        )
        if request.resource is None:
            return await super()._handle(request)
        if request.method == kmock.method.PUT and request.name:
            return await self._replace(request)
        deleted_uid = None
        async with self._lock:
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if request.namespace:
                    meta.setdefault("namespace", request.namespace)
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.update(
                    uid=str(uuid.uuid4()),
                    resourceVersion=self._next_rv(),
                    generation=1,
                    creationTimestamp=_now(),
                )
                request.data.pop("status", None) if request.resource.plural in WITH_STATUS else None
            elif request.action == kmock.action.UPDATE and isinstance(request.data, dict):
                self._stamp_patch(request)
            elif request.action == kmock.action.DELETE:
                key = self._key(request)
                if key in self._objects and not self._objects[key].deleted:
                    deleted_uid = self._objects[key].get("metadata", {}).get("uid")
        response = await super()._handle(request)
        if deleted_uid and response.status < 400:
            await self._collect_garbage(deleted_uid)
        if request.action == kmock.action.CREATE and response.status < 400:
            await self._collect_orphan(request)
        return response

    async def _collect_orphan(self, request: Any) -> None:
        """Like the real garbage collector: a dependant whose owners are all gone is deleted."""
        meta = request.data.get("metadata", {}) if isinstance(request.data, dict) else {}
        owners = {r.get("uid") for r in meta.get("ownerReferences") or []}
        if not owners:
            return
        async with self._lock:
            alive = {
                obj.get("metadata", {}).get("uid")
                for obj in self._objects.values()
                if not obj.deleted
            }
            key = (request.resource, meta.get("namespace"), meta.get("name"))
            if owners & alive or key not in self._objects or self._objects[key].deleted:
                return
            raw = self._objects[key].raw
            self._objects[key].delete()
            await self._buses[request.resource].put({"type": "DELETED", "object": raw})

    def _stamp_patch(self, request: Any) -> None:
        key = self._key(request)
        if key not in self._objects or self._objects[key].deleted:
            return  # the emulator answers 404
        current = self._objects[key].raw
        plural = request.resource.plural
        if plural in WITH_STATUS:
            if request.subresource == "status":
                for field in list(request.data):
                    if field != "status":
                        request.data.pop(field)
            else:
                request.data.pop("status", None)
        meta = request.data.setdefault("metadata", {})
        if not isinstance(meta, dict):
            return
        patched = kmock_dicts.patch_dict(copy.deepcopy(current), copy.deepcopy(request.data))
        generation = current.get("metadata", {}).get("generation", 1)
        if patched.get("spec") != current.get("spec"):
            generation += 1
        meta.update(resourceVersion=self._next_rv(), generation=generation)

    async def _replace(self, request: Any) -> aiohttp.web.StreamResponse:
        key = self._key(request)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            current = self._objects[key].raw
            body = copy.deepcopy(request.data)
            cmeta, meta = current.get("metadata", {}), body.setdefault("metadata", {})
            if meta.get("resourceVersion") and meta["resourceVersion"] != cmeta.get(
                "resourceVersion"
            ):
                return await self._render_error(
                    kmock.KubernetesError(
                        status=409,
                        reason="Conflict",
                        message="the object has been modified; please apply your changes to the "
                                "latest version",
                    )
                )
            for field in ("uid", "creationTimestamp", "namespace"):
                meta[field] = cmeta.get(field)
            generation = cmeta.get("generation", 1)
            if body.get("spec") != current.get("spec"):
                generation += 1
            meta.update(resourceVersion=self._next_rv(), generation=generation)
            if request.resource.plural in WITH_STATUS:
                body["status"] = copy.deepcopy(current.get("status", {}))
                body.pop("status") if not body["status"] else None
            self._objects[key].create(body)
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    async def _collect_garbage(self, owner_uid: str) -> None:
        doomed = []
        async with self._lock:
            for (resource, _ns, _name), obj in list(self._objects.items()):
                if obj.deleted:
                    continue
                refs = obj.get("metadata", {}).get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs):
                    raw = obj.raw
                    obj.delete()
                    doomed.append((resource, raw))
            for resource, raw in doomed:
                await self._buses[resource].put({"type": "DELETED", "object": raw})
        for _, raw in doomed:  # cascade further down (ReplicaSets, Pods, ... in a real cluster)
            await self._collect_garbage(raw["metadata"]["uid"])


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


RESOURCES = {
    "polaris.io/v1alpha1/digitaltwins": kmock.ResourceInfo(
        kind="DigitalTwin",
        singular="digitaltwin",
        namespaced=True,
        shortnames={"dt"},
        categories={"polaris"},
        subresources={"status", "scale"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment",
        singular="deployment",
        namespaced=True,
        subresources={"status", "scale"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "apps/v1/statefulsets": kmock.ResourceInfo(
        kind="StatefulSet",
        singular="statefulset",
        namespaced=True,
        subresources={"status", "scale"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "v1/pods": kmock.ResourceInfo(
        kind="Pod",
        singular="pod",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service",
        singular="service",
        namespaced=True,
        subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "v1/configmaps": kmock.ResourceInfo(
        kind="ConfigMap",
        singular="configmap",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    # kopf's backbone: it waits for these to be discoverable before it starts watching.
    "v1/namespaces": kmock.ResourceInfo(
        kind="Namespace",
        singular="namespace",
        namespaced=False,
        verbs={"get", "list", "watch"},
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        namespaced=False,
        verbs={"get", "list", "watch"},
    ),
    "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
        kind="ClusterKopfPeering",
        singular="clusterkopfpeering",
        namespaced=False,
        verbs={"get", "list", "watch", "create", "patch"},
    ),
    "v1/events": kmock.ResourceInfo(
        kind="Event",
        singular="event",
        namespaced=True,
        verbs={"create", "get", "list"},
    ),
}


class EmulatorThread:
    """Runs a :class:`ClusterEmulator` on 127.0.0.1 (random port) in a daemon thread."""

    def __init__(self) -> None:
        self.url = ""
        self.emulator: ClusterEmulator | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10) or self._error:
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - re-raised in __enter__
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
            for resource, info in RESOURCES.items():
                emulator.resources[resource] = info
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
