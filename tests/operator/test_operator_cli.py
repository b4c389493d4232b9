"""The operator's command line and its leader-election priority."""

from __future__ import annotations

import random

import polaris_operator
from polaris_operator.main import parse_args, unique_priority

from crd_tools import EXAMPLES


def test_public_surface_is_explicit():
    assert sorted(polaris_operator.__all__) == sorted(
        name
        for name in dir(polaris_operator)
        if not name.startswith("_")
        and name not in {"builders", "kube", "handlers", "main", "metrics", "render"}
    )


def test_defaults_are_standalone_all_namespaces_with_liveness(monkeypatch):
    monkeypatch.delenv("POLARIS_OPERATOR_PEERING", raising=False)
    monkeypatch.delenv("POLARIS_OPERATOR_NAMESPACES", raising=False)
    args = parse_args([])
    assert args.standalone and args.namespace == []
    assert args.liveness == "http://0.0.0.0:8080/healthz"


def test_peering_and_namespaces_from_flags_or_environment(monkeypatch):
    args = parse_args(["--peering", "polaris", "-n", "a", "-n", "b-*"])
    assert (args.peering, args.standalone, args.namespace) == ("polaris", False, ["a", "b-*"])
    monkeypatch.setenv("POLARIS_OPERATOR_NAMESPACES", "x, y")
    monkeypatch.setenv("POLARIS_OPERATOR_PEERING", "p")
    args = parse_args([])
    assert (args.peering, args.namespace) == ("p", ["x", "y"])


def test_older_replicas_win_the_election_and_ties_are_broken():
    rng = random.Random(7)
    old, new = unique_priority(1_700_000_000, rng), unique_priority(1_700_000_060, rng)
    assert old > new > 0
    same_second = {unique_priority(1_700_000_000, random.Random(seed)) for seed in range(20)}
    assert len(same_second) > 1
    assert unique_priority(2**32) < 2**53  # exact in JSON


def test_metrics_port_from_flag_or_environment(monkeypatch):
    monkeypatch.delenv("POLARIS_OPERATOR_METRICS_PORT", raising=False)
    assert parse_args([]).metrics_port == 0
    assert parse_args(["--metrics-port", "9090"]).metrics_port == 9090
    monkeypatch.setenv("POLARIS_OPERATOR_METRICS_PORT", "9191")
    assert parse_args([]).metrics_port == 9191


def test_render_is_a_subcommand_of_the_same_entry_point(capsys):
    import pytest

    from polaris_operator.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["render", "-f", str(EXAMPLES / "digitaltwin-mock.yaml"), "--image", "i:1"])
    assert exit_.value.code == 0
    assert "kind: Deployment" in capsys.readouterr().out
