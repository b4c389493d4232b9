"""How far behind the stream a JetStream replica is, in seconds (``nats.jetstream.max_lag_sec``).

A replica that falls behind answers from an old prefix of the log; past ``max_lag_sec`` it
reports NOT_SERVING so the Service routes queries to replicas that are current, and it
turns SERVING again once it caught up. Lag is the age of the oldest message this replica
has not applied yet, estimated without reading the stream:

- the consumer has nothing pending (``num_pending + num_ack_pending == 0``, the server's
  own count, which respects the consumer's subject filter): lag 0;
- otherwise ``now - max(last_applied, backlog_since)``: ``last_applied`` is the stream
  timestamp of the newest message applied (messages are applied in stream order, so every
  pending one is younger), and ``backlog_since`` is the last time the consumer was seen with
  nothing pending (the backlog began after it). The second term keeps one message that
  arrives after a long quiet spell from looking hours old.

Stream timestamps come from the NATS server's clock, ``now`` from the pod's; with NTP the
difference is far below any sensible threshold.
"""

from __future__ import annotations

__all__ = ["ReplayLag"]


class ReplayLag:
    """Pure bookkeeping: feed it applied messages and polls, read ``seconds``/``lagging``."""

    def __init__(self, max_lag_sec: float = 0.0) -> None:
        self.max_lag_sec = float(max_lag_sec)
        self.last_applied: float | None = None  # stream time of the newest applied message
        self.backlog_since: float | None = None  # last poll with nothing pending
        self.pending = 0
        self.seconds = 0.0
        self.lagging = False

    def applied(self, stream_time: float) -> None:
        if self.last_applied is None or stream_time > self.last_applied:
            self.last_applied = stream_time

    def poll(self, pending: int, now: float) -> bool:
        """One observation of the consumer; returns True when ``lagging`` flipped."""
        self.pending = max(0, int(pending))
        if self.pending == 0:
            self.backlog_since = now
            self.seconds = 0.0
        else:
            marks = [m for m in (self.last_applied, self.backlog_since) if m is not None]
            self.seconds = max(0.0, now - max(marks)) if marks else 0.0
        was = self.lagging
        self.lagging = self.max_lag_sec > 0 and self.seconds > self.max_lag_sec
        return was != self.lagging
