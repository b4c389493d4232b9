"""The twin's metrics: one ``prometheus_client`` registry, handed to every component.

``/metrics`` serves the registry; ``Manage get_metrics`` is ``flat_view(registry)``, the
same samples under the flat names docs/grpc-api.md documents. Nothing is parsed back out
of a name: a family's flat keys are built from its name and label *values*.

How a component adds a metric (one place, where it counts):

- Something it updates: a ``prometheus_client`` metric on the registry it was given::

      self.plans = Counter("polaris_twin_plans_compared", "Plans ranked by Simulate compare.",
                           ["system"], registry=registry)
      self.plans.labels(system).inc()

  It shows in ``/metrics`` as ``polaris_twin_plans_compared_total{system="swim"}`` and in
  ``get_metrics`` as ``plans_compared_total`` (the sum) and ``plans_compared_total.swim``.
  Use seconds for durations, ``_total`` counters, and no precomputed rates.
- Figures it already keeps (ints bumped on a hot path, a dict a model reports): a
  ``Figures`` collector reads them at scrape time, so the hot path pays nothing::

      figures = Figures(registry)
      figures.counter("events_received", "Events received from NATS.", lambda: stats.received)
      figures.gauge("queue_size", "Messages waiting to be applied.", queue.qsize)

Flat names (``flat_view``): a family ``polaris_twin_<name>`` becomes ``<name>`` (counters
``<name>_total``); a labelled sample appends its label values (``<name>.<v1>.<v2>``) and a
labelled counter also gets its sum under the bare name. Families that are not
``polaris_twin_*`` (``process_*``, ``python_*``) are Prometheus-only. A collector may set
``flat`` on a family it yields to give its own flat keys (a histogram's documented
p50/p99, or ``{}`` to stay out of ``get_metrics``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "PREFIX",
    "FigureDict",
    "Figures",
    "LoopBoundRegistry",
    "counter_family",
    "dict_families",
    "flat_view",
    "gauge_family",
    "new_registry",
    "with_flat",
]

PREFIX = "polaris_twin_"

Reading = float | Mapping[str, float] | Mapping[tuple[str, ...], float]


def new_registry() -> CollectorRegistry:
    """A registry with the process and Python runtime collectors (``process_*``, ``python_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def counter_family(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def gauge_family(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, labels=list(labels))


@dataclass(frozen=True, slots=True)
class _Figure:
    kind: str  # "counter" | "gauge"
    name: str
    doc: str
    read: Callable[[], Reading]
    labels: tuple[str, ...]


class Figures(Collector):
    """Figures a component keeps itself, turned into metric families at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._figures: list[_Figure] = []
        if registry is not None:
            registry.register(self)

    def counter(
        self, name: str, doc: str, read: Callable[[], Reading], labels: Iterable[str] = ()
    ) -> None:
        """``polaris_twin_<name>_total``; ``read`` returns the value, or {label value(s): value}."""
        self._figures.append(_Figure("counter", name, doc, read, tuple(labels)))

    def gauge(
        self, name: str, doc: str, read: Callable[[], Reading], labels: Iterable[str] = ()
    ) -> None:
        """``polaris_twin_<name>``; ``read`` as for ``counter``."""
        self._figures.append(_Figure("gauge", name, doc, read, tuple(labels)))

    def collect(self) -> Iterator[Metric]:
        for f in self._figures:
            fam = (
                counter_family(f.name, f.doc, f.labels)
                if f.kind == "counter"
                else gauge_family(f.name, f.doc, f.labels)
            )
            value = f.read()
            if isinstance(value, Mapping):
                for key, v in sorted(value.items()):
                    fam.add_metric(list(key) if isinstance(key, tuple) else [str(key)], float(v))
            else:
                fam.add_metric([], float(value))
            yield fam

    def describe(self) -> Iterator[Metric]:
        return iter(())


def with_flat(fam: Metric, flat: dict[str, float]) -> Metric:
    """``fam`` with its own ``get_metrics`` keys (``{}``: Prometheus only)."""
    fam.flat = flat  # type: ignore[attr-defined]  # read back by flat_view
    return fam


def dict_families(
    figures: Mapping[str, float], name_prefix: str, flat_prefix: str, owner: str
) -> Iterator[Metric]:
    """Families for a dict of conventionally named figures (a model's ``metrics()``).

    ``fits_total`` is the counter ``polaris_twin_<name_prefix>fits_total``, anything else a
    gauge; the flat key is ``<flat_prefix><key>`` as reported.
    """
    for key, value in figures.items():
        name = name_prefix + "".join(c if c.isalnum() or c == "_" else "_" for c in key)
        doc = f"{owner} figure {key}."
        fam: CounterMetricFamily | GaugeMetricFamily
        if key.endswith("_total"):
            fam = counter_family(name[: -len("_total")], doc)
        else:
            fam = gauge_family(name, doc)
        fam.add_metric([], float(value))
        yield with_flat(fam, {flat_prefix + key: float(value)})


class FigureDict(Collector):
    """``dict_families`` of what ``read()`` returns, at scrape time (a model's ``metrics()``)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        read: Callable[[], Mapping[str, float]],
        name_prefix: str = "",
        flat_prefix: str = "",
        owner: str = "",
    ) -> None:
        self.read = read
        self.name_prefix = name_prefix
        self.flat_prefix = flat_prefix
        self.owner = owner
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        return dict_families(self.read(), self.name_prefix, self.flat_prefix, self.owner)

    def describe(self) -> Iterator[Metric]:
        return iter(())


def flat_view(registry: Any) -> dict[str, float]:
    """The registry's ``polaris_twin_*`` samples under ``get_metrics``' flat names."""
    out: dict[str, float] = {}
    for fam in registry.collect():
        if not fam.name.startswith(PREFIX):
            continue
        flat = getattr(fam, "flat", None)
        if flat is not None:
            out.update(flat)
            continue
        if fam.type not in ("counter", "gauge"):
            continue  # a histogram's flat view comes from its collector (``flat``)
        key = fam.name[len(PREFIX) :] + ("_total" if fam.type == "counter" else "")
        total = 0.0
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            if s.labels:
                out[key + "." + ".".join(s.labels.values())] = s.value
                total += s.value
            else:
                out[key] = s.value
        if fam.type == "counter" and key not in out:
            out[key] = total  # a labelled counter's sum (0 before its first sample)
    return {k: v if math.isfinite(v) else 0.0 for k, v in out.items()}


class LoopBoundRegistry:
    """A registry read on its event loop's thread (for ``/metrics``' HTTP thread).

    Collectors read the store and the model, which only the event-loop thread may
    touch; a scrape from another thread hands the collection to the loop and waits.
    """

    def __init__(
        self, registry: CollectorRegistry, loop: asyncio.AbstractEventLoop, timeout: float = 5.0
    ) -> None:
        self.registry = registry
        self.loop = loop
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        if not self.loop.is_running() or _on_loop_thread(self.loop):
            yield from self.registry.collect()
            return

        async def on_loop() -> list[Metric]:
            return list(self.registry.collect())

        yield from asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(self.timeout)

    def restricted_registry(self, names: Iterable[str]) -> LoopBoundRegistry:
        wanted = set(names)
        outer = self

        class _Restricted(LoopBoundRegistry):
            def collect(self) -> Iterator[Metric]:
                for fam in LoopBoundRegistry.collect(outer):
                    samples = [s for s in fam.samples if s.name in wanted]
                    if samples:
                        fam.samples = samples
                        yield fam

        return _Restricted(self.registry, self.loop, self.timeout)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
