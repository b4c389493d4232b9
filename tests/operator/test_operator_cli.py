"""The operator's command line and its leader-election priority."""

from __future__ import annotations

import random

import polaris_operator
from polaris_operator.main import parse_args, unique_priority


def test_public_surface_is_explicit():
    assert sorted(polaris_operator.__all__) == sorted(
        name
        for name in dir(polaris_operator)
        if not name.startswith("_") and name not in {"builders", "kube", "handlers", "main"}
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
