"""Thin kopf handlers: observe, build (pure), apply idempotently, report.

Reconciliation is level-based: every trigger runs the same :func:`reconcile`, which
renders the desired ConfigMap / Service / Deployment from the *current* DigitalTwin,
creates what is missing, replaces what drifted (compare-and-swap on
``resourceVersion``; a 409 re-reads and retries) and writes ``status`` from the
Deployment's actual state. Triggers:

- the DigitalTwin is created, updated, or found at operator start (``resume``);
- one of its children changes or disappears (watched with a server-side label
  selector on ``app.kubernetes.io/managed-by``): a deleted or edited child is put
  back at once, and the Deployment's rollout progress lands in the twin's status.

Children carry a controller owner reference (``kopf.adopt``), so Kubernetes' garbage
collector deletes them with the DigitalTwin: no finalizer, so deleting a twin never
waits for the operator. kopf keeps its own bookkeeping in annotations, never in
``status`` (the CRD's structural schema would prune it).

Outcomes: a spec the operator cannot honour → status ``InvalidSpec`` + a Warning event
+ ``kopf.PermanentError`` (no retries until the spec changes); an API hiccup, a child
being deleted, or a name still held by a previous twin → ``kopf.TemporaryError``.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from .builders import (
    API_GROUP,
    API_VERSION,
    MANAGED_BY,
    PLURAL,
    SpecError,
    build_configmap,
    build_deployment,
    build_service,
    build_twin_config,
    conditions_equal,
    config_hash,
    first_difference,
    invalid_spec_status,
    is_subset,
    status_from_deployment,
)
from .kube import ApiError, KubeClient

__all__ = ["reconcile"]

DT_API = f"{API_GROUP}/{API_VERSION}"
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
IMAGE_ENV = "POLARIS_TWIN_IMAGE"

# Service fields the API server allocates: a PUT without them would be refused or
# would re-allocate (new cluster IP, new node ports).
_SERVICE_ALLOCATED = (
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
    "healthCheckNodePort",
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(obj: Any) -> Any:
    """kopf bodies are read-only views; builders and adopt want plain dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _validate(config: Mapping[str, Any]) -> list[str]:
    """Errors of the rendered config against the twin's own schema (shared, not copied)."""
    try:
        from twin.core.config import validate_config
    except ImportError:  # an operator-only install: the twin validates at start instead
        return []
    return validate_config(config)


# --------------------------------------------------------------------------- setup


async def _discover_credentials(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """In a pod: the service account; elsewhere: the kubeconfig (KUBECONFIG)."""
    return await _discover_credentials(settings)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="polaris.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="polaris.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "polaris.io/twin-operator"
    settings.posting.reporting_component = MANAGED_BY
    # kopf's own log lines become Events from WARNING up; our Normal events are explicit.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    for resource in (("apps", "v1", "deployments"), ("v1", "services"), ("v1", "configmaps")):
        settings.watching.label_selectors[resource] = MANAGED_SELECTOR
    memo.client = KubeClient(lambda: _discover_credentials(settings))
    memo.locks = collections.defaultdict(asyncio.Lock)
    memo.unconverged = {}
    memo.default_image = os.environ.get(IMAGE_ENV, "")


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    client = getattr(memo, "client", None)
    if client is not None:
        await client.close()


# --------------------------------------------------------------------------- applying


def _controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def _prepare_replacement(desired: dict[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(desired)
    lmeta, meta = live.get("metadata", {}), body["metadata"]
    meta["resourceVersion"] = lmeta.get("resourceVersion")
    # Keep what others added (revision annotations, extra labels); ours win.
    meta["labels"] = {**(lmeta.get("labels") or {}), **(meta.get("labels") or {})}
    meta["annotations"] = {**(lmeta.get("annotations") or {}), **(meta.get("annotations") or {})}
    if body["kind"] == "Service":
        lspec = live.get("spec") or {}
        for key in _SERVICE_ALLOCATED:
            if key in lspec:
                body["spec"][key] = lspec[key]
        node_ports = {p.get("name"): p.get("nodePort") for p in lspec.get("ports") or []}
        if body["spec"].get("type") in ("NodePort", "LoadBalancer"):
            for port in body["spec"]["ports"]:
                if node_ports.get(port["name"]):
                    port["nodePort"] = node_ports[port["name"]]
    return body


async def _apply(
    client: KubeClient,
    desired: dict[str, Any],
    dt: Mapping[str, Any],
    logger: Any,
    trigger: str,
    unconverged: dict[tuple[str, str, str], str] | None = None,
) -> dict[str, Any]:
    """Create or replace one child; returns the live object.

    ``unconverged`` remembers desired states the API server did not keep after a replace
    (a field it drops or rewrites): replacing again would only loop through our own watch
    events, so such a spec is reported as invalid until it changes.
    """
    kind, meta = desired["kind"], desired["metadata"]
    ident = f"{kind} {meta['name']}"
    key = (kind, meta["namespace"], meta["name"])
    digest = config_hash(json.dumps(desired, sort_keys=True))
    unconverged = {} if unconverged is None else unconverged
    for _attempt in range(3):
        live = await client.get(desired["apiVersion"], kind, meta["namespace"], meta["name"])
        if live is None:
            try:
                created = await client.create(desired)
            except ApiError as e:
                if e.conflict:  # created concurrently: compare with it on the next round
                    continue
                raise
            kopf.event(dt, type="Normal", reason="Created", message=f"Created {ident}")
            logger.info(f"Created {ident}")
            return created
        if live.get("metadata", {}).get("deletionTimestamp"):
            raise kopf.TemporaryError(
                f"{ident} is being deleted; recreating it afterwards", delay=5
            )
        owner = _controller_uid(live)
        if owner != dt["metadata"].get("uid"):
            labels = live.get("metadata", {}).get("labels") or {}
            if owner and labels.get("app.kubernetes.io/managed-by") == MANAGED_BY:
                raise kopf.TemporaryError(
                    f"{ident} still belongs to a deleted DigitalTwin; waiting for garbage collection",
                    delay=10,
                )
            raise SpecError(f"{ident} already exists and is not managed by this DigitalTwin")
        if is_subset(desired, live):
            unconverged.pop(key, None)
            return live
        if unconverged.get(key) == digest:
            raise SpecError(
                f"{ident}: the API server does not keep {first_difference(desired, live)} as "
                "rendered from this spec; fix the spec (e.g. an unknown field in affinity)"
            )
        try:
            replaced = await client.replace(_prepare_replacement(desired, live))
        except ApiError as e:
            if e.conflict:  # changed under us: re-read and compare again
                continue
            raise
        if not is_subset(desired, replaced):
            unconverged[key] = digest
        reason = "DriftRepaired" if trigger.startswith("child") else "Updated"
        kopf.event(
            dt,
            type="Normal",
            reason=reason,
            message=f"{reason.replace('Repaired', ' repaired')} {ident}",
        )
        logger.info(f"{reason}: {ident} ({trigger}; differs at {first_difference(desired, live)})")
        return replaced
    raise kopf.TemporaryError(f"{ident} keeps changing concurrently; retrying", delay=2)


async def _write_status(client: KubeClient, dt: Mapping[str, Any], status: dict[str, Any]) -> None:
    old = dt.get("status") or {}
    same = conditions_equal(old.get("conditions") or [], status.get("conditions") or []) and all(
        old.get(k) == v for k, v in status.items() if k != "conditions"
    )
    if same:
        return
    meta = dt["metadata"]
    try:
        await client.patch_status(DT_API, PLURAL, meta["namespace"], meta["name"], status)
    except ApiError as e:
        if not e.not_found:  # deleted meanwhile: its children go with it
            raise


async def reconcile(body: Mapping[str, Any], memo: kopf.Memo, logger: Any, *, trigger: str) -> None:
    """Converge one DigitalTwin's children towards its spec and report its status."""
    dt = _plain(body)
    meta = dt["metadata"]
    client: KubeClient = memo.client
    async with memo.locks[(meta["namespace"], meta["name"])]:
        try:
            try:
                config = build_twin_config(dt)
                errors = _validate(config)
                if errors:
                    raise SpecError("the rendered twin config is invalid: " + "; ".join(errors[:5]))
                children = [
                    build_configmap(dt, config),
                    build_service(dt),
                    build_deployment(dt, default_image=memo.default_image, config=config),
                ]
                kopf.adopt(children, owner=dt)
                live = {
                    c["kind"]: await _apply(client, c, dt, logger, trigger, memo.unconverged)
                    for c in children
                }
            except ApiError as e:
                if e.status == 422:  # the API refused a manifest built from this spec
                    raise SpecError(f"the API server rejected a child: {e.message}") from e
                raise
            status = status_from_deployment(
                dt, live["Deployment"], now=_now(), config_digest=config_hash(config)
            )
            await _write_status(client, dt, status)
        except SpecError as e:
            logger.error(f"InvalidSpec: {e}")
            kopf.warn(dt, reason="InvalidSpec", message=str(e))
            try:
                await _write_status(client, dt, invalid_spec_status(dt, str(e), now=_now()))
            except ApiError as status_error:
                logger.warning(f"could not write status: {status_error}")
            raise kopf.PermanentError(str(e)) from e
        except ApiError as e:
            if e.status == 403:
                kopf.warn(dt, reason="Forbidden", message=e.message[:1000])
                raise kopf.TemporaryError(f"forbidden: {e.message}", delay=60) from e
            if e.transient or e.status == 404:
                raise kopf.TemporaryError(str(e), delay=10) from e
            raise kopf.PermanentError(str(e)) from e


# --------------------------------------------------------------------------- handlers


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL)
async def twin_changed(
    body: kopf.Body, reason: str, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    await reconcile(body, memo, logger, trigger=f"twin {reason}")


def _twin_owner(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == "DigitalTwin"
            and str(ref.get("apiVersion", "")).startswith(f"{API_GROUP}/")
        ):
            return ref
    return None


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
async def child_changed(
    event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """A child changed or vanished: put it back and refresh the twin's status."""
    etype = event.get("type")
    if etype is None:  # initial listing: the resume handlers reconcile every twin anyway
        return
    owner = _twin_owner(body)
    if owner is None:
        return
    namespace = body["metadata"].get("namespace")
    dt = await memo.client.get(DT_API, PLURAL, namespace, owner["name"])
    if dt is None or dt["metadata"].get("uid") != owner.get("uid"):
        return  # the owner is gone: garbage collection handles the child
    if dt["metadata"].get("deletionTimestamp"):
        return
    await reconcile(dt, memo, logger, trigger=f"child {body.get('kind', '?')} {etype}")
