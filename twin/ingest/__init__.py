"""NATS ingestion: subscriptions, decode, dead-letter, backpressure, batching."""
