"""Prediction intervals recalibrated from their measured coverage.

A model's interval says "the actual falls in [lower, upper] with probability L". The
ledger measures whether it did. This module turns those measurements into a
correction applied to *later* intervals (split-conformal style, out of sample by
construction): for every scored point it keeps the standardised error

    |z| = |actual - mean| / (half-width on the error's side) * z_L

(the error in units of the model's own standard deviation, so intervals of any level
and asymmetric intervals pool), and the scale for a new interval of level L is

    scale = q_L(|z|) / z_L

where ``q_L`` is the empirical ceil((n+1)L)/n-quantile of the n recent ``|z|`` (the
split-conformal finite-sample rule). Applying it
(``half *= scale`` on each side) makes the coverage of the next intervals match L if
the errors stay as they were. Errors grow with the lead time in ways a model can get
wrong, so the errors are kept per lead bucket (in native sampling steps: 1, 2-4, 5-16,
17-64, 65+) and per key. Keys go from specific to pooled, ``(system, kind, metric)`` →
``(system, kind)`` → ``(kind,)``; the first with enough evidence
(``min_points`` errors from ``min_predictions`` predictions) answers, else the scale
is 1 (the model's interval as is).

Bounded: at most ``window`` errors per (key, bucket) (recent ones; old ones fall out,
so the scale follows the series), at most ``per_prediction`` errors per prediction
and bucket (a 360-point forecast must not outweigh six 60-point ones), and at most
``max_keys`` keys (least recently observed dropped first).
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

LEAD_EDGES = (1.5, 4.5, 16.5, 64.5)  # native steps: buckets 1 | 2-4 | 5-16 | 17-64 | 65+
N_BUCKETS = len(LEAD_EDGES) + 1
Z_CAP = 50.0  # a zero-width interval missed by any amount counts as this many sds
SCALE_MIN, SCALE_MAX = 0.2, 10.0

Key = tuple[str, ...]


@functools.lru_cache(maxsize=64)
def z_of(level: float) -> float:
    """Two-sided normal quantile of a central interval of probability ``level``."""
    return NormalDist().inv_cdf(0.5 + min(0.999, max(0.01, level)) / 2.0)


def lead_buckets(lead_steps: np.ndarray) -> np.ndarray:
    """Bucket index (0..N_BUCKETS-1) of each lead time given in native sampling steps."""
    return np.searchsorted(np.asarray(LEAD_EDGES), lead_steps, side="right").astype(np.int8)


def standardised_errors(
    actual: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float
) -> np.ndarray:
    """|z| of each point against its (raw) interval; the side of the error picks the half-width."""
    e = actual - mean
    half = np.where(e >= 0, upper - mean, mean - lower)
    ae = np.abs(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        z: np.ndarray = ae * z_of(level) / half
    z[~(half > 0)] = Z_CAP  # a zero-width (or NaN) interval: missed by any amount
    z[ae == 0] = 0.0
    z[~(z <= Z_CAP)] = Z_CAP
    return z


@dataclass(slots=True)
class _Errors:
    buckets: list[deque[float]]
    predictions: int = 0
    version: int = 0
    cache: dict[tuple[int, float], float] = field(default_factory=dict)


class IntervalCalibrator:
    def __init__(
        self,
        window: int = 256,
        min_points: int = 30,
        min_predictions: int = 3,
        per_prediction: int = 8,
        max_keys: int = 4096,
    ) -> None:
        self.window = window
        self.min_points = min_points
        self.min_predictions = min_predictions
        self.per_prediction = per_prediction
        self.max_keys = max_keys
        self._keys: OrderedDict[Key, _Errors] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def _slot(self, key: Key) -> _Errors:
        e = self._keys.get(key)
        if e is None:
            e = self._keys[key] = _Errors([deque(maxlen=self.window) for _ in range(N_BUCKETS)])
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return e

    def _cap(self, group: np.ndarray) -> np.ndarray:
        """Indices keeping at most ``per_prediction`` evenly spread points per group."""
        order = np.argsort(group, kind="stable")
        g = group[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        sizes = np.diff(np.r_[starts, g.shape[0]])
        rank = np.arange(g.shape[0]) - np.repeat(starts, sizes)
        stride = np.repeat(-(-sizes // self.per_prediction), sizes)
        picked: np.ndarray = order[rank % stride == 0]
        return picked

    def _add(self, key: Key, buckets: np.ndarray, z: np.ndarray) -> None:
        slot = self._slot(key)
        counts = np.bincount(buckets, minlength=N_BUCKETS)
        if np.count_nonzero(counts) == 1:  # all in one bucket: no masking
            slot.buckets[int(buckets[0])].extend(z.tolist())
        else:
            for b in np.flatnonzero(counts).tolist():
                slot.buckets[b].extend(z[buckets == b].tolist())
        slot.predictions += 1
        slot.version += 1
        slot.cache.clear()

    def observe(self, keys: Sequence[Key], buckets: np.ndarray, z_abs: np.ndarray) -> None:
        """One scored prediction's standardised errors (with their lead buckets) under every key."""
        if not z_abs.shape[0]:
            return
        keep = self._cap(buckets.astype(np.intp))
        for key in keys:
            self._add(key, buckets[keep], z_abs[keep])

    def observe_tracks(
        self,
        system: str,
        kind: str,
        metrics: Sequence[str],
        track: np.ndarray,
        buckets: np.ndarray,
        z_abs: np.ndarray,
    ) -> None:
        """Like ``observe`` for several metrics at once: each metric's errors go under
        (system, kind, metric); all of them under (system, kind) and (kind,)."""
        if not z_abs.shape[0]:
            return
        keep = self._cap(track.astype(np.intp) * N_BUCKETS + buckets)
        t, b, z = track[keep], buckets[keep], z_abs[keep]
        if len(metrics) == 1:
            self._add((system, kind, metrics[0]), b, z)
        else:
            for i in np.flatnonzero(np.bincount(t, minlength=len(metrics))).tolist():
                sel = t == i
                self._add((system, kind, metrics[i]), b[sel], z[sel])
        self._add((system, kind), b, z)
        self._add((kind,), b, z)

    def _scale_of(self, slot: _Errors, bucket: int | None, level: float) -> float | None:
        if slot.predictions < self.min_predictions:
            return None
        ck = (-1 if bucket is None else bucket, level)
        hit = slot.cache.get(ck)
        if hit is not None:
            return hit
        if bucket is None:
            zs = [z for d in slot.buckets for z in d]
        else:
            zs = list(slot.buckets[bucket])
        if len(zs) < self.min_points:
            return None
        n = len(zs)
        # Split-conformal finite-sample correction: the ceil((n+1)L)/n empirical quantile.
        q_level = min(0.999, max(0.01, math.ceil((n + 1) * level) / n))
        q = float(np.quantile(np.asarray(zs), q_level, method="higher"))
        s = min(SCALE_MAX, max(SCALE_MIN, q / z_of(level)))
        slot.cache[ck] = s
        return s

    def scale(self, keys: Sequence[Key], bucket: int, level: float) -> tuple[float, int]:
        """(scale, how specific: 0 = none learned, 1 = most pooled key .. len(keys) = first key).

        Per key, the bucket's own errors answer when there are enough; else that key's
        errors over all leads; else the next, more pooled, key.
        """
        for i, key in enumerate(keys):
            slot = self._keys.get(key)
            if slot is None:
                continue
            s = self._scale_of(slot, bucket, level)
            if s is None:
                s = self._scale_of(slot, None, level)
            if s is not None:
                return s, len(keys) - i
        return 1.0, 0

    def evidence(self, key: Key) -> tuple[int, int]:
        """(predictions, errors) held for ``key``."""
        slot = self._keys.get(key)
        if slot is None:
            return 0, 0
        return slot.predictions, sum(len(d) for d in slot.buckets)

    # -- snapshots ---------------------------------------------------------------
    def export(self) -> list[dict[str, object]]:
        return [
            {"key": list(k), "predictions": e.predictions, "buckets": [list(d) for d in e.buckets]}
            for k, e in self._keys.items()
        ]

    def load(self, rows: list[dict[str, object]]) -> None:
        self._keys.clear()
        for r in rows:
            key = tuple(str(x) for x in r["key"])  # type: ignore[attr-defined]
            slot = self._slot(key)
            for b, zs in enumerate(list(r.get("buckets") or [])[:N_BUCKETS]):  # type: ignore[call-overload]
                slot.buckets[b].extend(float(z) for z in zs if math.isfinite(float(z)))
            slot.predictions = int(r.get("predictions", 0))  # type: ignore[call-overload]

    def reset(self) -> None:
        self._keys.clear()
