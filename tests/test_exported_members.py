"""The public surface of ``twin``, ``twin.models`` and ``polaris_operator``: what ``__all__``
lists, exactly (a change here is an API change), every listed name importable, and nothing
public left undeclared."""

from __future__ import annotations

import importlib
import types

import pytest

EXPORTS = {
    "twin": [
        "Busy", "ConfigError", "DecodeError", "IngestError", "InvalidRequest", "ModelError",
        "ModelNotFound", "ModelUnavailable", "PortInUse", "TwinError", "__version__",
    ],
    "twin.models": [
        "Action", "AnomalyReporter", "DiagnosisRequest", "DiagnosisResult", "EventBatch",
        "ForecastConsumer", "Health", "Hypothesis", "Impact", "LatencyBounded", "PredictedState",
        "QueryRequest", "QueryResult", "SimulationRequest", "SimulationResult", "WorldModel",
        "available_models", "create_model", "forecaster_from_model", "parse_settings",
        "register_model",
    ],
    "polaris_operator": [
        "API_GROUP", "API_VERSION", "KIND", "PLURAL", "SpecError", "build_children",
        "build_configmap", "build_deployment", "build_service", "build_statefulset",
        "build_twin_config", "build_workload", "config_hash", "status_from_workload",
    ],
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_all_lists_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(EXPORTS[package])
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name, None) is not None, name


@pytest.mark.parametrize("package", sorted(EXPORTS))
def test_nothing_public_is_left_out_of_all(package: str) -> None:
    """Public attributes are either declared in ``__all__`` or subpackages/modules."""
    module = importlib.import_module(package)
    public = {n for n in vars(module) if not n.startswith("_")}
    undeclared = {
        n for n in public - set(module.__all__)
        if not isinstance(getattr(module, n), types.ModuleType) and n != "annotations"
    }  # fmt: skip
    assert undeclared == set()


def test_errors_are_one_tree() -> None:
    import twin

    for name in EXPORTS["twin"]:
        obj = getattr(twin, name)
        if isinstance(obj, type):
            assert issubclass(obj, twin.TwinError), name
