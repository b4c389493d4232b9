"""Natural-language questions answered from the store, without an LLM.

A question is read in four independent passes over its lower-cased text:

- **intent**: anomaly words ("anomalous", "unusual", "wrong", ...) ask for the current
  anomalies; "will / forecast / predict / expected" with "in N minutes" asks for a
  forecast; otherwise it is a value question.
- **system**: a known source whose name (alphanumerics only) occurs in the question
  (``web_cluster`` matches "web cluster", "web-cluster", "webcluster"), or
  ``parameters.system``.
- **metric**: every known metric name is scored by the share of its dot-separated words
  found in the question, after synonyms (cpu → cpu/usage/utilization, latency →
  response time, load/traffic → arrival/request rate, mem/ram → memory, ...) and a fuzzy
  match for typos; the best-scoring names win (ties are all answered).
- **time**, resolved against the newest event time in the store (never the wall clock):
  "now/current/latest" (default), "N seconds/minutes/hours/days ago", "an hour ago",
  "at 10:00[:30] [am|pm]" (that time on the newest sample's UTC day, or the day before
  if it is later than the newest sample; "yesterday" moves one day back), an ISO time,
  and windows "over/in the last N minutes" with min/max/mean aggregates and percentiles
  ("p99", "95th percentile", "median"; over the last hour when no window is given).

Anything not understood gets ``success=False`` with an explanation listing the systems
and metrics the twin knows and example phrasings.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from twin.core.events import iso, parse_time
from twin.core.store import SeriesStore
from twin.models.domain import QueryResult

UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}
_UNIT_RE = r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)"
AGO = re.compile(r"\b(\d+(?:\.\d+)?|an?|one)\s*" + _UNIT_RE + r"\s+ago\b")
WINDOW = re.compile(
    r"\b(?:over|in|during|for|within)\s+the\s+(?:last|past|previous)\s+(\d+(?:\.\d+)?)?\s*"
    + _UNIT_RE
    + r"\b"
)
AT_CLOCK = re.compile(
    r"\bat\s+(\d{1,2})(?::(\d{2}))(?::(\d{2}))?\s*(am|pm)?\b|\bat\s+(\d{1,2})\s*(am|pm)\b"
)
ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[t ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?"
)
FUTURE = re.compile(
    r"\b(?:in|next|within)\s+(?:the\s+next\s+)?(\d+(?:\.\d+)?|an?|one)\s*" + _UNIT_RE + r"\b"
)
FUTURE_WORDS = re.compile(r"\b(will|forecast|predict|predicted|expected|expect|going to|be in)\b")
ANOMALY = re.compile(
    r"\b(anomal\w*|abnormal\w*|unusual|outliers?|weird|strange|alerts?|alarms?|wrong|problems?|incidents?)\b"
)
SPELLING = (("utilisation", "utilization"), ("utilised", "utilized"), ("normalised", "normalized"))
PERCENTILE = re.compile(
    r"\b(?:p(\d{1,2}(?:\.\d+)?)|(\d{1,2})(?:st|nd|rd|th)\s+percentile|median)\b"
)
DEFAULT_PERCENTILE_WINDOW = 3600.0
AGGS = {
    "average": "mean",
    "avg": "mean",
    "mean": "mean",
    "max": "max",
    "maximum": "max",
    "peak": "max",
    "highest": "max",
    "min": "min",
    "minimum": "min",
    "lowest": "min",
}

# word -> extra words it implies (with the weight of a synonym match)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu", "usage", "utilization", "server"),
    "processor": ("cpu", "usage", "utilization"),
    "utilisation": ("utilization",),
    "util": ("utilization",),
    "busy": ("utilization",),
    "latency": ("response", "time"),
    "latencies": ("response", "time"),
    "delay": ("response", "time"),
    "rt": ("response", "time"),
    "slow": ("response", "time"),
    "load": ("arrival", "rate", "request"),
    "traffic": ("arrival", "rate", "request"),
    "requests": ("request", "rate", "arrival"),
    "rps": ("request", "rate", "arrival"),
    "arrivals": ("arrival", "rate"),
    "mem": ("memory",),
    "ram": ("memory",),
    "instances": ("servers", "active"),
    "replicas": ("servers", "active"),
    "nodes": ("servers", "active"),
    "server": ("servers",),
    "qos": ("dimmer",),
    "optional content": ("dimmer",),
    "tput": ("throughput",),
}
STOP = {
    "the",
    "a",
    "an",
    "of",
    "for",
    "on",
    "in",
    "at",
    "is",
    "was",
    "what",
    "whats",
    "how",
    "are",
    "were",
    "current",
    "currently",
    "now",
    "latest",
    "right",
    "value",
    "values",
    "me",
    "show",
    "tell",
    "please",
    "give",
    "get",
    "ago",
    "be",
    "will",
    "it",
    "its",
    "there",
    "any",
    "anything",
    "level",
    "levels",
    "much",
    "many",
    "high",
    "low",
    "over",
    "last",
    "past",
    "during",
    "and",
    "to",
    "did",
    "do",
    "does",
    "with",
}
GENERIC = {"rate", "time", "usage", "total", "count"}
EXAMPLES = (
    "e.g. 'current cpu usage of web_cluster', 'response time 10 minutes ago', 'what was the "
    "arrival rate at 10:00', 'is anything anomalous?'"
)


def _key(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text)


def _amount(tok: str) -> float:
    return 1.0 if tok in ("a", "an", "one") else float(tok)


class _Interp:
    def __init__(self) -> None:
        self.when: float | None = None
        self.when_text = "now"
        self.window: float | None = None
        self.agg = "mean"
        self.future: float | None = None
        self.window_defaulted = False


def _resolve_time(q: str, newest: float) -> tuple[_Interp, str]:
    it = _Interp()
    rest = q
    m = AGO.search(q)
    if m:
        secs = _amount(m.group(1)) * UNITS[m.group(2)]
        it.when, it.when_text = newest - secs, m.group(0)
        rest = rest.replace(m.group(0), " ")
    m = ISO_TIME.search(q)
    if m and it.when is None:
        try:
            it.when, it.when_text = parse_time(m.group(0).upper().replace(" ", "T")), m.group(0)
            rest = rest.replace(m.group(0), " ")
        except ValueError:
            pass
    m = AT_CLOCK.search(q)
    if m and it.when is None and math.isfinite(newest):
        if m.group(5):
            hh, mm, ss, ampm = int(m.group(5)), 0, 0, m.group(6)
        else:
            hh, mm, ss, ampm = (
                int(m.group(1)),
                int(m.group(2) or 0),
                int(m.group(3) or 0),
                m.group(4),
            )
        if ampm == "pm" and hh < 12:
            hh += 12
        if ampm == "am" and hh == 12:
            hh = 0
        if hh < 24 and mm < 60 and ss < 60:
            day = datetime.fromtimestamp(newest, UTC).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            t = day.timestamp() + hh * 3600 + mm * 60 + ss
            if "yesterday" in q or t > newest + 1e-6:
                t -= 86400
            it.when, it.when_text = t, m.group(0)
            rest = rest.replace(m.group(0), " ")
    elif "yesterday" in q and it.when is None:
        it.when, it.when_text = newest - 86400, "yesterday (24 h before the newest sample)"
    m = WINDOW.search(q)
    if m:
        it.window = _amount(m.group(1) or "1") * UNITS[m.group(2)]
        rest = rest.replace(m.group(0), " ")
        for w, agg in AGGS.items():
            if re.search(rf"\b{w}\b", q):
                it.agg = agg
                break
    m = PERCENTILE.search(q)
    if m:
        pct = float(m.group(1) or m.group(2) or 50)
        if 0 < pct < 100:
            it.agg = f"p{pct:g}"
            rest = rest.replace(m.group(0), " ")
            if it.window is None:
                it.window = DEFAULT_PERCENTILE_WINDOW
                it.window_defaulted = True
    if FUTURE_WORDS.search(q):
        m = FUTURE.search(q)
        if m:
            it.future = _amount(m.group(1)) * UNITS[m.group(2)]
            rest = rest.replace(m.group(0), " ")
    return it, rest


def _find_system(q: str, sources: list[str], params: dict[str, str]) -> tuple[str | None, str]:
    explicit = params.get("system") or params.get("source")
    if explicit:
        return explicit, q
    qk = _key(q)
    hits = [s for s in sources if len(_key(s)) >= 3 and _key(s) in qk]
    if not hits:
        # A source named by one of its words ("swim"), or fuzzily ("web cluser").
        words = _words(q)
        for s in sources:
            ks = _key(s)
            if any(
                difflib.SequenceMatcher(None, w, ks).ratio() >= 0.85 for w in words if len(w) >= 3
            ):
                hits.append(s)
    if not hits:
        return None, q
    best = max(hits, key=lambda s: len(_key(s)))
    rest = q
    for variant in {best.lower(), best.lower().replace("_", " "), best.lower().replace("_", "-")}:
        rest = rest.replace(variant, " ")
    return best, rest


def _score_metrics(text: str, names: list[str]) -> list[tuple[float, str]]:
    words = [w for w in _words(text.replace(".", " ").replace("_", " ")) if w not in STOP]
    if not words:
        return []
    strong: set[str] = set(words)
    weak: set[str] = set()
    for w in words:
        weak.update(SYNONYMS.get(w, ()))
    for phrase, implied in SYNONYMS.items():
        if " " in phrase and phrase in text:
            weak.update(implied)
    scored = []
    for name in names:
        parts = [p for p in name.split(".") if p]
        if not parts:
            continue
        got = 0.0
        specific = False
        for p in parts:
            if p in strong:
                weight = 1.0
            elif p in weak:
                weight = 0.8
            elif p.isdigit():
                weight = 1.0 if p in words else 0.0
            else:
                close = (
                    difflib.get_close_matches(p, list(strong), n=1, cutoff=0.8)
                    if len(p) >= 4
                    else []
                )
                weight = 0.9 if close else 0.0
            got += weight
            if weight > 0 and p not in GENERIC and not p.isdigit():
                specific = True
        score = got / len(parts)
        if specific and score >= 0.5:
            # Ties: the name that uses more of the question's words ("utilization of
            # server 2" → utilization.server.2 rather than server.utilization).
            scored.append((score + 0.01 * sum(1 for p in parts if p in strong), name))
    scored.sort(key=lambda x: (-x[0], len(x[1])))
    return scored


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.6g}"


def _known_text(store: SeriesStore, system: str | None) -> str:
    sources = store.sources()
    names = sorted({s.name for s in store if system is None or s.source == system})
    shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
    return (
        f"known systems: {', '.join(sources) or 'none yet'}; known metrics: {shown or 'none yet'}; "
        f"{EXAMPLES}"
    )


def answer(
    store: SeriesStore,
    question: str,
    params: dict[str, str],
    anomalies: Callable[[str | None], list[dict[str, Any]]],
    forecast: Callable[[str, str, float], dict[str, Any] | None] | None = None,
) -> QueryResult:
    q = " ".join(question.lower().split())
    for a, b in SPELLING:
        q = q.replace(a, b)
    newest = store.newest_time
    if not len(store) or not math.isfinite(newest):
        return QueryResult(
            False,
            None,
            0.0,
            "the twin has received no telemetry yet, so there is nothing to answer from",
        )
    system, rest = _find_system(q, store.sources(), params)
    if system is not None and system not in store.sources():
        return QueryResult(
            False, None, 0.0, f"unknown system {system!r}; {_known_text(store, None)}"
        )
    interp, rest = _resolve_time(rest, newest)

    if ANOMALY.search(q):
        found = anomalies(system)
        scope = f" in {system}" if system else ""
        if found:
            listing = "; ".join(
                f"{a['system']}/{a['metric']} (score {a['score']:.4f} since {a['since']})"
                for a in found[:20]
            )
            text = f"{len(found)} series{scope} currently anomalous: {listing}"
        else:
            text = f"nothing{scope} is anomalous right now"
        return QueryResult(
            True,
            {"answer": text, "anomalies": found, "as_of": iso(newest)},
            0.8,
            text,
            {"intent": "anomalies"},
        )

    pool = [
        s
        for s in store
        if (system is None or s.source == system) and (len(s) or s.last_text is not None)
    ]
    ranked = _score_metrics(rest, sorted({s.name for s in pool}))
    if not ranked:
        what = f"no metric{' of ' + system if system else ''} matches {question!r}"
        return QueryResult(
            False,
            None,
            0.0,
            f"I did not understand the question: {what}; {_known_text(store, system)}",
            {"intent": "unknown"},
        )
    top = ranked[0][0]
    names = [n for sc, n in ranked if sc >= top - 1e-9][:5]
    series = [s for s in pool if s.name in names]
    if system is None and len(series) > 1:
        # Same metric in several systems: answer for each (bounded).
        series = series[:10]
    interpretation = {
        "system": system,
        "metrics": names,
        "time": interp.when_text,
        "metric_score": round(top, 3),
    }

    rows: list[dict[str, Any]]
    if interp.future is not None and forecast is not None:
        rows = []
        for s in series:
            fc = forecast(s.source, s.name, interp.future)
            if fc is not None:
                rows.append({"system": s.source, "metric": s.name, "unit": s.unit} | fc)
        if rows:
            text = "; ".join(
                f"{r['system']}/{r['metric']} expected {_fmt(r['value'])} {r['unit']} at "
                f"{r['timestamp']} (95% {_fmt(r['lower'])}..{_fmt(r['upper'])}, {r['method']})"
                for r in rows
            )
            return QueryResult(
                True,
                {"answer": text, "matches": rows, "interpretation": interpretation},
                0.6,
                text,
                {"intent": "forecast"},
            )

    rows = []
    if interp.window is not None:
        end = interp.when if interp.when is not None else newest
        start = end - interp.window
        for s in series:
            _, v = s.window(start, end)
            if not v.shape[0]:
                continue
            if interp.agg.startswith("p"):
                val = float(np.percentile(v, float(interp.agg[1:])))
            else:
                val = {"mean": float(np.mean(v)), "max": float(np.max(v)), "min": float(np.min(v))}[
                    interp.agg
                ]
            rows.append(
                {
                    "system": s.source,
                    "metric": s.name,
                    "value": val,
                    "aggregate": interp.agg,
                    "samples": int(v.shape[0]),
                    "start": iso(start),
                    "end": iso(end),
                    "unit": s.unit,
                }
            )
        if not rows:
            return QueryResult(
                False,
                {"interpretation": interpretation},
                0.0,
                f"no samples of {', '.join(names)} between {iso(start)} and {iso(end)}",
            )
        text = "; ".join(
            f"{interp.agg} {r['system']}/{r['metric']} = {_fmt(r['value'])} {r['unit']} over "
            f"{r['samples']} samples ({r['start']} .. {r['end']})"
            for r in rows
        )
        if interp.window_defaulted:
            text += f" (no window given: the last {DEFAULT_PERCENTILE_WINDOW / 60:g} minutes)"
        return QueryResult(
            True,
            {"answer": text, "matches": rows, "interpretation": interpretation},
            min(1.0, top),
            text,
            {"intent": "aggregate"},
        )

    for s in series:
        if interp.when is None:
            if len(s):
                rows.append(
                    {
                        "system": s.source,
                        "metric": s.name,
                        "value": s.last_v,
                        "timestamp": iso(s.last_t),
                        "unit": s.unit,
                    }
                )
            elif s.last_text is not None:
                rows.append(
                    {
                        "system": s.source,
                        "metric": s.name,
                        "value": s.last_text,
                        "timestamp": None,
                        "unit": s.unit,
                    }
                )
        else:
            hit = s.value_at(interp.when)
            if hit is not None:
                rows.append(
                    {
                        "system": s.source,
                        "metric": s.name,
                        "value": hit[1],
                        "timestamp": iso(hit[0]),
                        "unit": s.unit,
                        "requested_time": iso(interp.when),
                    }
                )
    if not rows:
        at = iso(interp.when) if interp.when is not None else "now"
        return QueryResult(
            False,
            {"interpretation": interpretation},
            0.0,
            f"no samples of {', '.join(names)} at or before {at}",
        )

    def show(r: dict[str, Any]) -> str:
        v = r["value"]
        vs = _fmt(v) if isinstance(v, float) else str(v)
        return f"{r['system']}/{r['metric']} = {vs} {r['unit']} (sample at {r['timestamp']})"

    when = "now" if interp.when is None else f"at {iso(interp.when)} ({interp.when_text})"
    text = f"{when}: " + "; ".join(show(r) for r in rows)
    return QueryResult(
        True,
        {"answer": text, "matches": rows, "interpretation": interpretation},
        round(min(1.0, top), 3),
        text,
        {"intent": "value"},
    )
