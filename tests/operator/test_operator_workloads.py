"""Pure builders, durable twins: StatefulSet, volumes, consumers, systems, pod-level status.

Every manifest is validated against the official Kubernetes schemas (kubernetes-validate,
strict: unknown fields fail); the rendered config against the twin's own JSON Schema.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from polaris_operator import builders as b

from crd_tools import admitted, load_crd, load_examples, openapi_schema

K8S_VERSION = "1.35.0"
NOW = "2026-01-01T00:00:00Z"
IMAGE = "ghcr.io/polaris/polaris-twin:0.1.0"


def twin(name: str = "digitaltwin-mock.yaml", **spec_changes: Any) -> dict:
    obj = copy.deepcopy(load_examples()[name])
    obj["spec"].update(spec_changes)
    obj = admitted(obj)
    obj["metadata"].update(uid="uid-1", generation=2, namespace="polaris")
    return obj


def kinds(children: list[dict]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in children]


def container(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]["containers"][0]


def env_of(workload: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(workload)["env"]}


JETSTREAM_ONLY = {"jetstream": {"enabled": True}}
SNAPSHOTS_ONLY = {"snapshots": {"enabled": True, "volumeSize": "3Gi", "storageClass": "fast"}}


@pytest.mark.parametrize(
    "durability, expected",
    [
        ({}, [("ConfigMap", "t-config"), ("Service", "t"), ("Deployment", "t")]),
        (
            JETSTREAM_ONLY,
            [
                ("ConfigMap", "t-config"),
                ("Service", "t"),
                ("Service", "t-pods"),
                ("StatefulSet", "t"),
            ],
        ),
        (
            SNAPSHOTS_ONLY,
            [
                ("ConfigMap", "t-config"),
                ("Service", "t"),
                ("Service", "t-pods"),
                ("StatefulSet", "t"),
            ],
        ),
    ],
)
def test_durable_state_makes_a_statefulset_and_every_manifest_is_valid(durability, expected):
    dt = twin(durability=durability)
    dt["metadata"]["name"] = "t"
    _, children = b.build_children(dt, default_image=IMAGE)
    assert kinds(children) == expected
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_production_example_runs_replicas_with_own_consumers_and_volumes():
    dt = twin("digitaltwin-statistical.yaml")
    config, children = b.build_children(dt, default_image=IMAGE)
    sts = children[-1]
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 2
    assert sts["spec"]["serviceName"] == "twin-statistical-pods"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert "persistentVolumeClaimRetentionPolicy" not in sts["spec"]  # default: Retain
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "snapshots"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster default
    mounts = {m["name"]: m["mountPath"] for m in container(sts)["volumeMounts"]}
    assert mounts["snapshots"] == config["digital_twin"]["state"]["snapshot_dir"]
    # One durable consumer per pod: POD_NAMESPACE and POD_NAME are defined before use.
    names = [e["name"] for e in container(sts)["env"]]
    durable = env_of(sts)["POLARIS_DT__NATS__JETSTREAM__DURABLE"]
    assert durable["value"] == "$(POD_NAMESPACE)_$(POD_NAME)"
    assert names.index("POD_NAME") < names.index("POLARIS_DT__NATS__JETSTREAM__DURABLE")
    assert names.index("POD_NAMESPACE") < names.index("POLARIS_DT__NATS__JETSTREAM__DURABLE")
    headless = children[-2]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]


def test_snapshot_volume_class_and_size_come_from_the_spec():
    sts = b.build_statefulset(twin(durability=SNAPSHOTS_ONLY), default_image=IMAGE)
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert "POLARIS_DT__NATS__JETSTREAM__DURABLE" not in env_of(sts)  # core NATS
    sts = b.build_statefulset(twin(durability=JETSTREAM_ONLY), default_image=IMAGE)
    assert "volumeClaimTemplates" not in sts["spec"]


def test_the_rest_gateway_is_a_named_port_unless_turned_off():
    _, children = b.build_children(twin(), default_image=IMAGE)
    config, svc, dep = children[0], children[1], children[-1]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container(dep)["ports"]
    assert [p["name"] for p in svc["spec"]["ports"]] == ["grpc", "metrics", "http"]
    cfg = yaml.safe_load(config["data"]["config.yaml"])["digital_twin"]
    assert cfg["http"] == {"host": "0.0.0.0", "port": 8080, "console": True}
    off = twin(http={"port": 0})
    _, children = b.build_children(off, default_image=IMAGE)
    assert "http" not in {p["name"] for p in container(children[-1])["ports"]}
    assert b.build_twin_config(off)["digital_twin"]["http"]["port"] == 0


def test_colliding_ports_are_refused_even_without_cel():
    dt = twin()
    dt["spec"]["http"] = {"port": 9464}  # the metrics port's default
    with pytest.raises(b.SpecError, match="must differ: grpc.port 50051, telemetry.metricsPort"):
        b.build_twin_config(dt)


def test_every_replica_receives_every_message():
    for name in sorted(load_examples()):
        cfg = b.build_twin_config(twin(name))["digital_twin"]
        assert cfg["nats"]["queue_group"] == "", name


def test_replicas_without_jetstream_are_refused_with_the_crds_message():
    (rule,) = [
        r
        for r in openapi_schema()["properties"]["spec"]["x-kubernetes-validations"]
        if "replicas" in r["rule"]
    ]
    dt = twin()
    dt["spec"]["replicas"] = 2  # stored before the rule existed, or no CEL on the cluster
    with pytest.raises(b.SpecError) as err:
        b.build_children(dt, default_image=IMAGE)
    assert str(err.value) == rule["message"]
    dt["spec"]["durability"] = {"jetstream": {"enabled": True}}
    assert b.build_children(dt, default_image=IMAGE)[1][-1]["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    "overrides, owner",
    [
        ({"nats": {"queue_group": "w"}}, "replicas never share a queue group"),
        ({"nats": {"jetstream": {"enabled": True}}}, "spec.durability.jetstream"),
        ({"state": {"snapshot_dir": "/x"}}, "spec.durability.snapshots"),
        ({"telemetry": {"metrics_port": 1}}, "spec.telemetry.metricsPort"),
        ({"systems": ["a"]}, "spec.systems"),
    ],
)
def test_overrides_cannot_take_what_the_typed_spec_owns(overrides, owner):
    dt = twin()
    dt["spec"]["configOverrides"] = overrides
    with pytest.raises(b.SpecError, match=owner):
        b.build_twin_config(dt)


def test_systems_reach_the_twins_config():
    cfg = b.build_twin_config(twin(systems=["swim", "web-*"]))["digital_twin"]
    assert cfg["systems"] == ["swim", "web-*"]
    assert "systems" not in b.build_twin_config(twin())["digital_twin"]


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("5m", 300), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert b.parse_duration(text, "f") == seconds


def test_a_malformed_duration_names_its_field():
    dt = twin(durability={"jetstream": {"enabled": True}})
    dt["spec"]["durability"]["jetstream"]["maxAge"] = "a day"
    with pytest.raises(b.SpecError, match="durability.jetstream.maxAge 'a day'"):
        b.build_twin_config(dt)


def test_the_admin_token_reaches_the_pod_only_as_a_mounted_secret_file():
    dt = twin(auth={"adminTokenSecretRef": {"name": "twin-admin"}})
    config, children = b.build_children(dt, default_image=IMAGE)
    workload = children[-1]
    pod = workload["spec"]["template"]["spec"]
    # The twin reads the file named in its config (first line, re-read on change).
    assert config["digital_twin"]["auth"] == {
        "admin_token_file": "/var/run/secrets/polaris/admin/token"
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["admin-token"] == {
        "name": "admin-token",
        "secret": {
            "secretName": "twin-admin",
            "items": [{"key": "admin-token", "path": "token"}],
            "defaultMode": 0o440,
        },
    }
    mounts = {m["name"]: m for m in container(workload)["volumeMounts"]}
    # A directory mount, never subPath: subPath mounts miss the kubelet's updates.
    assert mounts["admin-token"] == {
        "name": "admin-token",
        "mountPath": "/var/run/secrets/polaris/admin",
        "readOnly": True,
    }
    # Readable by the pod's group (fsGroup) only, by a non-root user.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001
    assert container(workload)["securityContext"]["readOnlyRootFilesystem"] is True
    # Nowhere else: not in the environment, the ConfigMap or the status.
    assert not any("ADMIN" in e["name"] for e in container(workload)["env"])
    assert "twin-admin" not in yaml.safe_dump(config)
    status = b.status_from_workload(dt, workload, now=NOW)
    assert "twin-admin" not in str(status)
    for child in children:
        kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_the_admin_token_key_is_the_secrets_key_and_the_file_name_stays_fixed():
    dt = twin(auth={"adminTokenSecretRef": {"name": "ops", "key": "twin-token"}})
    _, children = b.build_children(dt, default_image=IMAGE)
    volumes = {v["name"]: v for v in children[-1]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["admin-token"]["secret"]["items"] == [{"key": "twin-token", "path": "token"}]


def test_without_an_admin_token_ref_nothing_is_mounted_and_the_config_names_no_file():
    config, children = b.build_children(twin(), default_image=IMAGE)
    assert "auth" not in config["digital_twin"]
    pod = children[-1]["spec"]["template"]["spec"]
    assert "admin-token" not in {v["name"] for v in pod["volumes"]}


def test_config_overrides_may_not_point_the_admin_token_elsewhere():
    # The CRD has no configOverrides.auth (the API server refuses or prunes it); the builder
    # refuses it too, for objects that reached the operator some other way.
    with pytest.raises(AssertionError, match="'auth' was unexpected"):
        twin(configOverrides={"auth": {"admin_token_file": "/tmp/mine"}})
    dt = twin()
    dt["spec"]["configOverrides"] = {"auth": {"admin_token_file": "/tmp/mine"}}
    with pytest.raises(b.SpecError, match="spec.auth.adminTokenSecretRef"):
        b.build_twin_config(dt)


def test_the_crd_documents_every_durability_field_it_renders():
    spec = openapi_schema(load_crd())["properties"]["spec"]["properties"]
    js = spec["durability"]["properties"]["jetstream"]["properties"]
    snaps = spec["durability"]["properties"]["snapshots"]["properties"]
    assert set(js) == {
        "enabled",
        "stream",
        "maxAge",
        "replicas",
        "storage",
        "inactiveThreshold",
        "maxLagSeconds",
    }
    assert set(snaps) == {"enabled", "interval", "keep", "volumeSize", "storageClass"}


# ------------------------------------------------------------------- status from pods


def pod(name: str, **status: Any) -> dict:
    return {"metadata": {"name": name}, "status": status}


def waiting(reason: str, message: str = "", **extra: Any) -> dict:
    return {"name": "twin", "state": {"waiting": {"reason": reason, "message": message}}, **extra}


IMAGE_PULL = pod(
    "t-0",
    containerStatuses=[
        waiting("ImagePullBackOff", 'Back-off pulling image "registry.test/nope:1"')
    ],
)
CRASH_LOOP = pod(
    "t-1",
    containerStatuses=[
        waiting(
            "CrashLoopBackOff",
            "back-off 40s restarting failed container",
            restartCount=4,
            lastState={
                "terminated": {
                    "exitCode": 2,
                    "reason": "Error",
                    "finishedAt": "2026-01-01T00:00:00Z",
                    "message": "invalid configuration (1 error(s))\n  nats.url: bad",
                }
            },
        )
    ],
)
UNSCHEDULABLE = pod(
    "t-2",
    conditions=[
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory.",
        }
    ],
)
MISSING_SECRET = pod(
    "t-3",
    containerStatuses=[waiting("CreateContainerConfigError", 'secret "polaris-gemini" not found')],
)
HEALTHY = pod("t-4", containerStatuses=[{"name": "twin", "state": {"running": {}}, "ready": True}])


def test_pod_problems_name_the_cause_in_the_kubelets_words():
    problems = b.pod_problems([HEALTHY, UNSCHEDULABLE, CRASH_LOOP, IMAGE_PULL, MISSING_SECRET])
    assert [(p.pod, p.reason) for p in problems] == [
        ("t-0", "ImagePullBackOff"),
        ("t-1", "CrashLoopBackOff"),
        ("t-2", "Unschedulable"),
        ("t-3", "CreateContainerConfigError"),
    ]
    assert "registry.test/nope:1" in problems[0].message
    assert problems[1].message == (
        "last exit code 2 (Error) at 2026-01-01T00:00:00Z: invalid configuration (1 error(s)) "
        "nats.url: bad; 4 restarts"
    )
    assert problems[2].message == "0/3 nodes are available: 3 Insufficient memory."
    deleting = copy.deepcopy(IMAGE_PULL)
    deleting["metadata"]["deletionTimestamp"] = NOW
    assert b.pod_problems([deleting]) == []


def creating(name: str, scheduled_at: str) -> dict:
    """A pod whose container waits in ContainerCreating, as with a missing Secret volume."""
    return pod(
        name,
        conditions=[
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled_at}
        ],
        containerStatuses=[waiting("ContainerCreating")],
    )


def test_a_pod_stuck_creating_its_containers_is_named_once_it_is_too_long():
    # NOW is 2026-01-01T00:00:00Z; the threshold is 300 s after scheduling.
    stuck = creating("t-5", "2025-12-31T23:54:00Z")  # 360 s
    fresh = creating("t-6", "2025-12-31T23:58:00Z")  # 120 s: an image pull, perhaps
    (problem,) = b.pod_problems([stuck, fresh, HEALTHY], NOW)
    assert (problem.pod, problem.reason) == ("t-5", "ContainerCreating")
    assert problem.message.startswith("containers not created 360s after scheduling")
    assert "Secret" in problem.message and "FailedMount" in problem.message
    assert b.pod_problems([stuck]) == []  # without the time nothing can be said
    unscheduled = creating("t-7", "2025-12-31T23:00:00Z")
    unscheduled["status"]["conditions"][0]["status"] = "False"
    assert b.pod_problems([unscheduled], NOW) == []

    dt = twin(auth={"adminTokenSecretRef": {"name": "no-such-secret"}})
    dep = b.build_deployment(dt, default_image=IMAGE)
    dep["status"] = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 0}
    status = b.status_from_workload(dt, dep, now=NOW, pods=[stuck])
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainerCreating"
    assert "pod t-5: ContainerCreating: containers not created 360s" in ready["message"]


def statefulset(desired: int, **status: Any) -> dict:
    sts = b.build_statefulset(twin(durability=JETSTREAM_ONLY), default_image=IMAGE)
    sts["spec"]["replicas"] = desired
    sts["metadata"]["generation"] = 1
    sts["status"] = {"observedGeneration": 1, **status}
    return sts


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def message(status: dict, type_: str = "Ready") -> str:
    return next(c["message"] for c in status["conditions"] if c["type"] == type_)


def test_ready_names_the_pod_level_cause():
    sts = statefulset(2, replicas=2, updatedReplicas=2, readyReplicas=1, availableReplicas=1)
    st = b.status_from_workload(twin(), sts, now=NOW, pods=[HEALTHY, IMAGE_PULL])
    assert conditions(st)["Ready"] == ("False", "ImagePullBackOff")
    assert conditions(st)["Degraded"] == ("True", "ImagePullBackOff")
    assert message(st) == (
        "1/2 replicas serving; pod t-0: ImagePullBackOff: Back-off pulling image "
        '"registry.test/nope:1"'
    )
    assert st["workloadKind"] == "StatefulSet"


def test_a_crash_loop_during_a_rollout_shows_the_last_exit():
    sts = statefulset(
        2,
        replicas=2,
        updatedReplicas=1,
        readyReplicas=1,
        currentRevision="t-1",
        updateRevision="t-2",
    )
    st = b.status_from_workload(twin(), sts, now=NOW, pods=[CRASH_LOOP, HEALTHY])
    assert conditions(st) == {
        "Ready": ("False", "CrashLoopBackOff"),
        "Progressing": ("True", "RolloutInProgress"),
        "Degraded": ("True", "CrashLoopBackOff"),
    }
    assert "last exit code 2 (Error)" in message(st)


def test_unschedulable_pods_carry_the_schedulers_message():
    dep = b.build_deployment(twin(), default_image=IMAGE)
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    st = b.status_from_workload(twin(), dep, now=NOW, pods=[UNSCHEDULABLE])
    assert conditions(st)["Ready"] == ("False", "Unschedulable")
    assert "3 Insufficient memory" in message(st)


def test_many_problems_are_summarised():
    pods = [
        pod(f"t-{i}", containerStatuses=[waiting("ErrImagePull", "manifest unknown")])
        for i in range(5)
    ]
    sts = statefulset(5, replicas=5, updatedReplicas=5)
    assert message(b.status_from_workload(twin(), sts, now=NOW, pods=pods)).endswith("; and 2 more")


def test_a_statefulset_is_ready_once_every_ordinal_runs_the_new_revision():
    done = statefulset(
        2,
        replicas=2,
        updatedReplicas=2,
        readyReplicas=2,
        availableReplicas=2,
        currentRevision="r2",
        updateRevision="r2",
    )
    assert conditions(b.status_from_workload(twin(), done, now=NOW, pods=[HEALTHY]))["Ready"] == (
        "True",
        "AllReplicasReady",
    )
    rolling = statefulset(
        2,
        replicas=2,
        updatedReplicas=2,
        readyReplicas=2,
        availableReplicas=2,
        currentRevision="r1",
        updateRevision="r2",
    )
    st = b.status_from_workload(twin(), rolling, now=NOW)
    assert conditions(st)["Progressing"] == ("True", "RolloutInProgress")


def test_problems_of_a_twin_scaled_to_zero_are_not_reported():
    sts = statefulset(0)
    st = b.status_from_workload(twin(), sts, now=NOW, pods=[IMAGE_PULL])
    assert conditions(st)["Ready"] == ("False", "ScaledToZero")
