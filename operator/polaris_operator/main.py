"""Entry point: ``polaris-twin-operator`` (also ``python -m polaris_operator``).

``polaris-twin-operator [options]`` runs the operator; ``polaris-twin-operator render -f
twin.yaml`` prints the manifests it would apply (see :mod:`.render`).

High availability uses kopf's own peering (``KopfPeering``/``ClusterKopfPeering``
objects, whose CRDs the chart ships), not a separate Lease loop: each replica
announces itself in the peering object with a priority, and every replica but the
highest pauses. kopf pauses *all* replicas that share the highest priority, so
priorities must be unique: each replica derives its priority from its start time
(older is higher, so a fresh replica never pre-empts a working leader) plus a random
tie-breaker. When the leader dies its record expires (``--peering-lifetime``, 60 s by
default) and the next-oldest replica resumes. Reconciliation is idempotent, so the
short overlap a hand-over can cause is harmless.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from collections.abc import Sequence

import kopf

from . import handlers  # noqa: F401  - registers the handlers

__all__ = ["main", "parse_args", "unique_priority"]

# A start time before this epoch offset still gives positive priorities until ~2242.
_EPOCH_CEILING = 2**33


def unique_priority(now: float | None = None, rng: random.Random | None = None) -> int:
    """Older replicas get higher priorities; the low 3 digits break ties."""
    started = int(time.time() if now is None else now)
    return (_EPOCH_CEILING - started) * 1000 + (rng or random.SystemRandom()).randrange(1000)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(
        prog="polaris-twin-operator",
        description="Kubernetes operator for POLARIS DigitalTwin resources (polaris.io/v1alpha1).",
    )
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=None,
        help="Namespace (glob pattern) to serve; repeat for more. Default: all namespaces "
        "(env POLARIS_OPERATOR_NAMESPACES, comma separated).",
    )
    p.add_argument(
        "--liveness",
        default=env.get("POLARIS_OPERATOR_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="URL the liveness endpoint listens on; empty disables it.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--peering",
        default=env.get("POLARIS_OPERATOR_PEERING", ""),
        help="Name of the (Cluster)KopfPeering object for leader election (HA).",
    )
    mode.add_argument(
        "--standalone",
        action="store_true",
        help="Run without peering (a single replica only).",
    )
    p.add_argument(
        "--priority", type=int, default=None, help="Peering priority (default: by start time)."
    )
    p.add_argument(
        "--peering-lifetime", type=int, default=60, help="Seconds a silent peer counts as alive."
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env.get("POLARIS_OPERATOR_METRICS_PORT", "0") or 0),
        help="Port of the operator's Prometheus /metrics (reconciles, errors, drift repairs, "
        "latency); 0 disables it (env POLARIS_OPERATOR_METRICS_PORT).",
    )
    p.add_argument("--verbose", action="store_true", help="Debug logging.")
    p.add_argument(
        "--log-format",
        choices=["plain", "full", "json"],
        default=env.get("POLARIS_OPERATOR_LOG_FORMAT", "json"),
    )
    args = p.parse_args(argv)
    if args.namespace is None:
        raw = env.get("POLARIS_OPERATOR_NAMESPACES", "")
        args.namespace = [ns.strip() for ns in raw.split(",") if ns.strip()]
    if not args.peering:
        args.standalone = True
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["render"]:
        from .render import main as render

        raise SystemExit(render(argv[1:]))
    args = parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format={
            "plain": kopf.LogFormat.PLAIN,
            "full": kopf.LogFormat.FULL,
            "json": kopf.LogFormat.JSON,
        }[args.log_format],
    )
    settings = kopf.OperatorSettings()
    settings.peering.lifetime = args.peering_lifetime
    settings.peering.mandatory = not args.standalone
    # One ClusterKopfPeering object, also when serving selected namespaces (the chart
    # ships that CRD only, and one election for the whole operator is what HA needs).
    settings.peering.clusterwide = True
    logging.getLogger(__name__).info(
        "starting: namespaces=%s peering=%s",
        args.namespace or "all",
        "standalone" if args.standalone else args.peering,
    )
    kopf.run(
        settings=settings,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=None
        if args.standalone
        else (args.priority if args.priority is not None else unique_priority()),
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(metrics_port=args.metrics_port),
    )


if __name__ == "__main__":  # pragma: no cover
    main()
