"""A DigitalTwin's status, computed from its workload and pods (pure).

``Ready`` means every desired replica is available (passes the gRPC readiness probe on
the current template); ``Progressing`` means a rollout is under way; ``Degraded`` means
the rollout is stuck, fewer replicas than desired serve after it finished, or a pod has a
problem only a human can fix. Pod-level causes (an image that cannot be pulled, a crash
loop with its last exit, a pod the scheduler cannot place, a missing Secret) are named in
the conditions' messages and become the reason, so ``kubectl get dt -o wide`` shows them.

A Secret *volume* that does not exist (``auth.adminTokenSecretRef``,
``nats.credentialsSecretRef``) leaves no reason on the pod: its containers just stay in
``ContainerCreating`` (the cause is in the kubelet's FailedMount events, which the
operator does not read). Given the time, a pod still creating its containers
:data:`CREATING_TOO_LONG_SEC` after it was scheduled is reported as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .names import endpoint, selector_labels

__all__ = [
    "CONDITION_TYPES",
    "CREATING_TOO_LONG_SEC",
    "PodProblem",
    "conditions_equal",
    "invalid_spec_status",
    "pod_problems",
    "set_condition",
    "status_from_workload",
]

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")
# Waiting reasons a pod does not recover from without a change (image, Secret, code).
_WAITING_PROBLEMS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)
# Long enough for a large image pull (also spent in ContainerCreating), short of the
# Deployment's 10-minute progress deadline.
CREATING_TOO_LONG_SEC = 300
_MAX_LISTED = 3
_MAX_TEXT = 300


@dataclass(frozen=True)
class PodProblem:
    """Why one pod does not serve, in the kubelet's or the scheduler's words."""

    pod: str
    reason: str
    message: str

    def describe(self) -> str:
        return f"pod {self.pod}: {self.reason}: {self.message}"


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _last_exit(status: Mapping[str, Any]) -> str:
    last = (status.get("lastState") or {}).get("terminated") or {}
    if not last:
        return "no exit recorded yet"
    parts = [f"last exit code {last.get('exitCode', '?')}"]
    if last.get("reason"):
        parts[0] += f" ({last['reason']})"
    if last.get("finishedAt"):
        parts.append(f"at {last['finishedAt']}")
    text = " ".join(parts)
    if last.get("message"):
        text += f": {_clip(last['message'])}"
    return f"{text}; {int(status.get('restartCount', 0))} restarts"


def _seconds_between(since: str, now: str) -> float | None:
    try:
        start = datetime.fromisoformat(since.replace("Z", "+00:00"))
        end = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    return (end - start).total_seconds()


def _creating_for(status: Mapping[str, Any], now: str | None) -> float | None:
    """Seconds a scheduled pod has spent creating its containers, or None."""
    if now is None:
        return None
    scheduled = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "PodScheduled" and c.get("status") == "True"
        ),
        None,
    )
    if scheduled is None or not scheduled.get("lastTransitionTime"):
        return None
    return _seconds_between(scheduled["lastTransitionTime"], now)


def pod_problems(
    pods: Iterable[Mapping[str, Any]], now: str | None = None
) -> list[PodProblem]:
    """Problems of the pods that are not being deleted, ordered by pod name.

    With ``now`` (RFC 3339), a pod that has been creating its containers for
    :data:`CREATING_TOO_LONG_SEC` since it was scheduled is one too.
    """
    found: list[PodProblem] = []
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        name = meta.get("name", "?")
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                found.append(PodProblem(name, "Unschedulable", _clip(cond.get("message", ""))))
        containers = [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
        for cs in containers:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in ("ContainerCreating", "PodInitializing"):
                age = _creating_for(status, now)
                if age is not None and age >= CREATING_TOO_LONG_SEC:
                    message = (
                        f"containers not created {int(age)}s after scheduling: usually a Secret "
                        "or ConfigMap volume that does not exist or cannot be mounted (see the "
                        "pod's FailedMount events), or a very slow image pull"
                    )
                    found.append(PodProblem(name, "ContainerCreating", message))
                    break  # one finding per pod: its containers share the cause
                continue
            if reason not in _WAITING_PROBLEMS:
                continue
            if reason == "CrashLoopBackOff":
                message = _last_exit(cs)
            else:
                message = _clip(waiting.get("message") or reason)
            found.append(PodProblem(name, reason, message))
    return found


def _describe_all(problems: Sequence[PodProblem]) -> str:
    text = "; ".join(p.describe() for p in problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        text += f"; and {len(problems) - _MAX_LISTED} more"
    return text


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    *,
    type: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Return ``conditions`` with one condition set, keeping ``lastTransitionTime``
    when its status did not change."""
    conditions = list(conditions)
    result = [dict(c) for c in conditions if c.get("type") != type]
    previous = next((c for c in conditions if c.get("type") == type), None)
    changed = previous is None or previous.get("status") != status
    cond = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now
        if previous is None or changed
        else previous.get("lastTransitionTime", now),
    }
    if generation is not None:
        cond["observedGeneration"] = int(generation)
    result.append(cond)
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    result.sort(key=lambda c: order.get(c["type"], len(order)))
    return result


def conditions_equal(a: Iterable[Mapping[str, Any]], b: Iterable[Mapping[str, Any]]) -> bool:
    """Conditions compared without their timestamps (to skip no-op status patches)."""

    def strip(cs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs),
            key=lambda c: c.get("type", ""),
        )

    return strip(a) == strip(b)


def _workload_condition(workload: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in (workload.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def _rolled_out(workload: Mapping[str, Any], desired: int) -> bool:
    st = workload.get("status") or {}
    observed = int(st.get("observedGeneration", 0))
    current = observed >= int(workload.get("metadata", {}).get("generation", 1))
    done = current and int(st.get("updatedReplicas", 0)) >= desired
    done = done and int(st.get("replicas", 0)) == desired
    if workload.get("kind") == "StatefulSet" and st.get("updateRevision"):
        done = done and st.get("currentRevision") in (None, st["updateRevision"])
    return done


def status_from_workload(
    dt: Mapping[str, Any],
    workload: Mapping[str, Any] | None,
    *,
    now: str,
    pods: Iterable[Mapping[str, Any]] = (),
    config_digest: str | None = None,
) -> dict[str, Any]:
    """The DigitalTwin's status from its Deployment or StatefulSet and their pods."""
    old = dt.get("status") or {}
    generation = dt.get("metadata", {}).get("generation")
    name = dt["metadata"]["name"]
    conds: list[dict[str, Any]] = list(old.get("conditions") or [])
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items())),
        "endpoint": endpoint(dt),
    }
    if config_digest:
        status["configHash"] = config_digest

    def put(type_: str, ok: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(
            conds,
            type=type_,
            status="True" if ok else "False",
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )

    if workload is None:
        status.update(replicas=0, readyReplicas=0, updatedReplicas=0)
        put("Ready", False, "WorkloadMissing", "the twin's workload does not exist yet")
        put("Progressing", True, "Creating", "creating the twin's workload")
        put("Degraded", False, "Creating", "creating the twin's workload")
        status["conditions"] = conds
        return status

    wstatus = workload.get("status") or {}
    kind = workload.get("kind", "Deployment")
    desired = int((workload.get("spec") or {}).get("replicas", 1))
    replicas = int(wstatus.get("replicas", 0))
    ready = int(wstatus.get("readyReplicas", 0))
    available = int(wstatus.get("availableReplicas", ready))
    updated = int(wstatus.get("updatedReplicas", 0))
    status.update(
        replicas=replicas, readyReplicas=ready, updatedReplicas=updated, workloadKind=kind
    )
    containers = workload.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    if containers:
        status["image"] = containers[0].get("image", "")

    problems = pod_problems(pods, now) if desired else []
    cause = problems[0].reason if problems else ""
    details = f"; {_describe_all(problems)}" if problems else ""
    progressing = _workload_condition(workload, "Progressing")
    stuck = progressing.get("reason") == "ProgressDeadlineExceeded"
    rolled_out = _rolled_out(workload, desired)

    if desired == 0:
        put("Ready", False, "ScaledToZero", "spec.replicas is 0")
        put("Progressing", False, "ScaledToZero", "spec.replicas is 0")
        put("Degraded", False, "ScaledToZero", "spec.replicas is 0")
    elif stuck:
        msg = (progressing.get("message") or "the rollout exceeded its progress deadline") + details
        put("Ready", available >= desired and rolled_out, cause or "ProgressDeadlineExceeded", msg)
        put("Progressing", False, "ProgressDeadlineExceeded", msg)
        put("Degraded", True, cause or "ProgressDeadlineExceeded", msg)
    elif rolled_out and available >= desired:
        msg = f"{available}/{desired} replicas serving" + details
        put("Ready", True, "AllReplicasReady", msg)
        put("Progressing", False, "RolloutComplete", msg)
        put("Degraded", bool(problems), cause or "AllReplicasReady", msg)
    elif rolled_out:
        msg = f"{available}/{desired} replicas serving" + details
        put("Ready", False, cause or "ReplicasUnavailable", msg)
        put("Progressing", False, "RolloutComplete", msg)
        put("Degraded", True, cause or "ReplicasUnavailable", msg)
    else:
        msg = f"rollout in progress: {updated}/{desired} updated, {available} available" + details
        put("Ready", False, cause or "RolloutInProgress", msg)
        put("Progressing", True, "RolloutInProgress", msg)
        put("Degraded", bool(problems), cause or "RolloutInProgress", msg)
    status["conditions"] = conds
    return status


def invalid_spec_status(dt: Mapping[str, Any], message: str, *, now: str) -> dict[str, Any]:
    """Status for a spec the operator cannot honour (children left as they are)."""
    generation = dt.get("metadata", {}).get("generation")
    conds: list[dict[str, Any]] = list((dt.get("status") or {}).get("conditions") or [])
    for type_, ok in (("Ready", False), ("Progressing", False), ("Degraded", True)):
        conds = set_condition(
            conds,
            type=type_,
            status="True" if ok else "False",
            reason="InvalidSpec",
            message=message,
            generation=generation,
            now=now,
        )
    return {"observedGeneration": generation, "conditions": conds}
