"""Thin kopf handlers: observe, build (pure), apply idempotently, report.

Reconciliation is level-based: every trigger runs the same :func:`reconcile`, which
renders the desired ConfigMap / Services / workload from the *current* DigitalTwin
(``builders.build_children``), creates what is missing, replaces what drifted
(compare-and-swap on ``resourceVersion``; a 409 re-reads and retries), and writes
``status`` from the workload's actual state and its pods. Triggers:

- the DigitalTwin is created, updated, or found at operator start (``resume``);
- one of its children or pods changes or disappears (watched with a server-side label
  selector on ``app.kubernetes.io/managed-by``): a deleted or edited child is put back at
  once, and rollout progress and pod-level problems land in the twin's status.

The workload is a Deployment or a StatefulSet (see ``builders.manifests``). When the spec
moves a twin from one to the other, or changes a StatefulSet field the API server will
not update in place (its volumeClaimTemplates: snapshots turned on or off), the old
workload is deleted and the new one created; PersistentVolumeClaims are retained, so a
StatefulSet that comes back finds its snapshots.

Children carry a controller owner reference (``kopf.adopt``), so Kubernetes' garbage
collector deletes them with the DigitalTwin: no finalizer, so deleting a twin never waits
for the operator. kopf keeps its own bookkeeping in annotations, never in ``status`` (the
CRD's structural schema would prune it).

Outcomes: a spec the operator cannot honour → status ``InvalidSpec`` + a Warning event +
``kopf.PermanentError`` (no retries until the spec changes); an API hiccup, a child being
deleted, or a name still held by a previous twin → ``kopf.TemporaryError``. A pod that
cannot pull its image, crash-loops or cannot be scheduled → named in the ``Ready``
condition's message and reason, plus a Warning event when it first appears.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import kopf

from .builders import (
    API_GROUP,
    API_VERSION,
    MANAGED_BY,
    PLURAL,
    TWIN_LABEL,
    PodProblem,
    SpecError,
    build_children,
    conditions_equal,
    config_hash,
    first_difference,
    invalid_spec_status,
    is_subset,
    pod_problems,
    selector_labels,
    status_from_workload,
)
from .kube import ApiError, KubeClient
from .metrics import METRICS, OperatorMetrics, serve

__all__ = ["reconcile"]

DT_API = f"{API_GROUP}/{API_VERSION}"
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
IMAGE_ENV = "POLARIS_TWIN_IMAGE"
METRICS_PORT_ENV = "POLARIS_OPERATOR_METRICS_PORT"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# Watched with a server-side label selector (kopf selector keys).
WATCHED: tuple[tuple[str, ...], ...] = (
    ("apps", "v1", "deployments"),
    ("apps", "v1", "statefulsets"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("v1", "pods"),
)

# Service fields the API server allocates: a PUT without them would be refused or
# would re-allocate (new cluster IP, new node ports).
_SERVICE_ALLOCATED = (
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "ipFamilyPolicy",
    "healthCheckNodePort",
)
# StatefulSet fields the API server refuses to change in place.
_STATEFULSET_IMMUTABLE = ("serviceName", "podManagementPolicy", "selector", "volumeClaimTemplates")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(obj: Any) -> Any:
    """kopf bodies are read-only views; builders and adopt want plain dicts."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _metrics(memo: Any) -> OperatorMetrics:
    return getattr(memo, "metrics", None) or METRICS


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
    for resource in WATCHED:
        settings.watching.label_selectors[resource] = MANAGED_SELECTOR  # type: ignore[index]  # kopf's selector key type is narrower
    memo.client = KubeClient(lambda: _discover_credentials(settings))
    memo.locks = collections.defaultdict(asyncio.Lock)
    memo.unconverged = {}
    memo.problems = {}
    memo.default_image = os.environ.get(IMAGE_ENV, "")
    memo.metrics = getattr(memo, "metrics", None) or METRICS
    port = getattr(memo, "metrics_port", None)
    if port is None:
        port = int(os.environ.get(METRICS_PORT_ENV, "0") or 0)
    if port and not getattr(memo, "metrics_served", False):
        serve(port, memo.metrics)
        memo.metrics_served = True


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
            if key in lspec and not (key == "clusterIP" and body["spec"].get(key) == "None"):
                body["spec"][key] = lspec[key]
        node_ports = {p.get("name"): p.get("nodePort") for p in lspec.get("ports") or []}
        if body["spec"].get("type") in ("NodePort", "LoadBalancer"):
            for port in body["spec"]["ports"]:
                if node_ports.get(port["name"]):
                    port["nodePort"] = node_ports[port["name"]]
    return body


def _immutable_change(desired: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
    """The StatefulSet field that cannot be updated in place, if the spec changed one."""
    if desired["kind"] != "StatefulSet":
        return None
    dspec, lspec = desired.get("spec") or {}, live.get("spec") or {}
    for key in _STATEFULSET_IMMUTABLE:
        want, have = dspec.get(key), lspec.get(key)
        if want is None and not have:
            continue
        if want is None or have is None or not is_subset(want, have):
            return key
    return None


async def _apply(
    client: KubeClient,
    desired: dict[str, Any],
    dt: Mapping[str, Any],
    logger: Any,
    trigger: str,
    unconverged: dict[tuple[str, str, str], str] | None = None,
    metrics: OperatorMetrics = METRICS,
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
            metrics.applied.labels(resource=kind, action="create").inc()
            if trigger.startswith("child"):
                metrics.drift_repairs.labels(resource=kind).inc()
            kopf.event(dt, type="Normal", reason="Created", message=f"Created {ident}")  # type: ignore[arg-type]  # kopf types Body, our handlers get Mappings
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
                    f"{ident} still belongs to a deleted DigitalTwin; waiting for garbage "
                    "collection",
                    delay=10,
                )
            raise SpecError(f"{ident} already exists and is not managed by this DigitalTwin")
        if is_subset(desired, live):
            unconverged.pop(key, None)
            return live
        frozen = _immutable_change(desired, live)
        if frozen:
            # The API server refuses this update: replace the StatefulSet (its claims stay).
            await client.delete(
                desired["apiVersion"],
                kind,
                meta["namespace"],
                meta["name"],
                uid=live["metadata"].get("uid"),
            )
            metrics.applied.labels(resource=kind, action="replace").inc()
            message = f"Replacing {ident}: spec.{frozen} cannot change in place"
            kopf.event(dt, type="Normal", reason="Replaced", message=message)  # type: ignore[arg-type]  # kopf types Body, our handlers get Mappings
            logger.info(message)
            continue
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
        drift = trigger.startswith("child")
        reason = "DriftRepaired" if drift else "Updated"
        metrics.applied.labels(resource=kind, action="update").inc()
        if drift:
            metrics.drift_repairs.labels(resource=kind).inc()
        kopf.event(
            dt,  # type: ignore[arg-type]  # kopf types Body, our handlers get Mappings
            type="Normal",
            reason=reason,
            message=f"{reason.replace('Repaired', ' repaired')} {ident}",
        )
        logger.info(f"{reason}: {ident} ({trigger}; differs at {first_difference(desired, live)})")
        return replaced
    raise kopf.TemporaryError(f"{ident} keeps changing concurrently; retrying", delay=2)


async def _remove_other_workloads(
    client: KubeClient, dt: Mapping[str, Any], keep: str, logger: Any, metrics: OperatorMetrics
) -> None:
    """Delete this twin's workload of the other kind (Deployment ↔ StatefulSet switch)."""
    meta = dt["metadata"]
    for kind in WORKLOAD_KINDS:
        if kind == keep:
            continue
        live = await client.get("apps/v1", kind, meta["namespace"], meta["name"])
        if live is None or _controller_uid(live) != meta.get("uid"):
            continue
        if live["metadata"].get("deletionTimestamp"):
            continue
        await client.delete(
            "apps/v1", kind, meta["namespace"], meta["name"], uid=live["metadata"].get("uid")
        )
        metrics.applied.labels(resource=kind, action="delete").inc()
        message = f"Deleted {kind} {meta['name']}: the twin now runs as a {keep}"
        kopf.event(dt, type="Normal", reason="WorkloadReplaced", message=message)  # type: ignore[arg-type]  # kopf types Body, our handlers get Mappings
        logger.info(message)


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


async def _pods(client: KubeClient, dt: Mapping[str, Any], logger: Any) -> list[dict[str, Any]]:
    meta = dt["metadata"]
    selector = ",".join(f"{k}={v}" for k, v in sorted(selector_labels(meta["name"]).items()))
    try:
        return await client.list("v1", "Pod", meta["namespace"], label_selector=selector)
    except ApiError as e:  # status without pod details is still status
        logger.warning(f"cannot list the twin's pods: {e}")
        return []


def _report_pod_problems(dt: Mapping[str, Any], problems: list[PodProblem], memo: Any) -> None:
    """A Warning event for each problem not reported before; the gauge by reason."""
    key = (dt["metadata"]["namespace"], dt["metadata"]["name"])
    known: dict[tuple[str, str], list[PodProblem]] = memo.problems
    before = {(p.pod, p.reason) for p in known.get(key, [])}
    for problem in problems:
        if (problem.pod, problem.reason) not in before:
            kopf.event(dt, type="Warning", reason=problem.reason, message=problem.describe())  # type: ignore[arg-type]  # kopf types Body, our handlers get Mappings
    if problems:
        known[key] = problems
    else:
        known.pop(key, None)
    metrics = _metrics(memo)
    counts = collections.Counter(p.reason for ps in known.values() for p in ps)
    for reason in set(counts) | set(getattr(memo, "problem_reasons", set())):
        metrics.pod_problems.labels(reason=reason).set(counts.get(reason, 0))
    memo.problem_reasons = set(counts) | set(getattr(memo, "problem_reasons", set()))


async def reconcile(body: Mapping[str, Any], memo: kopf.Memo, logger: Any, *, trigger: str) -> None:
    """Converge one DigitalTwin's children towards its spec and report its status."""
    dt = _plain(body)
    meta = dt["metadata"]
    client: KubeClient = memo.client
    metrics = _metrics(memo)
    metrics.reconciles.labels(trigger=trigger.split()[0]).inc()
    started = time.perf_counter()
    async with memo.locks[(meta["namespace"], meta["name"])]:
        try:
            try:
                config, children = build_children(dt, default_image=memo.default_image)
                kopf.adopt(children, owner=dt)
                workload: dict[str, Any] = {}
                for child in children:
                    live = await _apply(
                        client, child, dt, logger, trigger, memo.unconverged, metrics
                    )
                    if child["kind"] in WORKLOAD_KINDS:
                        workload = live
                await _remove_other_workloads(client, dt, workload["kind"], logger, metrics)
            except ApiError as e:
                if e.status == 422:  # the API refused a manifest built from this spec
                    raise SpecError(f"the API server rejected a child: {e.message}") from e
                raise
            pods = await _pods(client, dt, logger)
            now = _now()
            status = status_from_workload(
                dt, workload, now=now, pods=pods, config_digest=config_hash(config)
            )
            wanted = int((workload.get("spec") or {}).get("replicas", 1))
            _report_pod_problems(dt, pod_problems(pods, now) if wanted else [], memo)
            await _write_status(client, dt, status)
        except SpecError as e:
            metrics.errors.labels(reason="invalid_spec").inc()
            logger.error(f"InvalidSpec: {e}")
            kopf.warn(dt, reason="InvalidSpec", message=str(e))
            try:
                await _write_status(client, dt, invalid_spec_status(dt, str(e), now=_now()))
            except ApiError as status_error:
                logger.warning(f"could not write status: {status_error}")
            raise kopf.PermanentError(str(e)) from e
        except kopf.TemporaryError:
            metrics.errors.labels(reason="retry").inc()
            raise
        except ApiError as e:
            if e.status == 403:
                metrics.errors.labels(reason="forbidden").inc()
                kopf.warn(dt, reason="Forbidden", message=e.message[:1000])
                raise kopf.TemporaryError(f"forbidden: {e.message}", delay=60) from e
            metrics.errors.labels(reason="api").inc()
            if e.transient or e.status == 404:
                raise kopf.TemporaryError(str(e), delay=10) from e
            raise kopf.PermanentError(str(e)) from e
        finally:
            metrics.duration.observe(time.perf_counter() - started)


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


async def _reconcile_owner(
    name: str, uid: str | None, body: Mapping[str, Any], etype: str, memo: Any, logger: Any
) -> None:
    namespace = body["metadata"].get("namespace")
    dt = await memo.client.get(DT_API, PLURAL, namespace, name)
    if dt is None or (uid is not None and dt["metadata"].get("uid") != uid):
        return  # the owner is gone: garbage collection handles the child
    if dt["metadata"].get("deletionTimestamp"):
        return
    await reconcile(dt, memo, logger, trigger=f"child {body.get('kind', '?')} {etype}")


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("apps", "v1", "statefulsets", labels=MANAGED)
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
    await _reconcile_owner(owner["name"], owner.get("uid"), body, str(etype), memo, logger)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_changed(
    event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """A twin's pod changed (started, became ready, crash-looped): refresh the status.

    Pods are owned by ReplicaSets or StatefulSets, not by the twin: the twin is found by
    the ``polaris.io/digitaltwin`` label the pod template carries.
    """
    etype = event.get("type")
    if etype is None:
        return
    name = (body.get("metadata", {}).get("labels") or {}).get(TWIN_LABEL)
    if name:
        await _reconcile_owner(name, None, body, str(etype), memo, logger)
