"""Create-or-replace of one child, against a scripted API (no kopf loop, no HTTP)."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from polaris_operator import builders as b
from polaris_operator import handlers as h
from polaris_operator.kube import ApiError

from crd_tools import admitted, load_examples

DT = admitted(load_examples()["digitaltwin-mock.yaml"])
DT["metadata"].update(namespace="ns", uid="uid-1", generation=1)


class ScriptedApi:
    """One object's API: ``rewrite`` plays the API server's normalisation on writes."""

    def __init__(self, live: dict | None = None, rewrite=lambda o: o, conflicts: int = 0) -> None:
        self.live = copy.deepcopy(live)
        self.rewrite = rewrite
        self.conflicts = conflicts
        self.calls: list[str] = []
        self.rv = 1

    async def get(self, *_: Any) -> dict | None:
        self.calls.append("get")
        return copy.deepcopy(self.live)

    async def create(self, obj: dict) -> dict:
        self.calls.append("create")
        self.live = self.rewrite(copy.deepcopy(obj))
        self.live["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.live)

    async def replace(self, obj: dict) -> dict:
        self.calls.append("replace")
        if self.conflicts:
            self.conflicts -= 1
            self.rv += 1
            self.live["metadata"]["resourceVersion"] = str(self.rv)
            raise ApiError(409, "Conflict", "the object has been modified")
        assert obj["metadata"]["resourceVersion"] == self.live["metadata"]["resourceVersion"]
        self.rv += 1
        self.live = self.rewrite(copy.deepcopy(obj))
        self.live["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.live)


@pytest.fixture(autouse=True)
def events(monkeypatch) -> list[tuple[str, str]]:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        h.kopf, "event", lambda obj, *, type, reason, message: posted.append((reason, message))
    )
    return posted


class Log:
    def info(self, *_: Any) -> None:
        pass


def desired_deployment() -> dict:
    dep = b.build_deployment(DT, default_image="img:1")
    kopf.adopt(dep, owner=DT)
    return dep


async def test_a_missing_child_is_created(events):
    api = ScriptedApi()
    live = await h._apply(api, desired_deployment(), DT, Log(), "twin create")
    assert api.calls == ["get", "create"]
    assert live["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert events == [("Created", "Created Deployment twin-mock")]


async def test_an_unchanged_child_is_left_alone(events):
    dep = desired_deployment()
    api = ScriptedApi(
        live={
            **dep,
            "status": {"replicas": 1},
            "metadata": {**dep["metadata"], "resourceVersion": "1"},
        }
    )
    await h._apply(api, desired_deployment(), DT, Log(), "child Deployment MODIFIED")
    assert api.calls == ["get"] and events == []


async def test_a_drifted_child_is_replaced_keeping_what_the_server_allocated(events):
    svc = b.build_service(DT)
    kopf.adopt(svc, owner=DT)
    live = copy.deepcopy(svc)
    live["metadata"].update(resourceVersion="1", annotations={"someone/else": "x"})
    live["spec"].update(clusterIP="10.0.0.7", clusterIPs=["10.0.0.7"], type="NodePort")
    api = ScriptedApi(live=live)
    result = await h._apply(api, svc, DT, Log(), "child Service MODIFIED")
    assert api.calls == ["get", "replace"]
    assert result["spec"]["type"] == "ClusterIP" and result["spec"]["clusterIP"] == "10.0.0.7"
    assert result["metadata"]["annotations"] == {"someone/else": "x"}
    assert events == [("DriftRepaired", "Drift repaired Service twin-mock")]


async def test_a_conflicting_write_is_retried_on_the_fresh_object():
    dep = desired_deployment()
    live = copy.deepcopy(dep)
    live["metadata"]["resourceVersion"] = "1"
    live["spec"]["replicas"] = 5
    api = ScriptedApi(live=live, conflicts=1)
    result = await h._apply(api, dep, DT, Log(), "twin update")
    assert api.calls == ["get", "replace", "get", "replace"]
    assert result["spec"]["replicas"] == 1


async def test_a_spec_the_api_server_rewrites_is_reported_instead_of_looping():
    dep = desired_deployment()
    dep["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {}, "typo": {}}

    def drop_typo(obj: dict) -> dict:
        obj["spec"]["template"]["spec"].get("affinity", {}).pop("typo", None)
        return obj

    live = drop_typo(copy.deepcopy(dep))
    live["metadata"]["resourceVersion"] = "1"
    api = ScriptedApi(live=live, rewrite=drop_typo)
    memory: dict = {}
    await h._apply(api, dep, DT, Log(), "twin update", memory)  # tries once
    assert api.calls == ["get", "replace"]
    with pytest.raises(b.SpecError, match=r"affinity\.typo"):
        await h._apply(api, dep, DT, Log(), "child Deployment MODIFIED", memory)
    assert api.calls == ["get", "replace", "get"]  # no second replace


async def test_objects_of_someone_else_are_never_taken_over():
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "twin-mock", "namespace": "ns", "resourceVersion": "1"},
    }
    with pytest.raises(b.SpecError, match="not managed by this DigitalTwin"):
        await h._apply(ScriptedApi(live=foreign), desired_deployment(), DT, Log(), "twin create")
    previous = copy.deepcopy(desired_deployment())
    previous["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-deleted-twin"
    with pytest.raises(kopf.TemporaryError, match="garbage collection"):
        await h._apply(ScriptedApi(live=previous), desired_deployment(), DT, Log(), "twin create")
