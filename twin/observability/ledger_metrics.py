"""The prediction ledger's figures as metric families (``/metrics`` and ``get_metrics``).

Read from the ledger at scrape time (``twin.core.ledger``): the overall figures
unlabelled, and the per (system, model, kind) aggregates as families labelled
``system``, ``model``, ``kind``. A figure not defined yet (coverage or MASE before
anything was scored) has no sample and no ``get_metrics`` key, rather than a 0 that
reads as "never covered".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from twin.core.ledger import METRIC_NAMES, PredictionLedger
from twin.core.metrics import counter_family, gauge_family, with_flat

__all__ = ["LedgerCollector"]

LABELS = ("system", "model", "kind")
UNCONDITIONAL_KINDS = ("forecast", "scenario")

# Overall figures (``PredictionLedger.totals``); names in METRIC_NAMES are labelled below.
TOTALS_HELP = {
    "predictions_recorded_total": "Predictions (forecasts, what-ifs, plan outcomes) recorded.",
    "predictions_scored_total": "Predictions scored against the telemetry that followed.",
    "predictions_pending": "Recorded predictions waiting for their horizon's telemetry.",
    "predictions_unscorable_total": "Predictions whose horizon passed without telemetry.",
    "predictions_not_executed_total": "What-ifs and plans whose actions were not executed.",
    "predictions_dropped_total": "Pending predictions dropped by the ledger's bounds.",
    "forecast_interval_coverage": "Share of actuals inside forecast intervals as delivered.",
    "forecast_interval_coverage_raw": "Share of actuals inside forecast intervals as modelled.",
    "prediction_mase": "Mean absolute scaled error of scored forecasts.",
    "whatif_error_ratio": "Mean |error| / mean |actual| of what-ifs after their action.",
    "ledger_score_seconds_total": "Time spent scoring predictions.",
    "ledger_bytes": "Approximate memory held by the prediction ledger.",
    "prediction_drift_systems": "Systems whose live prediction error exceeds their backtest's.",
    "prediction_drift_events_total": "Prediction drift findings.",
    "prediction_refits_total": "Refits requested by prediction drift.",
}

LABELLED_HELP = {
    "recorded": "Predictions recorded, by system, model and kind.",
    "scored": "Predictions scored against the telemetry that followed.",
    "not_executed": "What-ifs and plans whose actions were not executed within their horizon.",
    "coverage": "Share of actuals inside the intervals as delivered (recalibrated), by kind.",
    "coverage_raw": "Share of actuals inside the intervals as the model gave them, by kind.",
    "mase": "Mean absolute scaled error (scale: in-sample one-step naive error).",
    "rel_error": "Mean |error| / mean |actual| of what-ifs and plans after their action.",
}


def _family(
    name: str, doc: str, labels: tuple[str, ...] = ()
) -> CounterMetricFamily | GaugeMetricFamily:
    if name.endswith("_total"):
        return counter_family(name[: -len("_total")], doc, labels)
    return gauge_family(name, doc, labels)


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def ledger_families(ledger: PredictionLedger) -> Iterator[Metric]:
    """Families of the ledger's figures, each with its ``get_metrics`` keys.

    Flat keys follow ``twin.core.metrics``: the overall figure under its bare name (the
    coverage and MASE of forecasts, the error ratio of what-ifs and plans, pooled), a
    labelled one under ``<name>.<system>.<model>.<kind>``.
    """
    totals = ledger.totals()
    labelled = set(METRIC_NAMES.values())
    for key, raw in totals.items():
        if key in labelled:
            continue  # its family is the labelled one below
        fam = _family(key, TOTALS_HELP.get(key, key.replace("_", " ") + "."))
        flat: dict[str, float] = {}
        v = _number(raw)
        if v is not None:
            fam.add_metric([], v)
            flat[key] = v
        yield with_flat(fam, flat)
    rows = ledger.aggregates()
    for field_, name in METRIC_NAMES.items():
        fam = _family(name, LABELLED_HELP.get(field_, name), LABELS)
        flat = {}
        overall = _number(totals.get(name))
        if overall is not None:
            flat[name] = overall
        for r in rows:
            if field_ == "rel_error" and r["kind"] in UNCONDITIONAL_KINDS:
                continue  # whatif_error_ratio: what-ifs and plans (a forecast's is MASE)
            v = _number(r.get(field_))
            if v is None:
                continue
            values = [str(r[label]) for label in LABELS]
            fam.add_metric(values, v)
            flat[".".join([name, *values])] = v
        yield with_flat(fam, flat)


class LedgerCollector(Collector):
    """``ledger_families`` of the ledger ``read()`` returns (the state's, at scrape time)."""

    def __init__(
        self, registry: CollectorRegistry | None, read: Callable[[], PredictionLedger]
    ) -> None:
        self.read = read
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        return ledger_families(self.read())

    def describe(self) -> Iterator[Metric]:
        return iter(())
