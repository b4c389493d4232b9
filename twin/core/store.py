"""Columnar, bounded store of every (source, metric) time series.

Why chunks: a series is a list of fixed-size numpy chunks (float64 time, float64
value) instead of one growing array, so an append is O(1) without reallocation
spikes, retention drops whole chunks, and memory stays close to the 16 bytes a
(timestamp, value) pair needs. The first chunk of a series starts small and
doubles up to ``CHUNK`` so ten thousand tiny series do not each reserve a full
chunk. Time is event time (seconds since the epoch, float); "now" for age-based
retention is the newest event time of the series, never the wall clock, so a
replay at any speed keeps the same data.

Out-of-order points are accepted: the series marks itself unsorted and sorts
once, lazily, on the next read (amortised; telemetry is nearly always ordered).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

CHUNK = 4096
_FIRST_CHUNK = 64
VECTOR_MIN = 32  # runs at least this long are appended with array copies


@dataclass(frozen=True, slots=True)
class Retention:
    """Bounds of one series: at most ``max_points`` samples, none older than ``max_age_sec``."""

    max_points: int = 100_000
    max_age_sec: float = 0.0  # 0 = no age limit

    @property
    def chunk(self) -> int:
        """Chunk size for this bound: about an eighth of ``max_points`` (a power of two
        between 64 and ``CHUNK``), so a full series wastes at most ~2 chunks, i.e. about a
        quarter of what it keeps, and ``max_points: 300`` costs ~7 KB, not 2 x 64 KB."""
        want = max(1, -(-self.max_points // 8))
        size = _FIRST_CHUNK
        while size < want and size < CHUNK:
            size *= 2
        return size


class Series:
    """One time series; O(1) append, binary-searched reads."""

    __slots__ = (
        "source",
        "name",
        "unit",
        "_t",
        "_v",
        "_fill",
        "_head",
        "_len",
        "_sorted",
        "last_t",
        "last_v",
        "last_text",
        "appended",
        "_retention",
        "version",
    )

    def __init__(self, source: str, name: str, retention: Retention, unit: str = "unknown") -> None:
        self.source = source
        self.name = name
        self.unit = unit
        self._retention = retention
        first = min(_FIRST_CHUNK, max(1, retention.max_points))
        self._t: list[np.ndarray] = [np.empty(first, dtype=np.float64)]
        self._v: list[np.ndarray] = [np.empty(first, dtype=np.float64)]
        self._fill = 0  # used slots of the last chunk
        self._head = 0  # dropped slots of the first chunk
        self._len = 0
        self._sorted = True
        self.last_t = -math.inf
        self.last_v = math.nan
        self.last_text: str | None = None
        self.appended = 0  # every sample ever appended (not reduced by retention)
        self.version = 0  # bumps on every change; models use it to know what is new

    def __len__(self) -> int:
        return self._len

    def append(self, t: float, v: float) -> None:
        # The per-sample hot path: locals instead of repeated attribute loads,
        # len() instead of .shape[0] (half the cost on a 1-d array).
        tc = self._t[-1]
        fill = self._fill
        if fill == len(tc):
            self._grow()
            tc = self._t[-1]
            fill = self._fill
        tc[fill] = t
        self._v[-1][fill] = v
        self._fill = fill + 1
        n = self._len = self._len + 1
        self.appended += 1
        self.version += 1
        if t >= self.last_t:
            self.last_t = t
            self.last_v = v
        else:
            self._sorted = False
        r = self._retention
        if n > r.max_points:
            self._drop_front(n - r.max_points)
        elif r.max_age_sec and self._t[0][self._head] < self.last_t - r.max_age_sec:
            self._trim_age()

    def extend(self, ts: Sequence[float] | np.ndarray, vs: Sequence[float] | np.ndarray) -> None:
        """Appends many samples (arrival order); the same result as ``append`` for each.

        Runs of ``VECTOR_MIN`` or more go in with vectorised copies; shorter ones one by
        one (numpy's per-call cost is ~1 us: a vectorised append of 5 samples is slower).
        """
        n = len(ts)
        if n < VECTOR_MIN or self._retention.max_age_sec:
            # (Age retention trims as it goes, path-dependent with late samples: one by one.)
            append = self.append
            for t, v in zip(ts, vs):
                append(t, v)
            return
        ts = np.asarray(ts, dtype=np.float64)
        vs = np.asarray(vs, dtype=np.float64)
        last = self.last_t
        if ts[0] < last or bool((ts[1:] < ts[:-1]).any()):
            self._sorted = False
        top = float(ts.max())
        if top >= last:  # as append: the newest time wins, the later sample on a tie
            self.last_t = top
            self.last_v = float(vs[n - 1 - int(np.argmax(ts[::-1] == top))])
        off = 0
        while off < n:
            tc = self._t[-1]
            fill = self._fill
            if fill == tc.shape[0]:
                self._grow()
                continue
            take = min(tc.shape[0] - fill, n - off)
            tc[fill : fill + take] = ts[off : off + take]
            self._v[-1][fill : fill + take] = vs[off : off + take]
            self._fill = fill + take
            off += take
        self._len += n
        self.appended += n
        self.version += n
        if self._len > self._retention.max_points:
            self._drop_front(self._len - self._retention.max_points)

    def _grow(self) -> None:
        size = self._t[-1].shape[0]
        chunk = self._retention.chunk
        if len(self._t) == 1 and self._head == 0 and size < chunk:
            # Still the small first chunk: double it in place.
            new = min(chunk, size * 2)
            t = np.empty(new, dtype=np.float64)
            v = np.empty(new, dtype=np.float64)
            t[:size] = self._t[0]
            v[:size] = self._v[0]
            self._t[0], self._v[0] = t, v
            self._fill = size
            return
        self._t.append(np.empty(chunk, dtype=np.float64))
        self._v.append(np.empty(chunk, dtype=np.float64))
        self._fill = 0

    def _drop_front(self, n: int) -> None:
        self._len -= n
        head = self._head + n
        while len(self._t) > 1 and head >= self._t[0].shape[0]:
            head -= self._t[0].shape[0]
            del self._t[0]
            del self._v[0]
        self._head = head

    def _trim_age(self) -> None:
        self._ensure_sorted()
        cutoff = self.last_t - self._retention.max_age_sec
        t, _ = self.arrays()
        n = int(np.searchsorted(t, cutoff, side="left"))
        if n:
            self._drop_front(n)

    def _ensure_sorted(self) -> None:
        if self._sorted:
            return
        t, v = self._concat()
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        self._rebuild(t, v)
        self._sorted = True
        self.last_t = float(t[-1])
        self.last_v = float(v[-1])

    def _rebuild(self, t: np.ndarray, v: np.ndarray) -> None:
        n = t.shape[0]
        chunk = self._retention.chunk
        self._t, self._v = [], []
        for i in range(0, max(n, 1), chunk):
            ct = np.empty(chunk, dtype=np.float64)
            cv = np.empty(chunk, dtype=np.float64)
            part = t[i : i + chunk]
            ct[: part.shape[0]] = part
            cv[: part.shape[0]] = v[i : i + chunk]
            self._t.append(ct)
            self._v.append(cv)
        self._fill = n - (len(self._t) - 1) * chunk
        self._head = 0
        self._len = n

    def _concat(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._t) == 1:
            return (
                self._t[0][self._head : self._fill].copy(),
                self._v[0][self._head : self._fill].copy(),
            )
        ts = [self._t[0][self._head :]] + self._t[1:-1] + [self._t[-1][: self._fill]]
        vs = [self._v[0][self._head :]] + self._v[1:-1] + [self._v[-1][: self._fill]]
        return np.concatenate(ts), np.concatenate(vs)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (times, values) copies of the retained samples."""
        self._ensure_sorted()
        return self._concat()

    def tail(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` samples, cheaper than ``arrays()`` for long series."""
        self._ensure_sorted()
        if n >= self._len:
            return self._concat()
        parts_t: list[np.ndarray] = []
        parts_v: list[np.ndarray] = []
        need = n
        last = len(self._t) - 1
        for i in range(last, -1, -1):
            lo = self._head if i == 0 else 0
            hi = self._fill if i == last else self._t[i].shape[0]
            take = min(need, hi - lo)
            parts_t.append(self._t[i][hi - take : hi])
            parts_v.append(self._v[i][hi - take : hi])
            need -= take
            if need == 0:
                break
        return np.concatenate(parts_t[::-1]), np.concatenate(parts_v[::-1])

    def _chunks(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The used part of each chunk, in time order (views, no copies)."""
        self._ensure_sorted()
        last = len(self._t) - 1
        out = []
        for i in range(last + 1):
            lo = self._head if i == 0 else 0
            hi = self._fill if i == last else self._t[i].shape[0]
            if hi > lo:
                out.append((self._t[i][lo:hi], self._v[i][lo:hi]))
        return out

    def value_at(self, t: float) -> tuple[float, float] | None:
        """The newest sample at or before ``t`` as (time, value), or None.

        Binary search inside the one chunk that can hold it: O(chunks + log n), no copy,
        so a query at a time costs the same on a series of 100 or 100,000 samples.
        """
        for times, values in reversed(self._chunks()):
            if times[0] <= t:
                i = int(np.searchsorted(times, t, side="right")) - 1
                return float(times[i]), float(values[i])
        return None

    def count_between(self, start: float, end: float) -> int:
        """How many samples ``window(start, end)`` would return, without copying any."""
        n = 0
        for times, _ in self._chunks():
            if times[-1] < start or times[0] > end:
                continue
            n += int(np.searchsorted(times, end, side="right")) - int(
                np.searchsorted(times, start, side="left")
            )
        return n

    def window(self, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the samples with ``start <= t <= end``; reads only the overlapping chunks."""
        parts_t: list[np.ndarray] = []
        parts_v: list[np.ndarray] = []
        for times, values in self._chunks():
            if times[-1] < start or times[0] > end:
                continue
            lo = int(np.searchsorted(times, start, side="left"))
            hi = int(np.searchsorted(times, end, side="right"))
            parts_t.append(times[lo:hi])
            parts_v.append(values[lo:hi])
        if not parts_t:
            return np.empty(0), np.empty(0)
        return np.concatenate(parts_t), np.concatenate(parts_v)

    def load_arrays(self, t: np.ndarray, v: np.ndarray) -> None:
        """Replaces the samples with (t, v) (snapshot restore); sized like appends would be."""
        order = np.argsort(t, kind="stable")
        t = np.asarray(t, dtype=np.float64)[order]
        v = np.asarray(v, dtype=np.float64)[order]
        n = int(t.shape[0])
        chunk = self._retention.chunk
        if n <= chunk:
            size = _FIRST_CHUNK
            while size < n:
                size *= 2
            size = min(chunk, max(1, min(size, max(n, self._retention.max_points))))
            ct = np.empty(size, dtype=np.float64)
            cv = np.empty(size, dtype=np.float64)
            ct[:n], cv[:n] = t, v
            self._t, self._v, self._fill = [ct], [cv], n
        else:
            self._rebuild(t, v)
        self._head = 0
        self._len = n
        self._sorted = True
        self.last_t = float(t[-1]) if n else -math.inf
        self.last_v = float(v[-1]) if n else math.nan
        self.version += 1

    @property
    def first_t(self) -> float:
        self._ensure_sorted()
        return float(self._t[0][self._head]) if self._len else math.nan

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._t) + sum(a.nbytes for a in self._v)


def downsample(
    times: np.ndarray, values: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bucket means over equal-count buckets; keeps the shape of long ranges cheap to ship."""
    n = times.shape[0]
    if max_points <= 0 or n <= max_points:
        return times, values
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)
    counts = np.diff(edges)
    t_sum = np.add.reduceat(times, edges[:-1])
    v_sum = np.add.reduceat(values, edges[:-1])
    return t_sum / counts, v_sum / counts


_REJECTED_KEYS_MAX = 100_000  # distinct refused series remembered, for the counter


class SeriesStore:
    """Every series the twin knows, keyed by (source, metric name).

    Bounded in count: at most ``max_series`` series, and ``max_per_source`` per
    source. ``admit`` refuses a new series beyond either (the caller dead-letters
    its events); existing series are never refused.
    """

    def __init__(
        self,
        retention: Retention | None = None,
        max_series: int | None = None,
        max_per_source: int | None = None,
    ) -> None:
        self.retention = retention or Retention()
        self.max_series = max_series
        self.max_per_source = max_per_source
        self._series: dict[tuple[str, str], Series] = {}
        self._per_source: dict[str, int] = {}
        self.samples_appended = 0
        # Counters (never reset): events refused because their new series was over a cap,
        # and distinct such series (distinct since the last reset, up to 100 000 at once).
        self.rejected_events = 0
        self.rejected_series = 0
        self._rejected_keys: set[tuple[str, str]] = set()
        self._full_sources: set[str] = set()

    def _create(self, source: str, name: str, unit: str) -> Series:
        s = self._series[(source, name)] = Series(source, name, self.retention, unit)
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return s

    def series(self, source: str, name: str, unit: str = "unknown") -> Series:
        """The series for (source, name), created on first use (no cap: see ``admit``)."""
        key = (source, name)
        s = self._series.get(key)
        if s is None:
            s = self._create(source, name, unit)
        return s

    def admit(self, source: str, name: str, unit: str = "unknown") -> Series | str:
        """The series for (source, name), created if the caps allow; else the reason."""
        s = self._series.get((source, name))
        if s is not None:
            return s
        reason = self.refusal(source)
        if reason is None:
            return self._create(source, name, unit)
        self.rejected_events += 1
        key = (source, name)
        if key not in self._rejected_keys and len(self._rejected_keys) < _REJECTED_KEYS_MAX:
            self._rejected_keys.add(key)
            self.rejected_series += 1
        return f"{reason}: new series {source}/{name} refused"

    def refusal(self, source: str) -> str | None:
        """Why a new series of ``source`` would be refused now, or None."""
        if self.max_series is not None and len(self._series) >= self.max_series:
            self._full_sources.add("")
            return f"series_limit: state.max_series {self.max_series} reached"
        if (
            self.max_per_source is not None
            and self._per_source.get(source, 0) >= self.max_per_source
        ):
            self._full_sources.add(source)
            return (
                f"series_limit: state.max_series_per_system {self.max_per_source} reached for "
                f"{source}"
            )
        return None

    def cap_issues(self) -> list[str]:
        """Health issues: caps that are reached and have refused series."""
        if not self._full_sources:
            return []
        out = []
        if (
            "" in self._full_sources
            and self.max_series is not None
            and len(self._series) >= self.max_series
        ):
            out.append(f"series cap reached: {len(self._series)} series = state.max_series")
        full = sorted(
            src
            for src in self._full_sources
            if src
            and self.max_per_source is not None
            and self._per_source.get(src, 0) >= self.max_per_source
        )
        if full:
            shown = ", ".join(full[:5]) + (" ..." if len(full) > 5 else "")
            out.append(
                "series cap per system reached (state.max_series_per_system "
                f"{self.max_per_source}): {shown}"
            )
        if out:
            out[-1] += (
                f"; {self.rejected_series} new series ({self.rejected_events} events) refused"
            )
        return out

    def append(self, source: str, name: str, t: float, v: float, unit: str = "unknown") -> Series:
        s = self._series.get((source, name))
        if s is None:
            s = self._create(source, name, unit)
        s.append(t, v)
        self.samples_appended += 1
        return s

    def get(self, source: str, name: str) -> Series | None:
        return self._series.get((source, name))

    def __iter__(self) -> Iterator[Series]:
        return iter(list(self._series.values()))

    def __len__(self) -> int:
        return len(self._series)

    def keys(self) -> list[tuple[str, str]]:
        return list(self._series)

    def sources(self) -> list[str]:
        return sorted({k[0] for k in self._series})

    def metrics_of(self, source: str) -> list[str]:
        return sorted(k[1] for k in self._series if k[0] == source)

    def latest(self, source: str | None = None) -> dict[str, dict[str, dict[str, object]]]:
        """{source: {metric: {"value", "timestamp", "unit"}}} of the newest samples."""
        out: dict[str, dict[str, dict[str, object]]] = {}
        for (src, name), s in self._series.items():
            if source is not None and src != source:
                continue
            n = s._len
            text = s.last_text
            if not n and text is None:
                continue
            by_name = out.get(src)
            if by_name is None:
                by_name = out[src] = {}
            by_name[name] = {
                "timestamp": s.last_t,
                "unit": s.unit,
                "value": text if text is not None and not n else s.last_v,
            }
        return out

    @property
    def sample_count(self) -> int:
        return sum(len(s) for s in self._series.values())

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._series.values())

    @property
    def newest_time(self) -> float:
        return max((s.last_t for s in self._series.values()), default=-math.inf)

    def export_series(self) -> list[dict[str, object]]:
        """Copies of every series (snapshots): source, name, unit, t, v, last_text, appended."""
        return [
            {
                "source": s.source,
                "name": s.name,
                "unit": s.unit,
                "t": t,
                "v": v,
                "last_text": s.last_text,
                "appended": s.appended,
            }
            for s in self._series.values()
            for t, v in (s.arrays(),)
        ]

    def import_series(
        self,
        source: str,
        name: str,
        unit: str,
        t: np.ndarray,
        v: np.ndarray,
        last_text: str | None = None,
        appended: int = 0,
    ) -> Series:
        """Recreates one exported series (snapshot restore); replaces an existing one."""
        if (source, name) in self._series:
            self._per_source[source] -= 1
        s = self._create(source, name, unit)
        s.load_arrays(t, v)
        if len(s) > self.retention.max_points:
            s._drop_front(len(s) - self.retention.max_points)
        s.last_text = last_text
        s.appended = max(appended, len(s))
        self.samples_appended += len(s)
        return s

    def reset(self) -> int:
        """Forgets every series; returns how many samples were dropped."""
        n = self.sample_count
        self._series.clear()
        self._per_source.clear()
        self._rejected_keys.clear()
        self._full_sources.clear()
        return n
