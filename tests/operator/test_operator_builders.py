"""Pure builders: DigitalTwin -> config, ConfigMap, Services, Deployment/StatefulSet, status.

No cluster: every manifest is checked against the official Kubernetes schemas with
kubernetes-validate (strict: unknown fields fail), and every rendered config against the
twin's own JSON Schema (twin.core.config.validate_config).
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from polaris_operator import builders as b

from crd_tools import EXAMPLES, admitted, load_examples

K8S_VERSION = "1.35.0"
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"
EXAMPLE_NAMES = sorted(load_examples())


def twin(name: str = "digitaltwin-mock.yaml", **spec_changes) -> dict:
    obj = copy.deepcopy(load_examples()[name])
    obj["spec"].update(spec_changes)
    obj = admitted(obj)
    obj["metadata"].update(uid="uid-1", generation=3, namespace="polaris")
    return obj


def manifests(dt: dict) -> list[dict]:
    _, children = b.build_children(dt, default_image="ghcr.io/polaris/polaris-twin:0.1.0")
    return children


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def env_of(dep: dict) -> dict:
    return {e["name"]: e for e in container(dep)["env"]}


# ----------------------------------------------------------------------- config


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_rendered_config_satisfies_the_twins_own_schema(name):
    from twin.core.config import validate_config

    assert validate_config(b.build_twin_config(twin(name))) == []


def test_config_maps_the_spec_onto_the_twin_contract():
    cfg = b.build_twin_config(twin("digitaltwin-statistical.yaml"))["digital_twin"]
    assert cfg["nats"]["url"] == "nats://nats.polaris.svc:4222"
    assert cfg["nats"]["queue_group"] == ""  # every replica receives every message
    assert cfg["grpc"] == {
        "host": "0.0.0.0",
        "port": 50051,
        "max_workers": 10,
        "max_message_size": 4194304,
        "keepalive_time_ms": 30000,
        "keepalive_timeout_ms": 5000,
    }
    assert cfg["world_model"]["implementation"] == "statistical"
    assert cfg["telemetry"] == {
        "otlp_endpoint": "http://otel-collector.observability.svc:4317",
        "sampling_ratio": 0.2,
        "service_name": "twin-statistical",
        "metrics_port": 9464,
    }
    # configOverrides merged last
    assert cfg["state"] == {
        "max_points_per_series": 50000,
        "max_age_sec": 86400,
        # spec.durability.snapshots
        "snapshot_dir": "/var/lib/polaris/snapshots",
        "snapshot_interval_sec": 300.0,
        "snapshot_keep": 3,
    }
    assert cfg["systems"] == ["swim", "web-*"]
    assert cfg["nats"]["jetstream"] == {
        "enabled": True,
        "stream": "POLARIS_TWIN",
        "max_age_sec": 86400.0,
        "replicas": 1,
        "storage": "file",
        "inactive_threshold_sec": 3600.0,
        "max_lag_sec": 60.0,
    }
    assert cfg["performance"] == {"max_concurrent_queries": 20}
    assert cfg["debugging"]["log_file"] is None  # read-only root filesystem


def test_creds_file_points_at_the_mounted_secret():
    dt = twin("digitaltwin-gemini.yaml")
    cfg = b.build_twin_config(dt)["digital_twin"]
    dep = b.build_deployment(dt, default_image="i:1")
    assert cfg["nats"]["creds_file"] == "/var/run/secrets/polaris/nats/nats.creds"
    mounts = {m["name"]: m for m in container(dep)["volumeMounts"]}
    assert mounts["nats-creds"] == {
        "name": "nats-creds",
        "mountPath": "/var/run/secrets/polaris/nats",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["nats-creds"]["secret"]["secretName"] == "polaris-nats-creds"
    assert volumes["nats-creds"]["secret"]["items"] == [{"key": "nats.creds", "path": "nats.creds"}]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_no_secret_ever_lands_in_the_configmap(name):
    secrets_text = (EXAMPLES / "digitaltwin-secrets.yaml").read_text()
    placeholders = [
        v for doc in yaml.safe_load_all(secrets_text) for v in doc["stringData"].values()
    ]
    cm = b.build_configmap(twin(name))
    text = cm["data"]["config.yaml"]
    for value in placeholders:
        assert value.strip() not in text
    assert b.find_secret_like_keys(yaml.safe_load(text)) == []


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"nats": {"password": "x"}}, "configOverrides.nats.password"),
        ({"telemetry": {"headers": {"authorization_token": "x"}}}, "authorization_token"),
        ({"world_model": {"settings": {"google_api_key": "x"}}}, "google_api_key"),
        ({"nats": {"user": "u"}}, "configOverrides.nats.user"),
    ],
)
def test_secret_looking_overrides_are_refused(overrides, fragment):
    dt = twin()
    dt["spec"]["configOverrides"] = overrides
    with pytest.raises(b.SpecError, match=fragment):
        b.build_twin_config(dt)


def test_overrides_cannot_replace_fields_the_spec_owns():
    dt = twin()
    dt["spec"]["configOverrides"] = {"world_model": {"implementation": "gemini"}}
    with pytest.raises(b.SpecError, match="world_model.implementation"):
        b.build_twin_config(dt)


def test_a_name_that_cannot_name_a_service_is_refused():
    dt = twin()
    dt["metadata"]["name"] = "x" * 48
    with pytest.raises(b.SpecError, match="47"):
        b.build_service(dt)


# ----------------------------------------------------------------------- manifests


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_manifest_is_valid_for_kubernetes_strictly(name):
    for manifest in manifests(twin(name)):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_deployment_runs_the_twin_with_grpc_probes_and_hardening():
    dt = twin()
    cfg = b.build_twin_config(dt)
    dep = b.build_deployment(dt, default_image="img:1", config=cfg)
    c = container(dep)
    assert c["image"] == "img:1"
    assert c["command"] == ["polaris-twin"]
    assert c["args"] == ["--config", "/etc/polaris-twin/config.yaml"]
    # A NATS outage must make the pod unready, never restart it: only readiness asks the
    # overall service; startup and liveness ask the process-level "liveness" service.
    assert c["readinessProbe"]["grpc"] == {"port": 50051}
    assert c["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    assert c["startupProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
    assert c["ports"] == [
        {"name": "grpc", "containerPort": 50051, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9464, "protocol": "TCP"},  # on by default
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},  # REST gateway, console
    ]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    assert volumes["config"]["configMap"]["name"] == "twin-mock-config"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/tmp"]["name"] == "tmp"
    assert mounts["/etc/polaris-twin"]["readOnly"] is True
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == b.config_hash(cfg)


def test_spec_image_wins_over_the_operators_default():
    dep = b.build_deployment(twin(image="registry.local/twin:dev"), default_image="img:1")
    assert container(dep)["image"] == "registry.local/twin:dev"


def test_api_keys_come_only_from_secret_key_refs():
    env = env_of(b.build_deployment(twin("digitaltwin-gemini.yaml"), default_image="i:1"))
    assert env["GEMINI_API_KEY"] == {
        "name": "GEMINI_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "polaris-gemini", "key": "api-key"}},
    }
    env = env_of(b.build_deployment(twin("digitaltwin-statistical.yaml"), default_image="i:1"))
    assert env["NATS_USER"]["valueFrom"]["secretKeyRef"] == {"name": "polaris-nats", "key": "user"}
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "polaris-nats",
        "key": "password",
    }
    env = env_of(b.build_deployment(twin("digitaltwin-hybrid.yaml"), default_image="i:1"))
    assert env["NATS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "polaris-nats",
        "key": "token",
    }
    for entry in env.values():
        assert "value" not in entry or "KEY" not in entry["name"]


def test_config_checksum_rolls_pods_only_when_the_config_changes():
    def checksum(dt):
        return b.build_deployment(dt, default_image="i:1")["spec"]["template"]["metadata"][
            "annotations"
        ]["checksum/config"]

    base = checksum(twin())
    assert checksum(twin(replicas=0)) == base
    assert checksum(twin(logging={"level": "INFO", "format": "json"})) != base


def test_selector_depends_only_on_the_name():
    a = b.build_deployment(twin(), default_image="i:1")
    c = b.build_deployment(twin(replicas=0, podLabels={"team": "x"}), default_image="i:1")
    assert (
        a["spec"]["selector"]
        == c["spec"]["selector"]
        == {
            "matchLabels": {
                "app.kubernetes.io/name": "polaris-twin",
                "app.kubernetes.io/instance": "twin-mock",
            },
        }
    )
    labels = c["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "x" and labels["app.kubernetes.io/instance"] == "twin-mock"


def test_pod_placement_fields_are_passed_through():
    dep = b.build_deployment(twin("digitaltwin-hybrid.yaml"), default_image="i:1")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"polaris.io/pool": "twins"}
    assert pod["tolerations"][0]["key"] == "polaris.io/dedicated"
    assert dep["spec"]["replicas"] == 2


def test_service_exposes_grpc_and_metrics_when_enabled():
    svc = b.build_service(twin("digitaltwin-statistical.yaml"))
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("grpc", 50051, "grpc"),
        ("metrics", 9464, "metrics"),
        ("http", 8080, "http"),
    ]
    assert svc["spec"]["selector"] == b.selector_labels("twin-statistical")
    svc = b.build_service(twin("digitaltwin-hybrid.yaml"))
    assert [p["name"] for p in svc["spec"]["ports"]] == ["grpc", "metrics", "http"]  # by default
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    }
    svc = b.build_service(twin(telemetry={"metricsPort": 0}, http={"port": 0}))
    assert [p["name"] for p in svc["spec"]["ports"]] == ["grpc"]


def test_endpoint_is_the_services_host_and_port():
    assert b.endpoint(twin()) == "twin-mock.polaris.svc:50051"


# ----------------------------------------------------------------------- drift


def test_live_objects_with_server_defaults_are_not_drift():
    dep = b.build_deployment(twin(), default_image="i:1")
    live = copy.deepcopy(dep)
    live["metadata"].update(uid="x", resourceVersion="7", generation=2)
    container(live)["terminationMessagePath"] = "/dev/termination-log"
    container(live)["resources"]["requests"]["cpu"] = "0.1"  # canonicalised quantity
    container(live)["readinessProbe"]["grpc"]["service"] = ""
    live["status"] = {"replicas": 1}
    assert b.is_subset(dep, live)


def test_edits_to_managed_fields_are_drift():
    dep = b.build_deployment(twin(), default_image="i:1")
    edited = copy.deepcopy(dep)
    container(edited)["image"] = "evil:latest"
    assert not b.is_subset(dep, edited)
    edited = copy.deepcopy(dep)
    container(edited)["env"].append({"name": "EXTRA", "value": "1"})
    assert not b.is_subset(dep, edited)
    edited = copy.deepcopy(dep)
    edited["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ] = False
    assert not b.is_subset(dep, edited)


# ----------------------------------------------------------------------- status


def deployment_with(status: dict, *, replicas: int = 1, generation: int = 1) -> dict:
    dep = b.build_deployment(twin(), default_image="i:1")
    dep["spec"]["replicas"] = replicas
    dep["metadata"]["generation"] = generation
    dep["status"] = status
    return dep


def conditions(status: dict) -> dict:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_without_deployment_is_progressing():
    st = b.status_from_workload(twin(), None, now=NOW)
    assert conditions(st) == {
        "Ready": ("False", "WorkloadMissing"),
        "Progressing": ("True", "Creating"),
        "Degraded": ("False", "Creating"),
    }
    assert st["endpoint"] == "twin-mock.polaris.svc:50051"
    assert (
        st["selector"] == "app.kubernetes.io/instance=twin-mock,app.kubernetes.io/name=polaris-twin"
    )
    assert st["observedGeneration"] == 3


def test_status_during_a_rollout():
    dep = deployment_with({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 0})
    st = b.status_from_workload(twin(), dep, now=NOW)
    assert conditions(st)["Progressing"] == ("True", "RolloutInProgress")
    assert conditions(st)["Ready"] == ("False", "RolloutInProgress")


def test_status_when_all_replicas_serve():
    dep = deployment_with(
        {
            "observedGeneration": 1,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
        },
        replicas=2,
    )
    st = b.status_from_workload(twin(), dep, now=NOW)
    assert conditions(st) == {
        "Ready": ("True", "AllReplicasReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AllReplicasReady"),
    }
    assert (st["replicas"], st["readyReplicas"]) == (2, 2)
    assert all(c["observedGeneration"] == 3 for c in st["conditions"])


def test_status_when_a_replica_is_lost_after_rollout():
    dep = deployment_with(
        {
            "observedGeneration": 1,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 1,
            "availableReplicas": 1,
        },
        replicas=2,
    )
    st = b.status_from_workload(twin(), dep, now=NOW)
    assert conditions(st)["Ready"] == ("False", "ReplicasUnavailable")
    assert conditions(st)["Degraded"] == ("True", "ReplicasUnavailable")


def test_status_when_the_rollout_is_stuck():
    dep = deployment_with(
        {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "ReplicaSet x has timed out",
                }
            ],
        }
    )
    st = b.status_from_workload(twin(), dep, now=NOW)
    assert conditions(st)["Degraded"] == ("True", "ProgressDeadlineExceeded")
    assert conditions(st)["Ready"][0] == "False"


def test_status_when_scaled_to_zero():
    dep = deployment_with({"observedGeneration": 1}, replicas=0)
    st = b.status_from_workload(twin(), dep, now=NOW)
    assert conditions(st)["Ready"] == ("False", "ScaledToZero")
    assert conditions(st)["Degraded"] == ("False", "ScaledToZero")


def test_transition_time_moves_only_when_the_status_flips():
    dt = twin()
    rolling = deployment_with({"observedGeneration": 1, "replicas": 1})
    ready = deployment_with(
        {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        }
    )
    dt["status"] = b.status_from_workload(dt, rolling, now=NOW)
    again = b.status_from_workload(dt, rolling, now=LATER)
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {NOW}
    flipped = b.status_from_workload(dt, ready, now=LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times == {"Ready": LATER, "Progressing": LATER, "Degraded": NOW}


def test_invalid_spec_status_is_degraded_with_the_message():
    st = b.invalid_spec_status(twin(), "bad thing", now=NOW)
    assert conditions(st) == {
        "Ready": ("False", "InvalidSpec"),
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }
    assert {c["message"] for c in st["conditions"]} == {"bad thing"}
