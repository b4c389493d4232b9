"""Telemetry of one applied batch, grouped per series: the columnar hot path.

A batch message is decoded straight into per-series lists of times and values
(``EventDecoder.batch_columns``), the applier merges the messages it applies
together (``ColumnsBuilder``), the store appends each series' samples at once
(``Series.extend``: one vectorised copy for long runs) and a model scores each
series' samples in one call. No ``Point`` is built per event on that path;
``SeriesColumns`` is still a ``Sequence[Point]`` (built lazily, per series in
arrival order) for models that iterate points.

Times and values stay Python lists of floats until someone needs arrays
(``arrays(g)``): numpy's per-call cost (~1 us) only pays off for runs of a few dozen
samples, and a batch message of 100 events over 18 series has ~5 per series.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from twin.core.point import Point

Key = tuple[str, str]


class SeriesColumns(Sequence[Point]):
    """Per-series (times, values) of a batch, plus its text values.

    ``keys[i]``/``units[i]``/``ts[i]``/``vs[i]`` describe group ``i`` (lists of floats
    in arrival order); ``texts`` holds ``(group, t, text)`` of string values, in
    arrival order. ``groups()`` yields ``(key, unit, t, v)`` of the numeric groups.
    """

    __slots__ = ("_points", "keys", "n", "texts", "ts", "units", "vs")

    def __init__(
        self,
        keys: list[Key],
        units: list[str],
        ts: list[list[float]],
        vs: list[list[float]],
        texts: list[tuple[int, float, str]],
    ) -> None:
        self.keys = keys
        self.units = units
        self.ts = ts
        self.vs = vs
        self.texts = texts
        self.n = sum(map(len, ts)) + len(texts)
        self._points: list[Point] | None = None

    @classmethod
    def empty(cls) -> SeriesColumns:
        return cls([], [], [], [], [])

    def groups(self) -> Iterator[tuple[Key, str, list[float], list[float]]]:
        for i, key in enumerate(self.keys):
            t = self.ts[i]
            if t:
                yield key, self.units[i], t, self.vs[i]

    def arrays(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Group ``g``'s (times, values) as float64 arrays."""
        return np.array(self.ts[g], dtype=np.float64), np.array(self.vs[g], dtype=np.float64)

    def without(self, refused: set[int]) -> SeriesColumns:
        """The same batch minus the groups in ``refused`` (series over a cap)."""
        keep = [i for i in range(len(self.keys)) if i not in refused]
        remap = {old: new for new, old in enumerate(keep)}
        return SeriesColumns(
            [self.keys[i] for i in keep],
            [self.units[i] for i in keep],
            [self.ts[i] for i in keep],
            [self.vs[i] for i in keep],
            [(remap[g], t, x) for g, t, x in self.texts if g in remap],
        )

    # -- Sequence[Point], for models that iterate points --------------------------
    def _materialise(self) -> list[Point]:
        if self._points is None:
            out: list[Point] = []
            for i, (src, name) in enumerate(self.keys):
                unit = self.units[i]
                out.extend(
                    Point(src, name, t, v, unit, None) for t, v in zip(self.ts[i], self.vs[i])
                )
            for g, t, text in self.texts:
                src, name = self.keys[g]
                out.append(Point(src, name, t, float("nan"), self.units[g], text))
            self._points = out
        return self._points

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> Point: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Point]: ...
    def __getitem__(self, i: int | slice) -> Point | Sequence[Point]:
        return self._materialise()[i]

    def __iter__(self) -> Iterator[Point]:
        return iter(self._materialise())

    def __bool__(self) -> bool:
        return self.n > 0


class ColumnsBuilder:
    """Merges decoded messages (columns or points) into one ``SeriesColumns``."""

    __slots__ = ("_index", "_texts", "_ts", "_units", "_vs")

    def __init__(self) -> None:
        self._index: dict[Key, int] = {}
        self._units: list[str] = []
        self._ts: list[list[float]] = []
        self._vs: list[list[float]] = []
        self._texts: list[tuple[int, float, str]] = []

    def _group(self, key: Key, unit: str) -> int:
        g = self._index.get(key)
        if g is None:
            g = self._index[key] = len(self._units)
            self._units.append(unit)
            self._ts.append([])
            self._vs.append([])
        return g

    def add_columns(self, c: SeriesColumns) -> None:
        for i, key in enumerate(c.keys):
            g = self._group(key, c.units[i])
            self._ts[g].extend(c.ts[i])
            self._vs[g].extend(c.vs[i])
        for gi, t, text in c.texts:
            self._texts.append((self._group(c.keys[gi], c.units[gi]), t, text))

    def add_points(self, points: Sequence[Point]) -> None:
        for source, name, t, v, unit, text in points:
            g = self._group((source, name), unit)
            if text is None:
                self._ts[g].append(t)
                self._vs[g].append(v)
            else:
                self._texts.append((g, t, text))

    def build(self) -> SeriesColumns:
        return SeriesColumns(list(self._index), self._units, self._ts, self._vs, self._texts)
