"""The DigitalTwin CRD: structure, examples admitted, invalid specs refused with the rule's message.

Runs offline (no cluster): defaulting + OpenAPI validation with jsonschema + CEL rules
with cel-python (see crd_tools). The official CRD schema check uses kubernetes-validate.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from crd_tools import (
    CHART_CRD_PATH,
    CRD_PATH,
    admit,
    admit_update,
    load_crd,
    load_examples,
    openapi_schema,
)

K8S_VERSION = "1.35.0"


def _walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_chart_ships_an_identical_copy_of_the_crd():
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        "charts/polaris-twin-operator/crds/ must be a byte-for-byte copy of crds/: "
        "cp crds/digitaltwins.polaris.io.yaml charts/polaris-twin-operator/crds/"
    )


def test_crd_is_valid_against_the_official_apiextensions_schema():
    kubernetes_validate.validate(load_crd(), K8S_VERSION, strict=True)


def test_crd_names_subresources_and_printer_columns():
    crd = load_crd()
    names = crd["spec"]["names"]
    assert (crd["spec"]["group"], names["kind"], names["plural"]) == (
        "polaris.io",
        "DigitalTwin",
        "digitaltwins",
    )
    assert names["shortNames"] == ["dt"] and names["categories"] == ["polaris"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for wanted in ("Model", "Ready", "Replicas", "Endpoint", "Age"):
        assert wanted in columns


def test_every_field_has_a_description_and_every_node_a_type():
    missing, untyped = [], []
    for path, node in _walk(openapi_schema()):
        if path in ("", ".metadata"):
            continue
        if not node.get("description") and not path.endswith("{}"):
            missing.append(path)
        if "type" not in node and not (
            node.get("x-kubernetes-preserve-unknown-fields")
            or node.get("x-kubernetes-int-or-string")
        ):
            untyped.append(path)
    assert not missing, f"fields without description: {missing}"
    assert not untyped, f"nodes without type (not structural): {untyped}"


def test_conditions_are_a_map_keyed_by_type():
    conds = openapi_schema()["properties"]["status"]["properties"]["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]
    props = conds["items"]["properties"]
    for field in (
        "type",
        "status",
        "reason",
        "message",
        "observedGeneration",
        "lastTransitionTime",
    ):
        assert field in props


def test_every_cel_rule_has_a_message():
    for path, node in _walk(openapi_schema()):
        for rule in node.get("x-kubernetes-validations") or []:
            assert rule.get("message"), f"{path}: {rule['rule']}"


@pytest.mark.parametrize("name", sorted(load_examples()))
def test_every_example_is_admitted(name):
    obj, errors = admit(load_examples()[name])
    assert errors == []
    assert obj["spec"]["grpc"]["port"] == 50051
    assert obj["spec"]["replicas"] >= 1


def test_defaults_fill_a_minimal_twin():
    obj, errors = admit(
        {
            "apiVersion": "polaris.io/v1alpha1",
            "kind": "DigitalTwin",
            "metadata": {"name": "t"},
            "spec": {"nats": {"url": "nats://n:4222"}},
        }
    )
    assert errors == []
    spec = obj["spec"]
    assert spec["worldModel"]["implementation"] == "statistical"
    assert spec["replicas"] == 1
    assert spec["imagePullPolicy"] == "IfNotPresent"
    assert spec["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    assert "queueGroup" not in spec["nats"]  # replicas never share a queue group
    assert spec["serviceType"] == "ClusterIP"
    assert spec["logging"] == {"level": "INFO", "format": "json"}
    assert spec["durability"] == {
        "jetstream": {
            "enabled": False,
            "stream": "POLARIS_TWIN",
            "maxAge": "24h",
            "replicas": 1,
            "storage": "file",
            "inactiveThreshold": "1h",
            "maxLagSeconds": 60,
        },
        "snapshots": {
            "enabled": False,
            "interval": "5m",
            "keep": 3,
            "volumeSize": "1Gi",
        },
    }


def _mock(**spec_changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(load_examples()["digitaltwin-mock.yaml"])
    obj["spec"].update(spec_changes)
    return obj


INVALID = {
    "gemini_without_api_key": (
        _mock(worldModel={"implementation": "gemini"}),
        "worldModel.implementation gemini and hybrid need llm.apiKeySecretRef",
    ),
    "hybrid_without_api_key": (
        _mock(worldModel={"implementation": "hybrid"}, llm={}),
        "worldModel.implementation gemini and hybrid need llm.apiKeySecretRef",
    ),
    "nats_password_in_overrides": (
        _mock(configOverrides={"nats": {"password": "hunter2"}}),
        "configOverrides.nats must not carry credentials",
    ),
    "nats_token_in_overrides": (
        _mock(configOverrides={"nats": {"token": "t"}}),
        "configOverrides.nats must not carry credentials",
    ),
    "nats_url_in_overrides": (
        _mock(configOverrides={"nats": {"url": "nats://elsewhere:4222"}}),
        "configOverrides.nats.url is not allowed",
    ),
    "api_key_in_settings": (
        _mock(worldModel={"implementation": "mock", "settings": {"api_key": "AIza..."}}),
        "worldModel.settings must not carry an API key",
    ),
    "api_key_in_overridden_settings": (
        _mock(configOverrides={"world_model": {"settings": {"apiKey": "AIza..."}}}),
        "configOverrides.world_model.settings must not carry an API key",
    ),
    "implementation_in_overrides": (
        _mock(configOverrides={"world_model": {"implementation": "gemini"}}),
        "configOverrides.world_model.implementation is not allowed",
    ),
    "credentials_in_nats_url": (
        _mock(nats={"url": "nats://user:pass@nats:4222"}),
        "nats.url must be nats://, tls://, ws:// or wss:// URLs",
    ),
    "http_nats_url": (
        _mock(nats={"url": "http://nats:4222"}),
        "nats.url must be nats://",
    ),
    "two_nats_auth_methods": (
        _mock(
            nats={
                "url": "nats://n:4222",
                "tokenSecretRef": {"name": "s", "key": "token"},
                "credentialsSecretRef": {"name": "c"},
            }
        ),
        "use one NATS authentication method",
    ),
    "user_without_password": (
        _mock(nats={"url": "nats://n:4222", "userSecretRef": {"name": "s", "key": "user"}}),
        "nats.userSecretRef and nats.passwordSecretRef go together",
    ),
    "http_port_equals_grpc_port": (
        _mock(http={"port": 50051}),
        "http.port must differ from grpc.port and telemetry.metricsPort",
    ),
    "http_port_equals_metrics_port": (
        _mock(http={"port": 9464}),
        "http.port must differ from grpc.port and telemetry.metricsPort",
    ),
    "metrics_port_equals_grpc_port": (
        _mock(telemetry={"metricsPort": 50051}),
        "telemetry.metricsPort must differ from grpc.port",
    ),
    "otlp_endpoint_with_credentials": (
        _mock(telemetry={"otlpEndpoint": "http://u:p@collector:4317"}),
        "telemetry.otlpEndpoint must be an http:// or https:// URL without credentials",
    ),
    "name_too_long": (
        {**_mock(), "metadata": {"name": "t" * 48}},
        "metadata.name must be a DNS-1035 label of at most 47 characters",
    ),
    "name_starting_with_a_digit": (
        {**_mock(), "metadata": {"name": "1twin"}},
        "metadata.name must be a DNS-1035 label",
    ),
    # Plain schema errors (no CEL): enum, ranges, required.
    "unknown_model": (_mock(worldModel={"implementation": "oracle"}), "is not one of"),
    "sampling_ratio_above_one": (
        _mock(telemetry={"samplingRatio": 1.5}),
        "greater than the maximum",
    ),
    "negative_replicas": (_mock(replicas=-1), "less than the minimum"),
    "missing_nats": (
        {**_mock(), "spec": {"worldModel": {"implementation": "mock"}}},
        "'nats' is a required property",
    ),
    "unknown_spec_field": (_mock(replica=2), "Additional properties are not allowed"),
    "replicas_without_jetstream": (
        _mock(replicas=2),
        "replicas > 1 needs durability.jetstream.enabled",
    ),
    "replicas_with_jetstream_off": (
        _mock(replicas=3, durability={"jetstream": {"enabled": False}}),
        "replicas > 1 needs durability.jetstream.enabled",
    ),
    "queue_group_in_overrides": (
        _mock(configOverrides={"nats": {"queue_group": "workers"}}),
        "configOverrides.nats.queue_group is not allowed",
    ),
    "jetstream_in_overrides": (
        _mock(configOverrides={"nats": {"jetstream": {"enabled": True}}}),
        "configOverrides.nats.jetstream is not allowed",
    ),
    "snapshots_in_overrides": (
        _mock(configOverrides={"state": {"snapshot_dir": "/tmp/s"}}),
        "configOverrides.state must not configure snapshots",
    ),
    "metrics_port_in_overrides": (
        _mock(configOverrides={"telemetry": {"metrics_port": 1234}}),
        "configOverrides.telemetry.metrics_port is not allowed",
    ),
    "queue_group_field_is_gone": (
        _mock(nats={"url": "nats://n:4222", "queueGroup": "workers"}),
        "Additional properties are not allowed",
    ),
    "bad_duration": (
        _mock(durability={"jetstream": {"enabled": True, "maxAge": "one day"}}),
        "does not match",
    ),
    "bad_volume_size": (
        _mock(durability={"snapshots": {"enabled": True, "volumeSize": "lots"}}),
        "does not match",
    ),
    "system_with_spaces": (_mock(systems=["web cluster"]), "does not match"),
    "admin_token_ref_without_name": (
        _mock(auth={"adminTokenSecretRef": {"key": "k"}}),
        "'name' is a required property",
    ),
    "literal_api_key_field": (
        _mock(llm={"apiKey": "AIza..."}),
        "Additional properties are not allowed",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_twins_are_refused_with_the_rules_message(case):
    obj, expected = INVALID[case]
    _, errors = admit(obj)
    assert any(expected in e for e in errors), errors


def test_secret_refs_default_their_keys():
    obj, errors = admit(
        _mock(
            worldModel={"implementation": "gemini"},
            llm={"apiKeySecretRef": {"name": "g"}},
            nats={"url": "nats://n:4222", "credentialsSecretRef": {"name": "c"}},
        )
    )
    assert errors == []
    assert obj["spec"]["llm"]["apiKeySecretRef"] == {"name": "g", "key": "api-key"}
    assert obj["spec"]["nats"]["credentialsSecretRef"] == {"name": "c", "key": "nats.creds"}


def test_replicas_are_allowed_with_jetstream():
    obj, errors = admit(_mock(replicas=3, durability={"jetstream": {"enabled": True}}))
    assert errors == []
    assert obj["spec"]["durability"]["jetstream"]["stream"] == "POLARIS_TWIN"


def test_admin_token_ref_defaults_its_key():
    obj, errors = admit(_mock(auth={"adminTokenSecretRef": {"name": "twin-admin"}}))
    assert errors == []
    assert obj["spec"]["auth"]["adminTokenSecretRef"] == {
        "name": "twin-admin",
        "key": "admin-token",
    }


def _durable(**durability: Any) -> dict[str, Any]:
    return _mock(durability=durability)


UPDATES = {
    "stream_renamed_while_on": (
        _durable(jetstream={"enabled": True}),
        _durable(jetstream={"enabled": True, "stream": "OTHER"}),
        "durability.jetstream.stream cannot change while JetStream is on",
    ),
    "storage_changed_while_on": (
        _durable(jetstream={"enabled": True}),
        _durable(jetstream={"enabled": True, "storage": "memory"}),
        "durability.jetstream.storage cannot change while JetStream is on",
    ),
    "volume_resized": (
        _durable(snapshots={"enabled": True}),
        _durable(snapshots={"enabled": True, "volumeSize": "5Gi"}),
        "durability.snapshots.volumeSize cannot change while snapshots are on",
    ),
    "storage_class_set_later": (
        _durable(snapshots={"enabled": True}),
        _durable(snapshots={"enabled": True, "storageClass": "fast"}),
        "durability.snapshots.storageClass cannot change while snapshots are on",
    ),
}


@pytest.mark.parametrize("case", sorted(UPDATES))
def test_immutable_durability_fields_are_refused_on_update(case):
    old, new, expected = UPDATES[case]
    assert admit(old)[1] == [] and admit(new)[1] == []  # each is fine on its own (create)
    _, errors = admit_update(old, new)
    assert any(expected in e for e in errors), errors


@pytest.mark.parametrize(
    "old, new",
    [
        # What rolls instead: limits, intervals, lag, systems, scaling.
        (
            _durable(jetstream={"enabled": True}, snapshots={"enabled": True}),
            _durable(
                jetstream={"enabled": True, "maxAge": "7d", "replicas": 3, "maxLagSeconds": 5},
                snapshots={"enabled": True, "interval": "1m", "keep": 5},
            ),
        ),
        # Off then on with another stream: two steps, both allowed.
        (_durable(jetstream={"enabled": True}), _durable(jetstream={"enabled": False})),
        (
            _durable(jetstream={"enabled": False}),
            _durable(jetstream={"enabled": True, "stream": "OTHER", "storage": "memory"}),
        ),
        # Turning snapshots on for a running twin (the operator replaces the StatefulSet).
        (_durable(), _durable(snapshots={"enabled": True, "volumeSize": "5Gi"})),
    ],
)
def test_settings_that_roll_are_accepted_on_update(old, new):
    _, errors = admit_update(old, new)
    assert errors == []
