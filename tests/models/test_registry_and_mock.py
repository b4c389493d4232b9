from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from twin.core.errors import ModelNotFound
from twin.core.state import TwinState
from twin.models import Action, SimulationRequest, available_models, create_model
from twin.models.mock import MockWorldModel


def test_third_party_models_join_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "acme_twin_plugin.py"
    pkg.write_text(
        textwrap.dedent(
            """
            from twin.models.mock import MockWorldModel
            class AcmeModel(MockWorldModel):
                name = "acme"
            """
        )
    )
    dist = tmp_path / "acme_twin_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-twin-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[polaris.world_models]\nacme = acme_twin_plugin:AcmeModel\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "acme" in available_models()
    model = create_model("acme", TwinState())
    assert type(model).__name__ == "AcmeModel"
    sys.modules.pop("acme_twin_plugin", None)


def test_unknown_model_names_the_available_ones() -> None:
    with pytest.raises(ModelNotFound, match="available: .*mock"):
        create_model("crystal_ball", TwinState())


async def test_mock_is_deterministic_for_the_same_state() -> None:
    def build() -> MockWorldModel:
        state = TwinState()
        for i in range(20):
            state.store.append("swim", "active.servers", 1000.0 + i, 3.0)
            state.store.append("swim", "server.utilization", 1000.0 + i, 0.5 + i / 100)
        return MockWorldModel(state)

    req = SimulationRequest("s", "what_if", [Action("ADD_SERVER", "swim", {"count": "1"})], 30)
    a = await build().simulate(req)
    b = await build().simulate(req)
    assert a == b
    assert a.future_states[0].metrics["active.servers"] == 4.0
    assert a.future_states[0].metrics["server.utilization"] == pytest.approx(0.69 * 3 / 4)


async def test_mock_answers_unknown_actions_honestly() -> None:
    state = TwinState()
    state.store.append("swim", "active.servers", 1.0, 3.0)
    res = await MockWorldModel(state).simulate(
        SimulationRequest("s", "what_if", [Action("LAUNCH_ROCKET", "swim")], 10)
    )
    assert res.success and res.confidence < 0.5
    assert (
        res.metadata["unknown_actions"] == "LAUNCH_ROCKET" and "no effect model" in res.explanation
    )
