"""Durability of the twin's facts: JetStream ingestion, snapshots, replay.

The stream is the log, the in-memory store is a projection of it, and a snapshot is a
checkpoint of that projection tagged with the stream sequence it includes. Start =
newest valid snapshot + replay of the stream after its sequence (``manager``); ingest =
durable pull consumer, ack after apply, de-duplication by stream sequence
(``jetstream``); checkpoint = atomic, checksummed, versioned files (``snapshot``).

Consistency model (several replicas):

- Every replica consumes the whole stream through its own durable consumer (named after
  the pod, or ``nats.jetstream.durable``) and applies it in stream order, so each
  replica's state is a prefix of the same log: the state after applying sequences
  1..S (minus what retention removed before the replica first read it).
- Replicas are independent and eventually consistent: at any instant two replicas may
  have applied different prefixes. Each reports its prefix as ``applied_sequence`` in
  ``get_metrics``, in health and in every ``QueryResponse.metadata``; two answers with
  the same ``applied_sequence`` were computed from the same facts.
- Per replica, reads are monotonic (``applied_sequence`` never goes backwards) except
  across ``Manage replay`` and ``reset_state``, which rebuild the prefix on purpose.
- Each event is applied exactly once per replica: a redelivery at or below the applied
  sequence is acknowledged and skipped; a restart resumes right after the snapshot's
  sequence (a fresh process never trusts the consumer's old ack floor, because the
  facts it acknowledged died with the old process).
- A read-your-writes client publishes with JetStream (the PubAck carries the stream
  sequence S) and waits for ``applied_sequence >= S`` in the response metadata.
- Model-derived state (detectors, fitted forecasters) is rebuilt from the facts after a
  restore; it is not part of the snapshot.
"""

from twin.durability.manager import Durability
from twin.durability.snapshot import FORMAT_VERSION, Snapshot, SnapshotError, SnapshotStore
from twin.ingest.jetstream import (
    JetStreamIngestor,
    SequenceTracker,
    StartPosition,
    durable_name,
)

__all__ = [
    "FORMAT_VERSION",
    "Durability",
    "JetStreamIngestor",
    "SequenceTracker",
    "Snapshot",
    "SnapshotError",
    "SnapshotStore",
    "StartPosition",
    "durable_name",
]
